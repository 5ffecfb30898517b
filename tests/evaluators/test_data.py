from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluators.data import DataSpec, LoadedData, balanced_take, load_dataset, split_indices
from nas.errors import NasError


# --- generated data ------------------------------------------------------------------------
def _cifar_image(i: int) -> np.ndarray:
    """A 32x32 RGB image whose pixels encode its index: R = i, G = row, B = column."""
    img = np.zeros((3, 32, 32), dtype=np.uint8)
    img[0] = i % 256
    img[1] = np.arange(32)[:, None] * 8
    img[2] = np.arange(32)[None, :] * 8
    return img.reshape(-1)


def _write_cifar10(root: Path, per_batch: int = 20, classes: int = 10) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    i = 0
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        data, labels = [], []
        for _ in range(per_batch):
            data.append(_cifar_image(i))
            labels.append(i % classes)
            i += 1
        with open(d / name, "wb") as f:
            pickle.dump({"data": np.stack(data), "labels": labels, "batch_label": name}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{c}" for c in range(classes)], "num_vis": 3072}, f)
    return root


def _write_cifar100(root: Path, n: int = 60) -> Path:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    for name, count in (("train", n), ("test", 10)):
        data = np.stack([_cifar_image(i) for i in range(count)])
        with open(d / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": [i % 100 for i in range(count)],
                         "coarse_labels": [i % 20 for i in range(count)]}, f)
    with open(d / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{c}" for c in range(100)],
                     "coarse_label_names": [f"c{c}" for c in range(20)]}, f)
    return root


def _write_imagefolder(root: Path, classes=("cat", "dog", "emu"), per_class: int = 6) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            w, h = 20 + 3 * k, 12 + k  # mixed sizes and aspect ratios
            a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            a[..., 0] = 80 * c  # class-coded red channel
            Image.fromarray(a).save(root / name / f"{k}.png")
    return root


# --- digits --------------------------------------------------------------------------------
def test_digits_default_loads_all_images_balanced():
    data = load_dataset(DataSpec(img_size=16))
    assert data.num_classes == 10
    assert len(data.train_y) + len(data.val_y) == 1797
    assert data.train_x.shape[1:] == (16, 16, 3) and data.train_x.dtype == torch.uint8
    assert len(data.val_y) == round(0.2 * 1797)
    counts = np.bincount(data.val_y.numpy(), minlength=10)
    assert counts.max() - counts.min() <= 1
    assert not data.flip_ok  # mirrored digits change meaning
    assert data.train_x.float().std() > 10  # real images, not blanks
    m, s = data.mean, data.std
    assert len(m) == len(s) == 3 and 0 < m[0] < 1 and 0 < s[0] < 1


def test_digits_subset_in_chans_and_seed():
    a = load_dataset(DataSpec(img_size=24, subset=50, in_chans=1, seed=3))
    b = load_dataset(DataSpec(img_size=24, subset=50, in_chans=1, seed=3))
    c = load_dataset(DataSpec(img_size=24, subset=50, in_chans=1, seed=4))
    assert a.train_x.shape == (50, 24, 24, 1) and a.val_x.shape == (50, 24, 24, 1)
    assert np.bincount(a.train_y.numpy()).tolist() == [5] * 10
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert not torch.equal(a.train_x, c.train_x)


def test_unpacks_and_normalises():
    data = load_dataset(DataSpec(img_size=16, subset=40))
    train, val, k, (mean, std) = data
    assert len(train) == 40 and len(val) == 40 and k == 10 and len(mean) == 3
    x, y = data.batch(30, device="cpu")
    assert x.shape == (30, 3, 16, 16) and y.shape == (30,)
    assert abs(float(x.mean())) < 0.5 and 0.5 < float(x.std()) < 1.5


def test_split_is_disjoint_balanced_and_capped():
    labels = np.repeat(np.arange(4), [30, 20, 10, 40])
    train, val = split_indices(labels, DataSpec(val_fraction=0.25, seed=1))
    assert not set(train) & set(val) and len(train) + len(val) == 100 and len(val) == 25
    assert np.bincount(labels[val]).tolist() in ([7, 6, 6, 6], [6, 7, 6, 6], [6, 6, 7, 6], [6, 6, 6, 7])
    train, val = split_indices(labels, DataSpec(val_size=8, subset=12, seed=1))
    assert len(val) == 8 and len(train) == 12 and np.bincount(labels[train]).tolist() == [3, 3, 3, 3]
    # a class that runs out is filled up from the others
    idx = balanced_take(np.array([0] * 2 + [1] * 20), 10, np.random.default_rng(0))
    assert len(idx) == 10 and (np.array([0] * 2 + [1] * 20)[idx] == 0).sum() == 2


def test_bad_spec_is_one_line_error():
    with pytest.raises(NasError, match="unknown dataset 'mnist'"):
        DataSpec("mnist")
    with pytest.raises(NasError, match="needs a root"):
        DataSpec("cifar10")
    with pytest.raises(NasError, match="val_fraction"):
        DataSpec(val_fraction=1.5)


# --- CIFAR ---------------------------------------------------------------------------------
def test_cifar10_from_local_pickles(tmp_path):
    root = _write_cifar10(tmp_path)
    data = load_dataset(DataSpec("cifar10", root=str(root), img_size=32, val_size=20))
    assert data.num_classes == 10 and data.class_names[3] == "class3"
    assert len(data.train_y) == 80 and len(data.val_y) == 20  # 5 x 20 training images; test_batch unused
    assert data.flip_ok
    # pixels arrive in HWC order and labels stay attached to their images
    x, y = data.train_x, data.train_y
    assert x.shape[1:] == (32, 32, 3)
    assert torch.equal(x[:, 5, 7, 1], torch.full((len(y),), 40, dtype=torch.uint8))  # G = row * 8
    assert torch.equal(x[:, 5, 7, 2], torch.full((len(y),), 56, dtype=torch.uint8))  # B = col * 8
    assert torch.equal(x[:, 0, 0, 0].long() % 10, y)  # R = image index, label = index % 10
    assert (x[:, 0, 0, 0] < 100).all()  # no test_batch image (indices 100..119)
    # the batches folder itself as root, resized
    small = load_dataset(DataSpec("cifar10", root=str(root / "cifar-10-batches-py"), img_size=16, subset=30))
    assert small.train_x.shape == (30, 16, 16, 3)


def test_cifar100_from_local_pickles(tmp_path):
    root = _write_cifar100(tmp_path)
    data = load_dataset(DataSpec("cifar100", root=str(root), img_size=32, val_size=10))
    assert data.num_classes == 100 and len(data.train_y) == 50


def test_cifar_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(NasError) as e:
        load_dataset(DataSpec("cifar10", root=str(tmp_path), download=False))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg
    assert "cifar-10-python.tar.gz" in msg and "data_batch_1" in msg and "batches.meta" in msg
    with pytest.raises(NasError, match="does not exist"):
        load_dataset(DataSpec("cifar100", root=str(tmp_path / "nope")))


def test_cifar_corrupt_file_is_one_line_error(tmp_path):
    root = _write_cifar10(tmp_path)
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(NasError, match="could not be read") as e:
        load_dataset(DataSpec("cifar10", root=str(root), download=False))
    assert "\n" not in str(e.value)


# --- ImageFolder ---------------------------------------------------------------------------
def test_imagefolder_pngs(tmp_path):
    root = _write_imagefolder(tmp_path / "imgs")
    data = load_dataset(DataSpec("imagefolder", root=str(root), img_size=16, val_size=6))
    assert data.class_names == ("cat", "dog", "emu") and data.num_classes == 3
    assert data.train_x.shape == (12, 16, 16, 3) and data.val_x.shape == (6, 16, 16, 3)
    assert np.bincount(data.val_y.numpy()).tolist() == [2, 2, 2]
    # the class-coded red channel survived resize and crop
    assert torch.equal(data.train_x[:, 8, 8, 0].long() // 80, data.train_y)
    grey = load_dataset(DataSpec("imagefolder", root=str(root), img_size=8, val_size=3, in_chans=1))
    assert grey.train_x.shape[1:] == (8, 8, 1)


def test_imagefolder_with_given_train_val(tmp_path):
    _write_imagefolder(tmp_path / "train", per_class=4)
    _write_imagefolder(tmp_path / "val", per_class=2)
    data = load_dataset(DataSpec("imagefolder", root=str(tmp_path), img_size=8))
    assert len(data.train_y) == 12 and len(data.val_y) == 6
    with pytest.raises(NasError, match="ImageFolder"):
        load_dataset(DataSpec("imagefolder", root=str(tmp_path / "train" / "cat"), img_size=8))


def test_loaded_data_is_plain_tensors():
    data = load_dataset(DataSpec(img_size=8, subset=20))
    assert isinstance(data, LoadedData)
    assert data.train_y.dtype == torch.int64 and data.train_x.is_contiguous()
