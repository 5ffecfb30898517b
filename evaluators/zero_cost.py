"""Zero-cost proxies: score an untrained network from one batch, no training.

Proxies (higher = predicted better, for every one):

- ``naswot``: Mellor et al. 2021, "Neural Architecture Search without Training". Each image's
  binary activation code over all ReLU-like units; score = ``log|K|`` with
  ``K_ij = #units where images i and j agree`` (= N_A - Hamming distance). Units are the
  *inputs* of activation modules (ReLU, GELU, SiLU, StarReLU, ...), binarised as
  ``pre-activation > 0`` via forward hooks: exact for ReLU, and for GELU/SiLU the sign of the
  pre-activation is where the unit switches between its linear-ish and its ~0 regime.
  Activations called functionally (``F.gelu`` inside a forward) are not seen; a model with no
  activation modules falls back to the signs of its Linear/Conv outputs.
- ``synflow``: Tanaka et al. 2020, "Pruning neural networks without any data by iteratively
  conserving synaptic flow". ``R = 1^T (prod |W|) 1``; score = ``log sum |theta * dR/dtheta|``
  (the log keeps it finite in JSON; ranking is unchanged). Run on a float64 copy of the model
  in eval mode, parameters replaced by their absolute values, on an all-ones input. How the
  attention-model parts behave:

  * BatchNorm is its eval-mode affine map ``x * |gamma| + |beta|`` (Tanaka et al.'s
    linearised network);
  * LayerNorm, GroupNorm, RMSNorm and timm's LayerNorm2d become ``x / rms(x) * |gamma| +
    |beta|`` with ``rms`` detached: a real LayerNorm subtracts the mean, which turns an
    all-positive, nearly constant signal into ~0 and erases what SynFlow measures; the
    surrogate keeps the signal positive but resets its scale exactly as the norm does, so the
    saliency of deep pre-norm models stays inside float64 (without it DeiT-Ti alone reaches
    ~1e247);
  * GELU/SiLU on the all-positive signal are ~identity, so they pass through unchanged;
  * softmax attention: the tokens of an all-ones image differ only by position encodings,
    so attention is near-uniform and the query/key weights get ~zero saliency. SynFlow scores
    attention models by their value/projection/MLP paths; that is a known blind spot.
- ``grad_norm``: Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight NAS": the sum
  over Linear/Conv weights of ``||dL/dW||_2`` for cross-entropy on one labelled batch.
- ``snip``: Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection
  Sensitivity": ``sum |W * dL/dW|`` over Linear/Conv weights, one labelled batch.
- ``flops`` / ``params``: forward multiply-accumulates and parameter count (baselines).

Every proxy works on a deep copy, so the caller's model (weights, BatchNorm statistics,
gradients, train/eval mode) is left untouched, and runs under a fixed seed.

A model whose weights or buffers, or whose logits on the batch, are non-finite gets no score:
``zero_cost_scores`` raises ``evaluators.proxy.Diverged`` with the reason (NASWOT would
otherwise score NaN activations as a code of zeros, a finite and meaningless number).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from evaluators.data import LoadedData
from operators.errors import NasError

PROXIES = ("naswot", "synflow", "grad_norm", "snip", "flops", "params")

_ACTIVATIONS = {
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "GELU", "GELUTanh", "QuickGELU", "SiLU", "Swish",
    "Hardswish", "HardSwish", "Mish", "ELU", "CELU", "SELU", "StarReLU", "SquaredReLU", "Softplus",
}
_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _prunable_weights(model: nn.Module) -> list[torch.Tensor]:
    ws = [m.weight for m in model.modules() if isinstance(m, _PRUNABLE) and m.weight.requires_grad]
    return ws or [p for p in model.parameters() if p.ndim >= 2 and p.requires_grad]


def _first_param(model: nn.Module) -> torch.Tensor:
    try:
        return next(model.parameters())
    except StopIteration:
        raise NasError("zero-cost proxies need a model with parameters") from None


# --- NASWOT ---------------------------------------------------------------------------------
@torch.no_grad()
def naswot(model: nn.Module, x: torch.Tensor) -> float:
    """log|K| of the batch's activation-code kernel (Mellor et al. 2021); ``x`` is ``(B, C, H, W)``."""
    net = copy.deepcopy(model).train()
    b = x.shape[0]
    k = torch.zeros(b, b, dtype=torch.float64, device=x.device)

    def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor, *, use_out: bool = False) -> None:
        t = out if use_out else inp[0]
        c = (t.reshape(b, -1) > 0).float()  # (B, units) binary code
        k.add_((c @ c.T + (1 - c) @ (1 - c).T).double())  # agreements, (B, B)

    mods = [m for m in net.modules() if type(m).__name__ in _ACTIVATIONS]
    use_out = not mods
    if use_out:
        mods = [m for m in net.modules() if isinstance(m, _PRUNABLE)]
    handles = [m.register_forward_hook(lambda m, i, o: hook(m, i, o, use_out=use_out)) for m in mods]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if float(sign) > 0 else float("-inf")


# --- SynFlow --------------------------------------------------------------------------------
def _is_norm(m: nn.Module) -> bool:
    if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm,
                      nn.modules.instancenorm._InstanceNorm)):
        return True
    rms = getattr(nn, "RMSNorm", None)
    return (rms is not None and isinstance(m, rms)) or type(m).__name__ in ("RmsNorm", "RmsNorm2d", "SimpleNorm")


def _norm_surrogate(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
    """Forward hook: replace a norm layer's output by a positive stand-in of its input.

    BatchNorm (eval, as in Tanaka et al.'s linearised network): ``x * |gamma| + |beta|``.
    LayerNorm/GroupNorm/RMSNorm: ``x / rms(x) * |gamma| + |beta|`` with ``rms`` detached:
    no mean subtraction (which would zero an all-positive constant signal) but the same scale
    reset as the real norm, so deep pre-norm models stay inside float64.
    """
    x = inp[0]
    w, b = getattr(m, "weight", None), getattr(m, "bias", None)
    is_bn = isinstance(m, nn.modules.batchnorm._BatchNorm)
    channel_first = x.ndim > 2 and (
        is_bn or isinstance(m, (nn.GroupNorm, nn.modules.instancenorm._InstanceNorm))
        or type(m).__name__.endswith("2d") or (w is not None and w.ndim == 1 and x.shape[-1] != w.shape[0]))
    if not is_bn:
        if isinstance(m, nn.GroupNorm):
            dims = tuple(range(1, x.ndim))
        elif channel_first:
            dims = (1,)
        else:
            dims = tuple(range(-(w.ndim if w is not None else 1), 0))
        x = x / x.pow(2).mean(dims, keepdim=True).sqrt().clamp_min(1e-30).detach()
    if w is not None:
        shape = (1, -1) + (1,) * (x.ndim - 2) if channel_first else tuple(w.shape)
        x = x * w.reshape(shape) + (b.reshape(shape) if b is not None else 0)
    act = getattr(m, "act", None)  # timm's BatchNormAct2d / LayerNormAct keep their activation
    return act(x) if isinstance(act, nn.Module) else x


def synflow(model: nn.Module, input_size: Sequence[int]) -> float:
    """log SynFlow saliency (Tanaka et al. 2020) of ``model`` at ``input_size = (C, H, W)``."""
    dev = _first_param(model).device
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    for b in net.buffers():  # e.g. BatchNorm running stats: irrelevant once bypassed
        if b.is_floating_point():
            b.abs_()
    handles = [m.register_forward_hook(_norm_surrogate) for m in net.modules() if _is_norm(m)]
    try:
        net.zero_grad(set_to_none=True)
        out = net(torch.ones(1, *input_size, dtype=torch.float64, device=dev))
        torch.sum(out).backward()
        with torch.no_grad():
            total = sum(float((p * p.grad).abs().sum()) for p in net.parameters() if p.grad is not None)
    finally:
        for h in handles:
            h.remove()
    return math.log(total) if total > 0 and math.isfinite(total) else float("nan")


# --- gradient-based --------------------------------------------------------------------------
def _loss_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[nn.Module, list[torch.Tensor]]:
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    return net, _prunable_weights(net)


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum of per-layer weight-gradient L2 norms (Abdelfattah et al. 2021)."""
    _, ws = _loss_grads(model, x, y)
    with torch.no_grad():
        return float(sum(w.grad.norm() for w in ws if w.grad is not None))


def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Connection sensitivity ``sum |W * dL/dW|`` (Lee et al. 2019)."""
    _, ws = _loss_grads(model, x, y)
    with torch.no_grad():
        return float(sum((w * w.grad).abs().sum() for w in ws if w.grad is not None))


# --- baselines -------------------------------------------------------------------------------
def flops(model: nn.Module, input_size: Sequence[int]) -> float:
    """Forward multiply-accumulates of one image (``evaluators.count_flops``)."""
    from evaluators.proxy import forward_macs

    macs = forward_macs(model, int(input_size[0]), int(input_size[1]))
    return float(macs) if macs is not None else float("nan")


def params(model: nn.Module) -> float:
    """Parameter count."""
    return float(sum(p.numel() for p in model.parameters()))


def check_finite(model: nn.Module, x: torch.Tensor) -> None:
    """Raise ``Diverged`` naming the reason when ``model``'s weights/buffers or its eval-mode
    logits on ``x`` are non-finite (the model itself is left as it was)."""
    from evaluators.isolation import kept_state
    from evaluators.proxy import Diverged, nonfinite_tensor

    if (bad := nonfinite_tensor(model)) is not None:
        raise Diverged(f"zero-cost proxies: the model's weights hold {bad}")
    with kept_state(model), torch.no_grad():
        model.eval()
        logits = model(x)
    if isinstance(logits, torch.Tensor) and not bool(torch.isfinite(logits).all()):
        n = int((~torch.isfinite(logits)).sum())
        raise Diverged(f"zero-cost proxies: {n} of the model's logits on the batch are non-finite")


def zero_cost_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     proxies: Sequence[str] = PROXIES, seed: int = 0) -> dict[str, float]:
    """Every requested proxy for ``model`` on the normalised batch ``x (B, C, H, W)`` with labels
    ``y``. The caller's model is not modified; the same seed gives the same scores.

    Raises:
        Diverged: the model's weights, buffers or logits on ``x`` are non-finite.
        NasError: an unknown proxy name.
    """
    bad = [p for p in proxies if p not in PROXIES]
    if bad:
        raise NasError(f"unknown zero-cost proxy {bad[0]!r}; choose from {', '.join(PROXIES)}")
    dev = _first_param(model).device
    x, y = x.to(dev), y.to(dev)
    size = tuple(x.shape[1:])
    check_finite(model, x)
    fns: dict[str, Callable[[], float]] = {
        "naswot": lambda: naswot(model, x),
        "synflow": lambda: synflow(model, size),
        "grad_norm": lambda: grad_norm(model, x, y),
        "snip": lambda: snip(model, x, y),
        "flops": lambda: flops(model, size),
        "params": lambda: params(model),
    }
    out = {}
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        for name in proxies:
            torch.manual_seed(seed)
            out[name] = fns[name]()
    return out


def score(proxy: str, model: nn.Module, data: LoadedData | tuple[torch.Tensor, torch.Tensor], seed: int = 0,
          batch_size: int = 64) -> float:
    """One proxy's score of ``model`` on a seeded, class-balanced batch of ``data`` (a
    ``LoadedData``) or on a given ``(x, y)`` batch."""
    if isinstance(data, tuple):
        x, y = data
    else:
        x, y = data.batch(batch_size, split="train", device=_first_param(model).device, seed=seed)
    return zero_cost_scores(model, x, y, proxies=[proxy], seed=seed)[proxy]
