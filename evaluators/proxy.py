"""Proxy training: a short, fixed-budget training run whose validation accuracy ranks candidates.

Recipe (DeiT-style, shortened; Touvron et al. 2021): AdamW without weight decay on norms,
biases and position tables, linear warm-up then cosine decay per step, label smoothing,
gradient clipping, random-crop-with-padding and (where labels allow it) horizontal-flip
augmentation. bf16 autocast on CUDA, fp32 on CPU.

Speed: the whole dataset sits on the device as ``uint8 (N, H, W, C)``; each step is one
``randperm`` slice, one gather that crops (and flips) the whole batch at once, and one affine
normalisation; there is no ``DataLoader`` and no host sync per step. The running loss and the
first non-finite step are accumulated on the device and read once per epoch (or every
``check_every`` steps).

Contract with the caller (the search):

- ``on_epoch(epoch, val_acc, val_loss)`` runs after each epoch's validation. Returning
  ``True`` or raising ``StopTraining`` ends the run with ``status="stopped"`` (a pruned trial);
  any other exception (e.g. ``optuna.TrialPruned``) propagates after memory is released.
- ``ProxyResult.status`` is ``"ok"``, ``"stopped"``, ``"diverged"``, ``"oom"`` (out of memory;
  the process can go on), ``"timeout"`` or ``"paused"`` (see below); ``reason`` is one line. A
  run is ``"diverged"`` as soon as a training loss, a weight or buffer (checked after every
  epoch, so the last steps count too), a validation logit or the validation loss is non-finite;
  the epoch that diverged reports nothing to ``on_epoch`` and adds no accuracy (the argmax of
  NaN logits is one class's share, not a result).
- Pause and resume (multi-fidelity rungs): ``fit(..., pause_at=e)`` stops after epoch ``e``'s
  validation and ``on_epoch`` call (a callback's stop wins; so does a timeout) with
  ``status="paused"``, ``reason="paused after epoch e"`` and ``result.state``: everything the run
  needs to go on, as CPU tensors, dicts, lists and numbers (``torch.save`` it; ``torch.load(...,
  weights_only=True)`` reads it back). ``fit(fresh_model, data, resume=state)`` on a freshly built
  model of the same architecture, with the same ``ProxyConfig`` and data, continues from epoch
  ``e + 1``; on one device type the per-epoch results and the final weights equal those of an
  uninterrupted run bit for bit (on the CPU; CUDA kernels may not be deterministic), and the
  result covers the whole run (its lists, steps, images and times; ``time_limit_s`` counts the
  whole run's wall time too). ``pause_at`` at or past the epoch budget just finishes the run.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evaluators.config import ProxyConfig  # declared without torch, re-exported here
from evaluators.data import LoadedData, norm_affine
from evaluators.isolation import kept_state
from operators.errors import NasError

STATUSES = ("ok", "stopped", "diverged", "oom", "timeout", "paused")
STATE_VERSION = 1  # of ``ProxyResult.state``


class Diverged(NasError):
    """A model whose weights or outputs are non-finite was asked for a score (zero-cost proxies)."""


def nonfinite_tensor(model: nn.Module) -> str | None:
    """``"nan in <name>"`` / ``"inf in <name>"`` for the first parameter or floating buffer of
    ``model`` holding a non-finite value, or None when all are finite (one host sync)."""
    named = [(n, t) for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_floating_point()]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(t).all() for _, t in named])
    if bool(finite.all()):
        return None
    name, t = named[int((~finite).nonzero()[0])]
    return f"{'nan' if bool(torch.isnan(t).any()) else 'inf'} in {name}"


class StopTraining(Exception):
    """Raise from ``on_epoch`` to end training early (``status="stopped"``, reason = the message)."""


@dataclass
class ProxyResult:
    """What one proxy-training run produced.

    ``accuracy``/``loss`` are the last validation's top-1 (in [0, 1]) and loss (None when no
    epoch finished); ``train_time_s`` is the time spent in training steps (``images_per_s`` is
    measured on it), ``eval_time_s`` in validation, ``wall_time_s`` everything. ``train_flops``
    counts multiply-accumulates (DESIGN's "FLOPs") as 3 x forward MACs x images trained
    (forward + backward); None when the model could not be counted. ``state`` is set only when
    ``status == "paused"``: pass it as ``ProxyTrainer.fit(..., resume=state)``; it holds tensors
    and is left out of ``to_dict()``.
    """

    status: str
    reason: str | None
    accuracy: float | None
    loss: float | None
    accuracy_per_epoch: list[float] = field(default_factory=list)
    loss_per_epoch: list[float] = field(default_factory=list)
    train_loss_per_epoch: list[float] = field(default_factory=list)
    epochs: int = 0
    epoch_budget: int = 0
    steps: int = 0
    images: int = 0
    wall_time_s: float = 0.0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    images_per_s: float = 0.0
    flops_per_image: int | None = None
    train_flops: int | None = None
    device: str = "cpu"
    precision: str = "fp32"
    state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def best_accuracy(self) -> float | None:
        return max(self.accuracy_per_epoch) if self.accuracy_per_epoch else None

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data, without ``state``."""
        d = asdict(replace(self, state=None))
        del d["state"]
        return d


OnEpoch = Callable[[int, float, float], "bool | None"]


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NasError(f"proxy device {name!r} asked for but CUDA is not available; use 'cpu' or 'auto'")
    return dev


def forward_macs(model: nn.Module, in_chans: int, img_size: int) -> int | None:
    """Forward multiply-accumulates of one image (``evaluators.count_flops``; fvcore as a
    fallback while that is missing). None if the model cannot be traced."""
    try:
        try:
            from evaluators.flops import count_flops
        except ImportError:
            count_flops = None
        if count_flops is not None:
            return int(count_flops(model, input_size=(in_chans, img_size, img_size)))
        from fvcore.nn import FlopCountAnalysis

        p = next(model.parameters())
        x = torch.zeros(1, in_chans, img_size, img_size, device=p.device, dtype=p.dtype)
        with kept_state(model):
            model.eval()
            fca = FlopCountAnalysis(model, x)
            fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(fca.total())
    except Exception:  # a model fvcore cannot trace still trains; train_flops is then None
        return None


def cosine_lr(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the base lr at ``step``: linear warm-up then cosine to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on 1-D tensors (norms, biases, LayerScale) or ``no_weight_decay()``."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip or name.split(".")[0] in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _adamw(model: nn.Module, cfg: ProxyConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the fused (single-kernel) update where this torch supports it on ``device``."""
    try:
        return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)


def _cpu_copy(obj: Any) -> Any:
    """``obj`` with every tensor replaced by a detached CPU copy; dicts (their type and a
    state_dict's ``_metadata`` kept), lists and tuples are walked."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = type(obj)((k, _cpu_copy(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


_STATE_KEYS = ("version", "fingerprint", "device_type", "epoch", "step", "model", "optimizer", "scheduler",
               "gen", "rng", "history", "flops_per_image")


def _check_resume(state: Any, fingerprint: dict[str, Any], device: torch.device, model: nn.Module) -> None:
    """Raise ``NasError`` unless ``state`` is a paused state of this run's recipe, data, device
    type and architecture."""
    if not isinstance(state, dict) or (missing := [k for k in _STATE_KEYS if k not in state]):
        what = f"missing {', '.join(missing)}" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise NasError(f"resume is not a paused ProxyResult.state ({what}); pass result.state of a paused run")
    if state["version"] != STATE_VERSION:
        raise NasError(f"resume state has version {state['version']}, this trainer reads version {STATE_VERSION}; "
                       "train the candidate again from scratch")
    diff = [f"{k} {state['fingerprint'].get(k)!r} -> {v!r}" for k, v in fingerprint.items()
            if state["fingerprint"].get(k) != v]
    if diff:
        raise NasError(f"resume state was made by another run ({', '.join(diff)}); resume with the paused "
                       "run's ProxyConfig and data")
    if state["device_type"] != device.type:
        raise NasError(f"resume state was made on {state['device_type']}, this run is on {device.type}; "
                       f"resume on a {state['device_type']} device (the random streams differ)")
    own, saved = model.state_dict(), state["model"]
    bad = sorted(k for k in own.keys() | saved.keys()
                 if k not in own or k not in saved or own[k].shape != saved[k].shape)
    if bad:
        raise NasError(f"resume state does not fit this model ({len(bad)} tensors differ, e.g. {bad[0]!r}); "
                       "pass a freshly built model of the paused run's architecture")


class DeviceBatches:
    """The dataset on the device as ``uint8``, batched by indexing, augmented per batch.

    ``crop(idx, gen)`` returns a normalised ``float32 (B, C, H, W)`` batch in channels_last
    memory: one gather from the zero-padded images does the random crop and the flip for the
    whole batch.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean, std, device: torch.device, pad: int,
                 flip: bool) -> None:
        self.n, self.h, self.w, self.c = x.shape
        self.pad, self.flip, self.device = pad, flip, device
        x = x.to(device)
        self.x = F.pad(x, (0, 0, pad, pad, pad, pad)) if pad else x  # (N, H+2p, W+2p, C) uint8
        self.y = y.to(device)
        self.scale, self.shift = norm_affine(mean, std, device)
        self.rows = torch.arange(self.h, device=device)
        self.cols = torch.arange(self.w, device=device)

    def augmented(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b = idx.shape[0]
        if self.pad or self.flip:
            dy = torch.randint(0, 2 * self.pad + 1, (b, 1), device=self.device, generator=gen)
            dx = torch.randint(0, 2 * self.pad + 1, (b, 1), device=self.device, generator=gen)
            cols = self.cols.expand(b, -1)
            if self.flip:
                mirror = torch.rand(b, 1, device=self.device, generator=gen) < 0.5
                cols = torch.where(mirror, self.w - 1 - cols, cols)
            rows = self.rows + dy  # (B, H)
            cols = cols + dx  # (B, W)
            xb = self.x[idx[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        else:
            xb = self.x[idx]
        return self._norm(xb), self.y[idx]

    def plain(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.pad
        xb = self.x[start:stop, p:p + self.h, p:p + self.w] if p else self.x[start:stop]
        return self._norm(xb), self.y[start:stop]

    def _norm(self, xb: torch.Tensor) -> torch.Tensor:
        return xb.permute(0, 3, 1, 2).float() * self.scale + self.shift  # (B, C, H, W), channels_last


class ProxyTrainer:
    """Trains a built model for ``config``'s budget on ``LoadedData``; see the module docstring.

    Example::

        data = load_dataset(DataSpec("digits", img_size=32))
        model = build_model(spec, num_classes=data.num_classes, img_size=32)
        result = ProxyTrainer(ProxyConfig(epochs=5)).fit(model, data, on_epoch=report)
    """

    def __init__(self, config: ProxyConfig | None = None) -> None:
        self.config = config or ProxyConfig()

    def fit(self, model: nn.Module, data: LoadedData, on_epoch: OnEpoch | None = None,
            flops_per_image: int | None = None, *, resume: dict[str, Any] | None = None,
            pause_at: int | None = None) -> ProxyResult:
        """Train ``model`` (moved to the config's device, trained in place) on ``data``.

        Args:
            on_epoch: ``(epoch, val_acc, val_loss)`` after each epoch's validation (epochs are
                1-based, accuracy in [0, 1]); see the module docstring.
            flops_per_image: forward MACs of one image (counted when None and ``count_flops``).
            resume: ``result.state`` of a paused run; ``model`` is then a freshly built model of
                that run's architecture and training goes on from the epoch after the pause.
            pause_at: pause after this 1-based epoch (``status="paused"``, ``result.state``
                set) unless the run ends there or earlier.

        Raises:
            ValueError: ``pause_at`` < 1, or not after the epoch ``resume`` paused at.
            NasError: ``resume`` is not a paused state of this config, data, device type and
                architecture; an unavailable device.
        """
        cfg = self.config
        device = _resolve_device(cfg.device)
        t_start = time.perf_counter()
        n_train = len(data.train_y)
        bs = min(cfg.batch_size, n_train)
        steps_per_epoch = max(1, n_train // bs)
        total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
        epoch_budget = math.ceil(total_steps / steps_per_epoch)
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
        channels_last = cfg.channels_last is True or (cfg.channels_last == "auto" and device.type == "cuda")
        img = data.train_x.shape[1]
        in_chans = data.train_x.shape[-1]
        pad = data.crop_pad if cfg.crop_pad is None else cfg.crop_pad
        flip = data.flip_ok if cfg.flip is None else cfg.flip
        fingerprint = {"total_steps": total_steps, "batch_size": bs, "n_train": n_train, "n_val": len(data.val_y),
                       "lr": cfg.lr, "seed": cfg.seed, "weight_decay": cfg.weight_decay, "betas": list(cfg.betas),
                       "warmup_frac": cfg.warmup_frac, "min_lr_ratio": cfg.min_lr_ratio,
                       "label_smoothing": cfg.label_smoothing, "grad_clip": cfg.grad_clip, "crop_pad": int(pad),
                       "flip": bool(flip), "bf16": bf16}
        if pause_at is not None and pause_at < 1:
            raise ValueError(f"pause_at must be a 1-based epoch (>= 1), got {pause_at}")
        if resume is not None:
            _check_resume(resume, fingerprint, device, model)
            if pause_at is not None and pause_at <= resume["epoch"]:
                raise ValueError(f"pause_at {pause_at} is not after epoch {resume['epoch']}, where the resumed "
                                 "run paused; pass a later epoch or None")
            if flops_per_image is None:
                flops_per_image = resume["flops_per_image"]
            t_start -= resume["history"]["wall_time_s"]  # wall time and time_limit_s cover the whole run
        result = ProxyResult(status="ok", reason=None, accuracy=None, loss=None, epoch_budget=epoch_budget,
                             device=str(device), precision="bf16" if bf16 else "fp32")
        if flops_per_image is None and cfg.count_flops:
            flops_per_image = forward_macs(model, in_chans, img)
        result.flops_per_image = flops_per_image

        oom_at: str | None = None
        opt = sched = train = val = xb = yb = logits = loss = None
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                if resume is None:
                    torch.manual_seed(cfg.seed)
                model.to(device)
                if channels_last:
                    model.to(memory_format=torch.channels_last)
                train = DeviceBatches(data.train_x, data.train_y, data.mean, data.std, device, pad, flip)
                val = DeviceBatches(data.val_x, data.val_y, data.mean, data.std, device, 0, False)
                gen = torch.Generator(device=device).manual_seed(cfg.seed)
                opt = _adamw(model, cfg, device)
                warmup = round(cfg.warmup_frac * total_steps)
                sched = torch.optim.lr_scheduler.LambdaLR(
                    opt, lambda s: cosine_lr(s, total_steps, warmup, cfg.min_lr_ratio))
                autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
                t_train = 0.0
                step = 0
                epoch = 0
                if resume is not None:
                    step, epoch, t_train = self._restore(resume, model, opt, sched, gen, device, result)
                while step < total_steps:
                    epoch += 1
                    t_ep = time.perf_counter()
                    model.train()
                    loss_sum = torch.zeros((), device=device)
                    bad_step = torch.full((), -1, dtype=torch.int64, device=device)
                    bad_val = torch.zeros((), device=device)
                    perm = torch.randperm(n_train, device=device, generator=gen)
                    n_steps = min(steps_per_epoch, total_steps - step)
                    stop = None
                    done = 0
                    for i in range(n_steps):
                        idx = perm[i * bs:(i + 1) * bs]
                        try:
                            xb, yb = train.augmented(idx, gen)  # (B, C, H, W)
                            with autocast:
                                logits = model(xb)
                                loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
                            opt.zero_grad(set_to_none=True)
                            loss.backward()
                            if cfg.grad_clip:
                                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                            opt.step()
                        except torch.OutOfMemoryError:
                            oom_at = f"oom at batch {step} (epoch {epoch}, batch size {bs})"
                            break
                        sched.step()
                        step += 1
                        done += 1
                        ld = loss.detach()
                        loss_sum += ld
                        first = (bad_step < 0) & ~torch.isfinite(ld)
                        bad_step = torch.where(first, step - 1, bad_step)
                        bad_val = torch.where(first, ld, bad_val)
                        if cfg.check_every and step % cfg.check_every == 0 and int(bad_step) >= 0:
                            stop = "diverged"
                            break
                        if cfg.time_limit_s is not None and time.perf_counter() - t_start > cfg.time_limit_s:
                            stop = "timeout"
                            break
                    if oom_at is not None:
                        break
                    mean_loss = float(loss_sum) / max(1, done)  # one sync per epoch
                    t_train += time.perf_counter() - t_ep
                    result.steps = step
                    result.images = step * bs
                    if int(bad_step) >= 0:
                        kind = "nan" if math.isnan(float(bad_val)) else "inf"
                        s = int(bad_step)
                        result.status = "diverged"
                        result.reason = (f"loss became {kind} at epoch {s // steps_per_epoch + 1} "
                                         f"step {s % steps_per_epoch + 1}")
                        break
                    if stop == "timeout":
                        result.status = "timeout"
                        result.reason = (f"time limit {cfg.time_limit_s:g}s reached after "
                                         f"{result.epochs} of {epoch_budget} epochs")
                        break
                    if (bad := nonfinite_tensor(model)) is not None:  # e.g. the epoch's last step
                        result.status, result.reason = "diverged", f"weights became {bad} after epoch {epoch}"
                        break
                    t_eval = time.perf_counter()
                    try:
                        acc, vloss, bad_logits = self._evaluate(model, val, cfg.eval_batch_size, autocast)
                    except torch.OutOfMemoryError:
                        oom_at = f"oom at eval batch (epoch {epoch}, eval batch size {cfg.eval_batch_size})"
                        break
                    result.eval_time_s += time.perf_counter() - t_eval
                    if bad_logits or not math.isfinite(vloss):
                        what = f"{bad_logits} non-finite validation logits" if bad_logits else \
                            f"validation loss {vloss}"
                        result.status, result.reason = "diverged", f"{what} at epoch {epoch}"
                        break
                    result.epochs = epoch
                    result.accuracy, result.loss = acc, vloss
                    result.accuracy_per_epoch.append(acc)
                    result.loss_per_epoch.append(vloss)
                    result.train_loss_per_epoch.append(mean_loss)
                    if on_epoch is not None:
                        try:
                            if on_epoch(epoch, acc, vloss) is True:
                                result.status, result.reason = "stopped", f"stopped by the callback after epoch {epoch}"
                                break
                        except StopTraining as e:
                            result.status = "stopped"
                            result.reason = str(e) or f"stopped by the callback after epoch {epoch}"
                            break
                    if cfg.time_limit_s is not None and time.perf_counter() - t_start > cfg.time_limit_s \
                            and step < total_steps:
                        result.status = "timeout"
                        result.reason = (f"time limit {cfg.time_limit_s:g}s reached after "
                                         f"{result.epochs} of {epoch_budget} epochs")
                        break
                    if epoch == pause_at and step < total_steps:
                        result.status, result.reason = "paused", f"paused after epoch {epoch}"
                        result.state = {
                            "version": STATE_VERSION, "fingerprint": fingerprint, "device_type": device.type,
                            "epoch": epoch, "step": step, "model": _cpu_copy(model.state_dict()),
                            "optimizer": _cpu_copy(opt.state_dict()), "scheduler": _cpu_copy(sched.state_dict()),
                            "gen": gen.get_state().clone(),
                            "rng": {"cpu": torch.get_rng_state(),
                                    **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})},
                            "history": {"accuracy_per_epoch": list(result.accuracy_per_epoch),
                                        "loss_per_epoch": list(result.loss_per_epoch),
                                        "train_loss_per_epoch": list(result.train_loss_per_epoch),
                                        "train_time_s": t_train, "eval_time_s": result.eval_time_s,
                                        "wall_time_s": time.perf_counter() - t_start},
                            "flops_per_image": flops_per_image,
                        }
                        break
                result.train_time_s = t_train
        except torch.OutOfMemoryError:  # moving the model or the data to the device
            oom_at = oom_at or "oom before training (model or data to the device)"
        finally:
            # Drop every reference to activations, grads and optimiser state before returning,
            # so an OOM (or an exception from the callback) leaves the device usable.
            opt = sched = train = val = xb = yb = logits = loss = None  # noqa: F841
            model.zero_grad(set_to_none=True)
            if oom_at is not None or device.type == "cuda":
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        if oom_at is not None:
            result.status, result.reason = "oom", oom_at
        result.wall_time_s = time.perf_counter() - t_start
        result.images = result.steps * bs
        result.images_per_s = result.images / result.train_time_s if result.train_time_s > 0 else 0.0
        if flops_per_image is not None:
            result.train_flops = 3 * flops_per_image * result.images
        return result

    @staticmethod
    def _restore(state: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer, sched, gen: torch.Generator,
                 device: torch.device, result: ProxyResult) -> tuple[int, int, float]:
        """Load a checked paused ``state`` into the run's objects, the global RNG (inside the
        run's ``fork_rng``) and ``result``; returns ``(step, epoch, train_time_s)``."""
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"]["cpu"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        h = state["history"]
        result.accuracy_per_epoch = list(h["accuracy_per_epoch"])
        result.loss_per_epoch = list(h["loss_per_epoch"])
        result.train_loss_per_epoch = list(h["train_loss_per_epoch"])
        result.accuracy = result.accuracy_per_epoch[-1] if result.accuracy_per_epoch else None
        result.loss = result.loss_per_epoch[-1] if result.loss_per_epoch else None
        result.eval_time_s = h["eval_time_s"]
        result.epochs, result.steps = state["epoch"], state["step"]
        return state["step"], state["epoch"], h["train_time_s"]

    @staticmethod
    @torch.inference_mode()
    def _evaluate(model: nn.Module, val: DeviceBatches, batch: int, autocast) -> tuple[float, float, int]:
        """Top-1, mean cross-entropy (no smoothing) and the number of non-finite logits on the
        whole validation split; one sync."""
        model.eval()
        correct = torch.zeros((), dtype=torch.int64, device=val.device)
        bad = torch.zeros((), dtype=torch.int64, device=val.device)
        loss_sum = torch.zeros((), device=val.device)
        for start in range(0, val.n, batch):
            xb, yb = val.plain(start, min(val.n, start + batch))
            with autocast:
                logits = model(xb).float()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(-1) == yb).sum()
            bad += (~torch.isfinite(logits)).sum()
        c, s, b = torch.stack([correct.double(), loss_sum.double(), bad.double()]).tolist()
        return c / val.n, s / val.n, int(b)
