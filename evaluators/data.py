"""Datasets for proxy training: scikit-learn's digits (the default), CIFAR-10/100, ImageFolder.

Every source ends as the same thing: ``uint8`` image tensors ``(N, H, W, C)`` (channels-last,
already resized to the study's ``img_size``) plus ``int64`` labels, split into a seeded,
class-balanced train/validation pair, with the training split's per-channel mean/std. The
proxy trainer moves them to the device once and batches them by indexing; nothing here needs
a ``DataLoader``.

Sources:

- ``digits`` (default, no download): scikit-learn's bundled 1,797 real 8x8 handwritten digits
  (UCI optical digits, Alpaydin & Kaynak 1998), bilinearly resized to ``img_size`` and
  replicated to ``in_chans`` channels. Horizontal flips are not label-preserving here.
- ``cifar10`` / ``cifar100`` through torchvision from a local ``root`` that holds
  ``cifar-10-batches-py/`` (or ``cifar-100-python/``) or the ``.tar.gz``; offline, a failed
  download ends in one line that says which files to put where.
- ``imagefolder``: torchvision's ``ImageFolder`` layout (``root/<class>/<image>``), any image
  format PIL reads; ``root/train`` + ``root/val`` subfolders are used as given splits.

The validation split is carved from the *training* images (CIFAR's test batch is never used
for search, so a search cannot overfit the test set).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from evaluators.config import DATASETS, DataSpec  # noqa: F401 - declared without torch, re-exported here
from operators.errors import NasError, first_line

# Whether a horizontal flip keeps the label (digits: a mirrored 2 is not a 2).
FLIP_OK = {"digits": False, "cifar10": True, "cifar100": True, "imagefolder": True}
# Random-crop padding as a share of the image side (CIFAR's classic 4 px at 32; digits are
# 8x8 originals filling the frame, so half that: one original pixel at most).
CROP_PAD_FRAC = {"digits": 1 / 16, "cifar10": 1 / 8, "cifar100": 1 / 8, "imagefolder": 1 / 8}


@dataclass
class LoadedData:
    """Train/val tensors of one ``DataSpec``.

    ``*_x`` are ``uint8`` ``(N, H, W, C)``; ``*_y`` ``int64`` ``(N,)``. ``mean``/``std`` are the
    training split's per-channel statistics on the ``[0, 1]`` scale. Unpacks as
    ``train, val, num_classes, (mean, std) = load_dataset(spec)`` with ``TensorDataset`` splits.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    spec: DataSpec
    class_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def flip_ok(self) -> bool:
        """Whether horizontal flips preserve labels (the proxy trainer's default)."""
        return FLIP_OK[self.spec.dataset]

    @property
    def crop_pad(self) -> int:
        """Default random-crop padding in pixels at this ``img_size``."""
        return int(self.train_x.shape[1] * CROP_PAD_FRAC[self.spec.dataset])

    @property
    def train(self) -> TensorDataset:
        return TensorDataset(self.train_x, self.train_y)

    @property
    def val(self) -> TensorDataset:
        return TensorDataset(self.val_x, self.val_y)

    def __iter__(self):
        return iter((self.train, self.val, self.num_classes, (self.mean, self.std)))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``uint8 (B, H, W, C)`` -> normalised ``float32 (B, C, H, W)`` (channels_last memory)."""
        scale, shift = norm_affine(self.mean, self.std, x.device)
        return x.permute(0, 3, 1, 2).float() * scale + shift  # (B, C, H, W)

    def batch(self, n: int, split: str = "train", device: str | torch.device = "cpu",
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A seeded, class-balanced batch of ``n`` normalised images and their labels."""
        x, y = (self.train_x, self.train_y) if split == "train" else (self.val_x, self.val_y)
        idx = balanced_take(y.numpy(), min(n, len(y)), np.random.default_rng(seed))
        idx_t = torch.from_numpy(idx)
        return self.normalize(x[idx_t].to(device)), y[idx_t].to(device)


def norm_affine(mean: tuple[float, ...], std: tuple[float, ...],
                device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of shape ``(1, C, 1, 1)`` so that ``u8 * scale + shift`` normalises."""
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return 1.0 / (255.0 * s), -m / s


def balanced_take(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``n`` indices class-round-robin (each class shuffled): class counts differ by at most
    one unless a class runs out. Returned sorted."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    order = rng.permutation(len(labels))
    classes, inv = np.unique(labels[order], return_inverse=True)
    rank = np.zeros(len(order), dtype=np.int64)
    for c in range(len(classes)):  # rank of each image within its (shuffled) class
        members = np.flatnonzero(inv == c)
        rank[members] = np.arange(len(members))
    class_order = rng.permutation(len(classes))
    key = rank * len(classes) + class_order[inv]
    return np.sort(order[np.argsort(key, kind="stable")[:n]])


def split_indices(labels: np.ndarray, spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, class-balanced ``(train, val)`` index arrays, each capped at ``spec.subset``."""
    rng = np.random.default_rng(spec.seed)
    n = len(labels)
    n_val = spec.val_size if spec.val_size is not None else max(1, round(spec.val_fraction * n))
    if n_val >= n:
        raise NasError(f"validation size {n_val} leaves no training images out of {n}; lower val_size/val_fraction")
    val = balanced_take(labels, n_val, rng)
    train = np.setdiff1d(np.arange(n), val, assume_unique=True)
    return _cap(labels, train, spec.subset, rng), _cap(labels, val, spec.subset, rng)


def _cap(labels: np.ndarray, idx: np.ndarray, subset: int | None, rng: np.random.Generator) -> np.ndarray:
    if subset is None or subset >= len(idx):
        return idx
    return idx[balanced_take(labels[idx], subset, rng)]


def load_dataset(spec: DataSpec) -> LoadedData:
    """Load, resize, split and subset ``spec``'s images; see the module docstring."""
    if spec.dataset == "digits":
        x, y, names = _digits()
        train_idx, val_idx = split_indices(y, spec)
        train_x, val_x = _resize(x[train_idx], spec), _resize(x[val_idx], spec)
        train_y, val_y = y[train_idx], y[val_idx]
    elif spec.dataset in ("cifar10", "cifar100"):
        x, y, names = _cifar(spec)
        train_idx, val_idx = split_indices(y, spec)
        train_x, val_x = _resize(x[train_idx], spec), _resize(x[val_idx], spec)
        train_y, val_y = y[train_idx], y[val_idx]
    else:
        (train_x, train_y), (val_x, val_y), names = _imagefolder(spec)
    num_classes = len(names)
    mean, std = _stats(train_x)
    return LoadedData(
        train_x=train_x, train_y=torch.as_tensor(train_y, dtype=torch.int64),
        val_x=val_x, val_y=torch.as_tensor(val_y, dtype=torch.int64),
        num_classes=num_classes, mean=mean, std=std, spec=spec, class_names=tuple(names),
    )


# --- sources -------------------------------------------------------------------------------
def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (N, 8, 8, 1), 17 grey levels
    return x, d.target.astype(np.int64), [str(i) for i in range(10)]


def _root(spec: DataSpec) -> Path:
    root = Path(os.path.expanduser(spec.root or ""))
    if not root.is_dir():
        raise NasError(f"dataset root {str(root)!r} does not exist (data.root for dataset {spec.dataset!r})")
    return root


def _cifar(spec: DataSpec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if spec.dataset == "cifar10" else CIFAR100
    root = _root(spec)
    if root.name == base.base_folder:  # the user pointed at the batches folder itself
        root = root.parent

    # torchvision's loader with its file list; md5 checks are skipped (a missing or truncated
    # file still fails, when it is opened) so re-packed or test-sized copies load too.
    cls = type(f"Local{base.__name__}", (base,), {
        "train_list": [[name, None] for name, _ in base.train_list],
        "test_list": [[name, None] for name, _ in base.test_list],
        "meta": {**base.meta, "md5": None},
    })
    files = [n for n, _ in base.train_list + base.test_list] + [base.meta["filename"]]
    where = (f"put {base.filename} (from {base.url}) or its extracted {base.base_folder}/ "
             f"({', '.join(files)}) in {root}")
    probe = cls.__new__(cls)
    probe.root = str(root)
    if not probe._check_integrity():
        if not spec.download:
            raise NasError(f"{spec.dataset} not found: {where}")
        try:
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                probe.download()
        except Exception as e:  # offline: URLError, socket errors, a bad archive ...
            raise NasError(f"{spec.dataset} not found and the download failed ({first_line(e)[:80]}): {where}") from None
    try:
        ds = cls(str(root), train=True, download=False)
    except Exception as e:
        raise NasError(f"{spec.dataset} under {root} could not be read ({type(e).__name__}: {str(e)[:80]}); "
                       f"{where}") from None
    return np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64), list(ds.classes)


def _imagefolder(spec: DataSpec):
    from torchvision.datasets import ImageFolder

    root = _root(spec)
    given = (root / "train").is_dir() and (root / "val").is_dir()

    def folder(path: Path) -> ImageFolder:
        try:
            return ImageFolder(str(path))
        except (FileNotFoundError, RuntimeError) as e:
            raise NasError(f"ImageFolder {str(path)!r}: {str(e).splitlines()[0]} "
                           f"(expected <root>/<class>/<image>)") from None

    if given:
        tr, va = folder(root / "train"), folder(root / "val")
        if tr.classes != va.classes:
            raise NasError(f"ImageFolder {root}: train/ and val/ have different class folders")
        rng = np.random.default_rng(spec.seed)
        ty, vy = np.asarray(tr.targets), np.asarray(va.targets)
        ti = _cap(ty, np.arange(len(ty)), spec.subset, rng)
        vi = _cap(vy, np.arange(len(vy)), spec.subset, rng)
        splits = [(tr.samples, ti), (va.samples, vi)]
        classes = tr.classes
    else:
        ds = folder(root)
        ti, vi = split_indices(np.asarray(ds.targets), spec)
        splits = [(ds.samples, ti), (ds.samples, vi)]
        classes = ds.classes
    out = []
    for samples, idx in splits:
        x = torch.stack([_read_image(samples[i][0], spec) for i in idx])  # (N, H, W, C) uint8
        y = np.asarray([samples[i][1] for i in idx], dtype=np.int64)
        out.append((x, y))
    return out[0], out[1], classes


def _read_image(path: str, spec: DataSpec) -> torch.Tensor:
    """Resize the shorter side to ``img_size``, centre-crop, convert to ``in_chans``."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if spec.in_chans == 1 else "RGB")
        w, h = im.size
        s = spec.img_size / min(w, h)
        im = im.resize((max(spec.img_size, round(w * s)), max(spec.img_size, round(h * s))), Image.BILINEAR)
        w, h = im.size
        left, top = (w - spec.img_size) // 2, (h - spec.img_size) // 2
        im = im.crop((left, top, left + spec.img_size, top + spec.img_size))
        a = np.asarray(im, dtype=np.uint8).reshape(spec.img_size, spec.img_size, -1)
    return _to_chans(torch.from_numpy(a.copy()), spec.in_chans)


# --- tensor helpers ------------------------------------------------------------------------
def _to_chans(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """``(..., C)`` uint8 -> ``(..., in_chans)``: grey is replicated, RGB -> grey by luma."""
    c = x.shape[-1]
    if c == in_chans:
        return x
    if c == 1:
        return x.expand(*x.shape[:-1], in_chans).contiguous()
    if in_chans == 1:
        w = torch.tensor([0.299, 0.587, 0.114])
        return (x.float() @ w).round().clamp(0, 255).to(torch.uint8)[..., None]
    raise NasError(f"cannot turn {c}-channel images into in_chans={in_chans}; use 1 or {c}")


def _resize(x: np.ndarray, spec: DataSpec) -> torch.Tensor:
    """``(N, h, w, c)`` uint8 -> ``(N, img_size, img_size, in_chans)`` uint8 (bilinear)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.shape[1] != spec.img_size or t.shape[2] != spec.img_size:
        f = t.permute(0, 3, 1, 2).float()  # (N, c, h, w)
        f = F.interpolate(f, size=(spec.img_size, spec.img_size), mode="bilinear", align_corners=False,
                          antialias=t.shape[1] > spec.img_size)
        t = f.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return _to_chans(t, spec.in_chans)


def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    f = x.reshape(-1, x.shape[-1]).double() / 255.0
    std = f.std(0).clamp_min(1e-3)
    return tuple(float(v) for v in f.mean(0)), tuple(float(v) for v in std)
