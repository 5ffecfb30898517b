"""The typed configurations of datasets and proxy training, without torch.

``DataSpec`` (which images) and ``ProxyConfig`` (the proxy-training recipe) are declared here, in a
module that imports nothing heavy, so the study-file schema (``nas.study``) can reuse their
fields -- type, allowed range and doc, kept in each field's ``metadata`` by ``setting`` -- instead
of declaring them a second time. ``evaluators.data`` and ``evaluators.proxy`` re-export them.

Field metadata keys: ``doc`` (one line), ``min`` / ``max`` (inclusive bounds), ``gt`` (exclusive
lower bound), ``choices`` (allowed values), ``what`` (how to describe a value in an error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from operators.errors import NasError

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")


def setting(default: Any, doc: str, **rules: Any) -> Any:
    """A dataclass field with its ``default`` and, in ``metadata``, its one-line ``doc`` and
    validation ``rules`` (``min``, ``max``, ``gt``, ``choices``, ``what``)."""
    return field(default=default, metadata={"doc": doc, **rules})


@dataclass(frozen=True)
class DataSpec:
    """Which images a study trains its proxies on.

    Args:
        dataset: one of ``DATASETS``.
        root: directory of the data (CIFAR, ImageFolder); unused for ``digits``.
        img_size: side the images are resized to (the study's resolution).
        subset: at most this many images in *each* split (class-balanced); None: all.
        val_fraction: share of the labelled images held out for validation.
        val_size: exact number of validation images (overrides ``val_fraction``).
        seed: seeds the split and the subset.
        in_chans: image channels the model takes (grey images are replicated; 1 keeps grey,
            RGB sources are converted to grey when 1).
        download: CIFAR only: try torchvision's download when the files are missing.
    """

    dataset: str = setting("digits", "the images to train on", choices=DATASETS)
    root: str | None = setting(None, "directory of the data (CIFAR, ImageFolder); unused for digits",
                               what="a directory path")
    img_size: int = setting(32, "side the images are resized to, in pixels", min=4)
    subset: int | None = setting(None, "at most this many images per split, class-balanced (None: all)", min=2)
    val_fraction: float = 0.2
    val_size: int | None = None
    seed: int = 0
    in_chans: int = 3
    download: bool = True

    def __post_init__(self) -> None:

        if self.dataset not in DATASETS:
            raise NasError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.img_size < 4:
            raise NasError(f"data img_size must be at least 4, got {self.img_size}")
        if self.subset is not None and self.subset < 2:
            raise NasError(f"data subset must be at least 2 images per split (or None for all), got {self.subset}")
        if not 0.0 < self.val_fraction < 1.0:
            raise NasError(f"data val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.val_size is not None and self.val_size < 1:
            raise NasError(f"data val_size must be positive (or None to use val_fraction), got {self.val_size}")
        if self.in_chans < 1:
            raise NasError(f"data in_chans must be positive, got {self.in_chans}")
        if self.dataset != "digits" and not self.root:
            raise NasError(f"dataset {self.dataset!r} needs a root directory (data.root)")


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy-training recipe.

    Args:
        epochs: training epochs (passes over the training split, last partial batch dropped).
        steps: if set, the budget in optimiser steps instead of ``epochs``; validation still
            runs at every epoch boundary and at the end.
        batch_size / eval_batch_size: images per training / validation step.
        lr, weight_decay, betas: AdamW. ``warmup_frac`` of the steps warm up linearly, then
            cosine decay to ``min_lr_ratio * lr``.
        label_smoothing: cross-entropy label smoothing.
        grad_clip: max global grad norm (None: off).
        crop_pad: random crop after zero padding by this many pixels (None: the dataset's
            default, ``img_size // 8``, ``img_size // 16`` for digits; 0: off).
        flip: horizontal flips (None: the dataset's default, off for digits).
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"bf16"`` or ``"fp32"``.
        channels_last: ``"auto"`` (on CUDA), True or False.
        time_limit_s: wall-clock budget of one run (None: unlimited); ``status="timeout"``.
        check_every: also read the NaN/inf flag every this many steps (one host sync; 0: at
            epoch ends only).
        seed: seeds batch order, augmentation and dropout (the model's init is the caller's).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        count_flops: count the model's forward MACs for ``train_flops`` when not given.
    """

    epochs: int = setting(5, "training epochs (passes over the training split)", min=1)
    steps: int | None = None
    batch_size: int = setting(128, "images per training step", min=1)
    eval_batch_size: int = 512
    lr: float = setting(2e-3, "AdamW peak learning rate", gt=0.0)
    weight_decay: float = setting(0.05, "AdamW weight decay (not on norms, biases, position tables)", min=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_frac: float = 0.1
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0
    crop_pad: int | None = None
    flip: bool | None = None
    precision: str = "auto"
    channels_last: bool | str = "auto"
    time_limit_s: float | None = setting(None, "wall-clock budget of one run, in seconds (None: unlimited)",
                                         gt=0.0)
    check_every: int = 25
    seed: int = 0
    device: str = setting("auto", "where training runs: auto (CUDA when available), cpu, cuda, cuda:1, ...")
    count_flops: bool = True

    def __post_init__(self) -> None:

        if self.epochs < 1:
            raise NasError(f"proxy epochs must be at least 1, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise NasError(f"proxy steps must be positive (or None to use epochs), got {self.steps}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise NasError("proxy batch_size and eval_batch_size must be positive")
        if self.lr <= 0 or self.weight_decay < 0:
            raise NasError(f"proxy lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if not 0 <= self.warmup_frac < 1:
            raise NasError(f"proxy warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if not 0 <= self.label_smoothing < 1:
            raise NasError(f"proxy label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise NasError(f"proxy precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.channels_last not in ("auto", True, False):
            raise NasError(f"proxy channels_last must be 'auto', true or false, got {self.channels_last!r}")
        if self.crop_pad is not None and self.crop_pad < 0:
            raise NasError(f"proxy crop_pad must be >= 0, got {self.crop_pad}")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise NasError(f"proxy time_limit_s must be positive, got {self.time_limit_s}")
