"""The decoded-image cache (evaluators.data_cache) and the image-file sources behind it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluators import data_cache
from evaluators.data import DataSpec, load_dataset
from nas.errors import NasError


def _folder(root: Path, classes=("cat", "dog", "emu"), per_class: int = 5, fmt: str = "png") -> Path:
    """Tiny class-coded images (red channel = 80 x class), mixed sizes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            a = rng.integers(0, 256, size=(12 + k, 18 + 2 * k, 3), dtype=np.uint8)
            a[..., 0] = 80 * c
            Image.fromarray(a).save(root / name / f"{k}.{fmt}")
    return root


@pytest.fixture
def count_decodes(monkeypatch):
    """Count the images decoded in this process (the serial path: small jobs)."""
    calls = []
    real = data_cache.decode_image

    def counting(src, *a, **k):
        calls.append(src)
        return real(src, *a, **k)

    monkeypatch.setattr(data_cache, "decode_image", counting)
    return calls


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))


# --- reuse and invalidation ------------------------------------------------------------------
def test_cache_reused_unchanged_and_rebuilt_on_touch_modify_add(tmp_path, count_decodes):
    root = _folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    spec = DataSpec("imagefolder", root=str(root), img_size=8, val_size=3)
    plain = load_dataset(spec)  # in memory, full decodes (PNG: draft changes nothing)
    count_decodes.clear()
    a = load_dataset(spec, cache_dir=cache)
    assert len(count_decodes) == 15 and len(_entries(cache)) == 1
    assert torch.equal(a.train_x, plain.train_x) and torch.equal(a.val_y, plain.val_y)
    assert a.mean == pytest.approx(plain.mean) and a.std == pytest.approx(plain.std)
    (entry,) = _entries(cache)
    if Path("/proc/self/maps").exists():  # the tensors are a map of the cache file, not a copy
        assert str(entry / "images.npy") in Path("/proc/self/maps").read_text()

    count_decodes.clear()
    b = load_dataset(spec, cache_dir=cache)  # unchanged: mapped, not decoded
    assert count_decodes == [] and torch.equal(b.train_x, a.train_x) and b.mean == a.mean

    f = root / "dog" / "2.png"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touch: same bytes, new mtime
    load_dataset(spec, cache_dir=cache)
    assert len(count_decodes) == 15
    (entry2,) = _entries(cache)  # rebuilt; the stale entry of this spec is gone
    assert entry2 != entry

    from PIL import Image

    count_decodes.clear()
    Image.fromarray(np.full((10, 10, 3), 255, np.uint8)).save(f)  # modified content
    c = load_dataset(spec, cache_dir=cache)
    assert len(count_decodes) == 15
    assert not (torch.equal(c.train_x, a.train_x) and torch.equal(c.val_x, a.val_x))

    count_decodes.clear()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "emu" / "new.png")  # added
    d = load_dataset(spec, cache_dir=cache)
    assert len(count_decodes) == 16 and len(d.train_y) + len(d.val_y) == 16
    assert len(_entries(cache)) == 1

    count_decodes.clear()
    load_dataset(DataSpec("imagefolder", root=str(root), img_size=12, val_size=3), cache_dir=cache)
    assert len(count_decodes) == 16 and len(_entries(cache)) == 2  # another spec: its own entry


def test_subset_decodes_only_the_chosen_images(tmp_path, count_decodes):
    root = _folder(tmp_path / "imgs", per_class=10)
    data = load_dataset(DataSpec("imagefolder", root=str(root), img_size=8, subset=4, val_size=6),
                        cache_dir=tmp_path / "cache")
    assert len(data.train_y) == 4 and len(data.val_y) == 4
    assert len(count_decodes) == 8  # of 30 files
    decoded = {Path(p).parent.name for p in count_decodes}
    assert decoded == {"cat", "dog", "emu"}  # class-balanced choice


def test_pool_decodes_like_one_process_and_second_waiter_uses_the_finished_entry(tmp_path, monkeypatch):
    root = _folder(tmp_path / "imgs", per_class=6, fmt="jpg")
    spec = DataSpec("imagefolder", root=str(root), img_size=8, val_size=3)
    monkeypatch.setattr(data_cache, "CHUNK", 4)  # 18 images: 5 chunks over 2 processes
    pooled = load_dataset(spec, cache_dir=tmp_path / "c1", workers=2)
    serial = load_dataset(spec, workers=1, draft=True)
    assert torch.equal(pooled.train_x, serial.train_x) and torch.equal(pooled.val_x, serial.val_x)

    # two loaders starting together: the second waits on the lock, then maps the first's entry
    cache = tmp_path / "c2"
    builds = []
    real = data_cache.decode_into

    def slow(*a, **k):
        builds.append(1)
        time.sleep(0.3)
        return real(*a, **k)

    monkeypatch.setattr(data_cache, "decode_into", slow)
    out = [None, None]
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, load_dataset(spec, cache_dir=cache,
                                                                                   workers=1)))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and torch.equal(out[0].train_x, out[1].train_x)
    assert not [p for p in cache.iterdir() if ".tmp" in p.name]  # nothing half-written left


# --- bad files -----------------------------------------------------------------------------
def test_corrupt_and_truncated_files_are_skipped_and_named_once(tmp_path):
    root = _folder(tmp_path / "imgs", per_class=4, fmt="jpg")
    (root / "cat" / "garbage.jpg").write_bytes(b"not an image at all")
    whole = (root / "dog" / "0.jpg").read_bytes()
    (root / "dog" / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # truncated JPEG
    spec = DataSpec("imagefolder", root=str(root), img_size=8, val_size=3)
    for kw in ({}, {"cache_dir": tmp_path / "cache"}):
        with pytest.warns(UserWarning, match=r"skipped 2 of 14 images") as rec:
            data = load_dataset(spec, **kw)
        (w,) = [r for r in rec if "skipped" in str(r.message)]
        msg = str(w.message)
        assert "garbage.jpg" in msg and "cut.jpg" in msg and "\n" not in msg
        assert len(data.train_y) + len(data.val_y) == 12
        assert data.train_x.float().std() > 10
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reused entry: decoded once, warned once
        again = load_dataset(spec, cache_dir=tmp_path / "cache")
    assert len(again.train_y) + len(again.val_y) == 12


def test_empty_class_and_empty_folder_are_one_line(tmp_path):
    root = _folder(tmp_path / "imgs", per_class=2)
    (root / "fox").mkdir()
    with pytest.raises(NasError, match="fox") as e:
        load_dataset(DataSpec("imagefolder", root=str(root), img_size=8, val_size=2), cache_dir=tmp_path / "c")
    assert "\n" not in str(e.value)
    (tmp_path / "none").mkdir()
    with pytest.raises(NasError, match="class folder") as e:
        load_dataset(DataSpec("imagefolder", root=str(tmp_path / "none"), img_size=8))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "c").exists()  # nothing was started


def test_all_files_unreadable_is_one_line(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for k in range(2):
            (tmp_path / "imgs" / c / f"{k}.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="skipped 4 of 4"), pytest.raises(NasError, match="no decodable image"):
        load_dataset(DataSpec("imagefolder", root=str(tmp_path / "imgs"), img_size=8, val_size=2))


# --- Hugging Face datasets ------------------------------------------------------------------
def test_huggingface_save_to_disk_source(tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    rng = np.random.default_rng(1)
    imgs, labels = [], []
    for k in range(12):
        c = k % 3
        a = rng.integers(0, 256, size=(10 + k, 14, 3), dtype=np.uint8)
        a[..., 0] = 80 * c
        imgs.append(Image.fromarray(a))
        labels.append(c)
    feats = datasets.Features({"picture": datasets.Image(), "kind": datasets.ClassLabel(names=["x", "y", "z"])})
    ds = datasets.Dataset.from_dict({"picture": imgs, "kind": labels}, features=feats)
    ds.save_to_disk(str(tmp_path / "hf"))

    spec = DataSpec("huggingface", root=str(tmp_path / "hf"), img_size=8, val_size=3,
                    image_column="picture", label_column="kind")
    data = load_dataset(spec, cache_dir=tmp_path / "cache")
    assert data.class_names == ("x", "y", "z") and data.num_classes == 3
    assert data.train_x.shape == (9, 8, 8, 3) and len(data.val_y) == 3
    red = data.train_x[..., 0].float().mean(dim=(1, 2))
    assert torch.allclose(red, 80.0 * data.train_y.float(), atol=2)  # label matches its image
    assert torch.equal(load_dataset(spec).train_x, data.train_x)  # PNG bytes: cached == in memory

    with pytest.raises(NasError, match="no column 'image'.*picture"):
        load_dataset(DataSpec("huggingface", root=str(tmp_path / "hf"), img_size=8))

    # a DatasetDict with its own validation split; string labels become sorted classes
    plain = datasets.Dataset.from_dict({"image": imgs, "label": [["b", "a", "c"][c] for c in labels]},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "label": datasets.Value("string")}))
    datasets.DatasetDict({"train": plain.select(range(9)), "validation": plain.select(range(9, 12))}) \
        .save_to_disk(str(tmp_path / "dd"))
    dd = load_dataset(DataSpec("huggingface", root=str(tmp_path / "dd"), img_size=8))
    assert dd.class_names == ("a", "b", "c") and len(dd.train_y) == 9 and len(dd.val_y) == 3
    red = dd.val_x[..., 0].float().mean(dim=(1, 2))
    assert torch.allclose(red, 80.0 * torch.tensor([[1, 0, 2][c] for c in dd.val_y.tolist()]).float(), atol=2)


# --- the study file -------------------------------------------------------------------------
def test_study_workers_share_a_cache_beside_the_sqlite_store(tmp_path):
    from nas.objective import TrialEvaluator
    from nas.study import data_cache_dir, load_study

    root = _folder(tmp_path / "imgs", per_class=4)
    text = (Path(__file__).parents[2] / "studies" / "quickstart.toml").read_text()
    text = text.replace('dataset = "digits"', f'dataset = "imagefolder"\nroot = "{root}"\ndecode_workers = 1')
    study_file = tmp_path / "s.toml"
    study_file.write_text(text.replace('name = "quickstart"', 'name = "cache_study"\n'
                                       f'storage = "sqlite:///{tmp_path}/db/cache_study.db"'))
    study = load_study(study_file)
    assert study.data.decode_workers == 1 and study.data.image_column == "image"
    assert data_cache_dir(study) == tmp_path / "db" / "data_cache"
    data = TrialEvaluator(study).data()
    assert data.num_classes == 3 and len(_entries(tmp_path / "db" / "data_cache")) == 1
    again = TrialEvaluator(study).data()  # another worker (or a resume): the same entry, mapped
    assert torch.equal(again.train_x, data.train_x) and len(_entries(tmp_path / "db" / "data_cache")) == 1

    study_file.write_text(text.replace('decode_workers = 1', 'cache_dir = "shared"'))
    assert data_cache_dir(load_study(study_file)) == tmp_path / "shared"


def test_unusable_cache_dir_is_one_line(tmp_path):
    root = _folder(tmp_path / "imgs", per_class=2)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(NasError, match="data cache .*file.*writable") as e:
        load_dataset(DataSpec("imagefolder", root=str(root), img_size=8, val_size=2),
                     cache_dir=tmp_path / "file" / "cache")
    assert "\n" not in str(e.value)
