"""Multiply-accumulate counting that does not skip attention.

Convention: one fused multiply-add is one FLOP ("MACs"), as in fvcore and in the papers'
tables (DeiT-Ti = 1.3 G at 224 px). The counter is fvcore's ``FlopCountAnalysis`` (a JIT trace
of the model) with handles added for the operators it misses or gets wrong:

* ``aten::scaled_dot_product_attention`` and its internal kernels (flash / efficient / math /
  cuDNN): ``B * heads * L * S * (E + Ev)`` MACs for ``Q K^T`` and ``softmax(.) V``. Plain
  fvcore reports 0 here, which is why it gives DeiT-Ti 1.08 G instead of 1.26 G.
* ``aten::matmul`` with broadcast batch dimensions or 1-D operands (fvcore's handle assumes the
  left operand carries the batch), ``aten::baddbmm``/``aten::addbmm``/``aten::addmv``/``aten::mv``/
  ``aten::dot``, two-operand ``aten::einsum`` with any letters or ``...`` (product of the index
  sizes), ``aten::rms_norm``, ``aten::conv_transpose*`` through ``aten::_convolution`` (fvcore).
* FFTs (``aten::fft_*``): ``N log2 N`` per transformed signal, the usual estimate.
* Recurrent layers (``aten::lstm``/``gru``/``rnn_*``, e.g. Sequencer): each weight matrix once per step.

Operators that do no multiply-accumulate work worth counting (element-wise arithmetic,
activations, softmax, pooling, reductions, data movement) are deliberately ignored, exactly as
fvcore ignores them; they are listed in ``IGNORED_OPS`` and tallied in ``FlopCount.ignored``.
Every other operator that was seen but has no handle lands in ``FlopCount.uncounted``: a count
is never silently zero.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from evaluators.isolation import kept_state
from operators.errors import NasError, one_line

# Ops fvcore does not count and we deliberately do not count either: no multiply-accumulates
# worth counting under the MAC convention (element-wise, activations, softmax, pooling,
# reductions, data movement, RNG). Extend with care: anything else must get a handle.
IGNORED_OPS: frozenset[str] = frozenset(
    f"aten::{n}" for n in (
        # element-wise arithmetic
        "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "abs", "pow", "pow_",
        "sqrt", "rsqrt", "square", "exp", "exp_", "log", "reciprocal", "sign", "remainder", "fmod",
        "clamp_min", "clamp_max", "clamp_min_", "maximum", "minimum", "lerp", "addcmul", "addcdiv",
        "masked_fill", "masked_fill_", "where", "lt", "le", "ne", "logical_and", "logical_or", "logical_not",
        "bitwise_and", "bitwise_or", "bitwise_xor", "__or__", "__xor__", "__ior__", "__iand__", "__not__",
        "fill_", "zero_", "floor_", "ceil", "round", "trunc", "frac",
        "sin", "cos", "atan2", "erf", "erfinv", "isfinite", "isnan", "nan_to_num",
        # activations and normalised exponentials
        "gelu", "gelu_", "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "silu", "silu_", "sigmoid",
        "sigmoid_", "tanh", "tanh_", "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_", "hardtanh",
        "hardtanh_", "mish", "elu", "elu_", "softplus", "glu", "softmax", "log_softmax", "_softmax",
        "celu", "selu", "prelu",
        # pooling and reductions (additions / comparisons, no multiplies)
        "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d",
        "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool3d",
        "max_pool2d_with_indices", "mean", "sum", "amax", "amin", "max", "min", "argmax", "argmin", "std",
        "var", "var_mean", "std_mean", "cumsum", "prod", "logsumexp", "linalg_vector_norm", "norm",
        "frobenius_norm", "all", "any",
        # data movement, shapes, indexing, creation
        "pad", "reflection_pad2d", "replication_pad2d", "roll", "repeat", "repeat_interleave", "tile",
        "reshape_as", "view_as", "expand_as", "numpy_T", "mT", "mH", "adjoint", "matrix_H", "flip", "unfold", "im2col", "col2im", "pixel_shuffle",
        "pixel_unshuffle", "channel_shuffle", "index", "index_select", "index_put_", "index_add",
        "scatter", "scatter_", "scatter_add", "masked_select", "nonzero", "sort", "argsort", "msort", "topk", "unique",
        "stack", "split", "split_with_sizes", "unbind", "narrow", "movedim", "moveaxis", "swapaxes",
        "tensor_split", "meshgrid", "zeros", "zeros_like", "ones", "ones_like", "empty_like", "new_zeros",
        "new_ones", "new_full", "new_empty", "linspace", "tensor", "lift_fresh", "alias", "clone", "to",
        "type_as", "_to_copy", "fill", "diag", "tril", "triu", "eye", "baddbmm_", "one_hot",
        "upsample_bicubic2d", "upsample_nearest1d",
        # randomness (training-time regularisers)
        "rand", "rand_like", "randn", "randn_like", "bernoulli", "bernoulli_", "feature_dropout",
        "dropout_", "alpha_dropout", "native_dropout", "uniform_", "normal_", "randint", "randperm",
        # complex plumbing (FFT mixers)
        "view_as_real", "view_as_complex", "real", "imag", "complex", "conj", "_conj", "resolve_conj",
    )
)

_SDPA_BHLE = (  # q, k, v laid out (B, heads, L, E)
    "aten::scaled_dot_product_attention",
    "aten::_scaled_dot_product_attention_math",
    "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention",
    "aten::_scaled_dot_product_fused_attention_overrideable",
)
_SDPA_BLHE = ("aten::_flash_attention_forward", "aten::_efficient_attention_forward")  # (B, L, heads, E)
_FFT_OPS = tuple(f"aten::fft_{k}" for k in ("fft", "ifft", "rfft", "irfft", "fft2", "ifft2", "rfft2", "irfft2",
                                            "fftn", "ifftn", "rfftn", "irfftn", "hfft", "ihfft"))


# --- one formula per op --------------------------------------------------------------------
# Both engines (the JIT trace through fvcore's handles, and the meta-device dispatcher count
# below) read an op's operand shapes in their own way and hand them to the one formula here.
Shape = Sequence[int]


def _broadcast(*shapes: Shape) -> list[int]:
    return list(torch.broadcast_shapes(*[tuple(s) for s in shapes]))


def sdpa_macs(q: Shape, k: Shape, v: Shape) -> int:
    """Scaled dot-product attention, q ``(..., L, E)``, k ``(..., S, E)``, v ``(..., S, Ev)``:
    ``batch * L * S * E`` for ``Q K^T`` plus ``batch * L * S * Ev`` for ``softmax(.) V``, where
    batch is the broadcast of the leading dims (grouped-query attention: k/v heads are shared by
    the q heads, so the q heads count)."""
    if len(k) > 2 and len(q) > 2 and k[-3] != q[-3] and q[-3] % max(k[-3], 1) == 0:
        batch = list(q[:-2])  # grouped-query attention
    else:
        batch = _broadcast(q[:-2], k[:-2], v[:-2]) if len(q) > 2 else []
    L, S, E, Ev = q[-2], k[-2], q[-1], v[-1]
    return math.prod(batch) * L * S * (E + Ev)  # Q K^T and P V


def sdpa_blhe_macs(q: Shape, k: Shape, v: Shape) -> int:
    """``sdpa_macs`` for the fused kernels' ``(B, L, heads, E)`` layout."""
    q, k, v = ([s[0], s[2], s[1], s[3]] for s in (q, k, v))  # -> (B, heads, L, E)
    return sdpa_macs(q, k, v)


def bmm_macs(a: Shape, b: Shape) -> int:
    """Batched matrix product ``(n, i, k) @ (n, k, j)``: ``n * i * k * j``."""
    return a[0] * a[1] * a[2] * b[2]


def layer_norm_macs(numel: int, affine: bool) -> int:
    """Layer/group/instance norm, fvcore's rule: 4 per element (mean, variance, normalise), 5 with
    the affine scale and shift."""
    return numel * (5 if affine else 4)


def batch_norm_macs(numel: int, affine: bool, *, training: bool) -> int:
    """Batch norm, fvcore's rule: with batch statistics (training) as ``layer_norm_macs``; with
    running statistics one multiply-add per element (folded scale), 2 with the affine part."""
    return layer_norm_macs(numel, affine) if training else numel * (2 if affine else 1)


def rms_norm_macs(numel: int, affine: bool) -> int:
    """RMS norm: 3 per element (square, mean, scale), 4 with the learned scale."""
    return numel * (4 if affine else 3)


def fft_macs(in_shape: Shape, out_shape: Shape, dims: Sequence[int]) -> int:
    """``N log2 N`` per transformed signal (a radix-2 FFT's complex MACs), over the larger of input
    and output; ``N`` is the transformed size along ``dims``."""
    n = math.prod(max(in_shape[d], out_shape[d]) for d in dims)
    return int(max(math.prod(in_shape), math.prod(out_shape)) * math.log2(max(n, 2)))


# --- fvcore handles (the JIT engine) ---------------------------------------------------------
def _shape(val: Any) -> list[int] | None:
    if val.isCompleteTensor():
        return list(val.type().sizes())
    return None


def _sdpa_handle(layout: str):
    formula = sdpa_blhe_macs if layout == "blhe" else sdpa_macs

    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        return formula(*(_shape(x) for x in inputs[:3]))

    return handle


def _matmul_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``torch.matmul`` with broadcasting and 1-D operands: output elements x inner size."""
    a = _shape(inputs[0])
    out = _shape(outputs[0])
    return math.prod(out) * a[-1] if out is not None else 0


def _baddbmm_handle(inputs: list[Any], outputs: list[Any]) -> int:
    return bmm_macs(_shape(inputs[1]), _shape(inputs[2]))


def _mv_handle(inputs: list[Any], outputs: list[Any]) -> int:
    a = _shape(inputs[0]) if len(_shape(inputs[0]) or []) == 2 else _shape(inputs[1])
    return math.prod(a)


def _addmv_handle(inputs: list[Any], outputs: list[Any]) -> int:
    return math.prod(_shape(inputs[1]))


def _dot_handle(inputs: list[Any], outputs: list[Any]) -> int:
    return math.prod(_shape(inputs[0]))


def _einsum_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """Two operands: MACs = product of the sizes of every index letter (the ``...`` dims count
    as broadcast batch). More operands: numpy's optimal contraction path (fvcore's rule)."""
    equation = inputs[0].toIValue().replace(" ", "")
    shapes = [_shape(v) for v in inputs[1].node().inputs()]
    lhs = equation.split("->")[0].split(",")
    if len(lhs) != 2:
        from fvcore.nn.jit_handles import einsum_flop_jit

        return int(einsum_flop_jit(inputs, outputs))
    sizes: dict[str, int] = {}
    ell: list[list[int]] = []
    for term, shape in zip(lhs, shapes, strict=False):
        n_named = len(term.replace("...", ""))
        if "..." in term:
            i = term.index("...")
            n_ell = len(shape) - n_named
            ell.append(shape[i:i + n_ell])
            named = shape[:i] + shape[i + n_ell:]
            term = term.replace("...", "")
        else:
            named = shape
        for letter, size in zip(term, named, strict=False):
            sizes[letter] = max(sizes.get(letter, 1), size)
    batch = math.prod(_broadcast(*ell)) if ell else 1
    return math.prod(sizes.values()) * batch


def _rms_norm_handle(inputs: list[Any], outputs: list[Any]) -> int:
    affine = len(inputs) > 2 and _shape(inputs[2]) is not None
    return rms_norm_macs(math.prod(_shape(inputs[0])), affine)


def _fft_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``fft_macs``; the dims are not reliably constant in the graph, so the transform is taken
    over the last two (2-D image FFTs)."""
    a, o = _shape(inputs[0]) or [], _shape(outputs[0]) or []
    if not a or len(a) != len(o):
        return fft_macs([math.prod(a)], [math.prod(o)], [0])
    return fft_macs(a, o, range(-min(2, len(a)), 0))


def _rnn_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::lstm``/``gru``/``rnn_*``: every 2-D weight matrix (input-hidden and hidden-hidden, each
    layer and direction) is applied once per time step and sequence: ``steps x sum(|W|)``."""
    x = _shape(inputs[0]) or []
    steps = math.prod(x[:-1]) if x else 0  # (T, B, in) / (B, T, in) / unbatched (T, in)
    weights = [_shape(v) for v in inputs[2].node().inputs()] if inputs[2].node().kind() == "prim::ListConstruct" else []
    return steps * sum(math.prod(w) for w in weights if w is not None and len(w) == 2)


def extra_handles() -> dict[str, Any]:
    """op name -> fvcore handle for everything added to fvcore's defaults."""
    handles: dict[str, Any] = {op: _sdpa_handle("bhle") for op in _SDPA_BHLE}
    handles.update({op: _sdpa_handle("blhe") for op in _SDPA_BLHE})
    handles.update({op: _fft_handle for op in _FFT_OPS})
    handles.update({
        "aten::matmul": _matmul_handle,
        "aten::baddbmm": _baddbmm_handle,
        "aten::addbmm": _baddbmm_handle,
        "aten::mv": _mv_handle,
        "aten::addmv": _addmv_handle,
        "aten::dot": _dot_handle,
        "aten::vdot": _dot_handle,
        "aten::einsum": _einsum_handle,
        "aten::rms_norm": _rms_norm_handle,
        "aten::linalg_matmul": _matmul_handle,
        "aten::lstm": _rnn_handle,
        "aten::gru": _rnn_handle,
        "aten::rnn_tanh": _rnn_handle,
        "aten::rnn_relu": _rnn_handle,
    })
    return handles


@dataclass
class FlopCount:
    """The result of ``count_flops``. ``int(result)`` is the total in MACs.

    Attributes:
        total: multiply-accumulates for one forward pass at ``batch`` x ``input_size``.
        by_module: module name -> MACs for every submodule that does any (``"stages.0"``,
            ``"stages.0.blocks.1.mixer"``, ...); the whole model is ``total``.
        by_operator: operator (``"linear"``, ``"scaled_dot_product_attention"``, ...) -> MACs.
        uncounted: op -> number of calls, for ops that were seen but neither counted nor in
            ``IGNORED_OPS``. Empty means the count is complete.
        ignored: op -> calls for the deliberately ignored (element-wise, pooling, ...) ops.
        input_size: ``(C, H, W)`` the model was traced at; ``batch`` its batch size.
    """

    total: int
    by_module: dict[str, int] = field(default_factory=dict)
    by_operator: dict[str, int] = field(default_factory=dict)
    uncounted: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)
    input_size: tuple[int, ...] = (3, 224, 224)
    batch: int = 1

    def __int__(self) -> int:
        return int(self.total)

    def __index__(self) -> int:
        return int(self.total)

    def __float__(self) -> float:
        return float(self.total)

    @property
    def gmacs(self) -> float:
        return self.total / 1e9

    def module(self, name: str) -> int:
        """MACs inside submodule ``name`` (0 when it does none)."""
        return int(self.by_module.get(name, 0))

    def children(self, prefix: str = "") -> dict[str, int]:
        """Direct children of ``prefix`` (``""``: top-level modules) -> MACs."""
        depth = prefix.count(".") + 1 if prefix else 0
        out = {}
        for name, v in self.by_module.items():
            if not name or (prefix and not name.startswith(prefix + ".")):
                continue
            if name.count(".") == depth:
                out[name] = v
        return out

    def to_dict(self) -> dict[str, Any]:
        return dict(total=self.total, by_operator=self.by_operator, uncounted=self.uncounted,
                    input_size=list(self.input_size), batch=self.batch)


@contextlib.contextmanager
def counting_mode() -> Iterator[None]:
    """The autograd state every count runs in, whatever the caller's: inference mode off, grad
    off, autocast off.

    A count must not depend on the mode it is called in. Inside ``torch.inference_mode()`` the
    dispatcher skips the Autograd keys, so composite ops (``conv2d``, ``linear``, ``dropout``, ...)
    reach a ``TorchDispatchMode`` undecomposed and the meta counter would miss them (a conv stem's
    MACs vanished), and a JIT trace would record other ops. Under autocast the ops see other
    dtypes. Normalising here makes every counter (``count_flops``, ``count_flops_meta``,
    ``screen`` and its kernel cache, the latency predictor's features) mode-independent.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.no_grad())
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        yield


def _make_analysis(model: nn.Module, x: torch.Tensor):
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, x).set_op_handle(**extra_handles())
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


def count_flops(
    model: nn.Module,
    input_size: tuple[int, int, int] = (3, 224, 224),
    *,
    batch: int = 1,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> FlopCount:
    """Count the multiply-accumulates of one forward pass of ``model``.

    Works on any ``nn.Module`` that takes one image tensor: ``NasNet`` and timm's models alike,
    whatever timm's fused-attention setting. A model on the ``meta`` device (no real weights)
    cannot be JIT-traced; it is counted by ``count_flops_meta`` instead (same convention, no
    ``by_module``).

    Args:
        model: the network (put in eval mode for the trace; every submodule's mode is restored).
        input_size: ``(C, H, W)`` for image models (any per-sample shape works: ``(H, W, C)`` for a
            channels-last block, ``(T, C)`` for a sequence model).
        batch: batch size of the traced input (MACs scale linearly with it).
        device, dtype: of the traced input; default: those of the model's first parameter.

    Raises:
        NasError: the model fails at this input size (the message names the failing layer).
    """
    if not tuple(input_size) or any(int(v) <= 0 for v in input_size):
        raise NasError(f"input_size must be positive sizes, e.g. (C, H, W), got {tuple(input_size)}")
    p = next(iter(model.parameters()), None)
    device = torch.device(device) if device is not None else (p.device if p is not None else torch.device("cpu"))
    dtype = dtype or (p.dtype if p is not None and p.is_floating_point() else torch.float32)
    if device.type == "meta":
        return count_flops_meta(model, tuple(input_size), batch=batch)
    with counting_mode():
        x = torch.randn(batch, *input_size, device=device, dtype=dtype)
    with kept_state(model), counting_mode(), warnings.catch_warnings():
        model.eval()
        warnings.simplefilter("ignore")
        analysis = _make_analysis(model, x)
        try:
            total = analysis.total()
        except Exception as e:  # tracing failed: find the layer with a plain forward
            raise NasError(describe_failure(model, x, e)) from None
        by_module = {k: int(v) for k, v in analysis.by_module().items() if k and v}
        by_op = {k: int(v) for k, v in analysis.by_operator().items() if v}
        seen = analysis.unsupported_ops()
    uncounted = {k: int(v) for k, v in sorted(seen.items()) if k not in IGNORED_OPS}
    ignored = {k: int(v) for k, v in sorted(seen.items()) if k in IGNORED_OPS}
    return FlopCount(int(total), by_module, by_op, uncounted, ignored, tuple(input_size), batch)


def describe_failure(model: nn.Module, x: torch.Tensor, error: BaseException | None = None) -> str:
    """One line saying which layer of ``model`` fails on input ``x`` and why.

    Runs a plain forward with hooks that track the innermost module being executed; the
    module that was running when the exception was raised is the one named.
    """
    names = {m: n for n, m in model.named_modules()}
    stack: list[str] = []
    failed: list[str] = []
    handles = []

    def pre(mod: nn.Module, args: Any) -> None:
        stack.append(names.get(mod, type(mod).__name__))

    def post(mod: nn.Module, args: Any, out: Any) -> None:
        if stack:
            stack.pop()

    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    reason: BaseException | None = error
    try:
        with torch.no_grad():
            model(x)
        where = None
    except Exception as e:  # noqa: BLE001 - we report it
        reason = e
        failed = list(stack)
        where = failed[-1] if failed else None
    finally:
        for h in handles:
            h.remove()
    size = "x".join(str(s) for s in x.shape[1:])
    why = one_line(reason, limit=300) if reason is not None else "unknown error"
    if where is None:
        return f"the model cannot be traced at input {size}: {why}"
    mod = dict(model.named_modules()).get(where)
    kind = type(mod).__name__ if mod is not None else "?"
    return f"the model fails at input {size} in layer '{where or '<root>'}' ({kind}): {why}"


def plain_fvcore_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> int:
    """fvcore's count without our handles (for comparison tables: it skips attention)."""
    from fvcore.nn import FlopCountAnalysis

    with kept_state(model), torch.no_grad(), warnings.catch_warnings():
        model.eval()
        warnings.simplefilter("ignore")
        a = FlopCountAnalysis(model, torch.randn(1, *input_size))
        a.unsupported_ops_warnings(False)
        a.uncalled_modules_warnings(False)
        a.tracer_warnings("none")
        return int(a.total())



# --- the same convention on the meta device, for screening -----------------------------------
# A JIT trace cannot run on meta tensors, so screening counts at the dispatcher instead: every
# aten op a forward pass on meta tensors reaches is matched to a formula that gives the same
# MACs as fvcore's + our handles above (tests/evaluators/test_flops.py checks both agree).
# Shape and view plumbing that only exists at dispatch level (after decomposition) is listed here.
_DISPATCH_PLUMBING: frozenset[str] = frozenset({
    "view", "_unsafe_view", "t", "transpose", "permute", "expand", "clone", "copy_", "slice", "select",
    "unsqueeze", "squeeze", "cat", "detach", "empty", "empty_strided", "full", "arange", "as_strided",
    "constant_pad_nd", "_safe_softmax", "split_with_sizes", "reshape", "contiguous", "flatten",
    "new_empty_strided", "lift_fresh_copy", "_reshape_alias", "unflatten", "scalar_tensor", "eq", "gt",
    "ge", "bitwise_not", "floor_divide", "gather", "dropout", "_local_scalar_dense", "empty_like",
    "__and__", "__or__", "clamp", "clamp_", "select_backward", "slice_scatter", "full_like", "zeros_like",
})
_IGNORED_NAMES = frozenset(op.split("::")[1] for op in IGNORED_OPS) | _DISPATCH_PLUMBING


def _numel(t: Any) -> int:
    return math.prod(t.shape) if isinstance(t, torch.Tensor) else 0


def _fft_dispatch_macs(x: torch.Tensor, out: torch.Tensor, dims: Any) -> int:
    dims = [dims] if isinstance(dims, int) else list(dims or range(-min(2, x.dim()), 0))
    return fft_macs(x.shape, out.shape, dims)


def _dispatch_macs(name: str, args: tuple, out: Any) -> int | None:
    """MACs of one dispatched aten op (``None``: no formula)."""
    if name in ("mm", "addmm"):
        a, b = args[-2], args[-1]
        return a.shape[0] * a.shape[1] * b.shape[1]
    if name in ("bmm", "baddbmm"):
        return bmm_macs(args[-2].shape, args[-1].shape)
    if name in ("mv", "addmv"):
        return _numel(args[-2])
    if name in ("dot", "vdot"):
        return _numel(args[0])
    if name == "convolution":
        x, w, transposed = args[0], args[1], bool(args[6])
        return x.shape[0] * math.prod(w.shape) * math.prod((x if transposed else out).shape[2:])
    if name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                "_scaled_dot_product_attention_math", "scaled_dot_product_attention",
                "_scaled_dot_product_fused_attention_overrideable"):
        return sdpa_macs(*(t.shape for t in args[:3]))
    if name in ("_flash_attention_forward", "_efficient_attention_forward"):
        return sdpa_blhe_macs(*(t.shape for t in args[:3]))
    if name == "native_layer_norm":
        return layer_norm_macs(_numel(args[0]), len(args) > 2 and args[2] is not None)
    if name == "native_group_norm":
        return layer_norm_macs(_numel(args[0]), len(args) > 1 and args[1] is not None)
    if name in ("_native_batch_norm_legit_no_training",):
        return batch_norm_macs(_numel(args[0]), args[1] is not None, training=False)
    if name in ("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_functional"):
        training = bool(args[5]) if len(args) > 5 else False
        return batch_norm_macs(_numel(args[0]), args[1] is not None, training=training)
    if name in ("_fused_rms_norm", "rms_norm"):
        return rms_norm_macs(_numel(args[0]), len(args) > 2 and args[2] is not None)
    if name in ("_adaptive_avg_pool2d", "adaptive_avg_pool2d"):
        return _numel(args[0])
    if name in ("upsample_nearest2d",):
        return _numel(out)
    if name in ("upsample_bilinear2d", "grid_sampler_2d"):
        return 4 * _numel(out)
    if name in ("_fft_r2c", "_fft_c2r", "_fft_c2c"):
        return _fft_dispatch_macs(args[0], out, args[1])
    return None


_COMPARE = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "isnan",
                      "isfinite"})


def _fast_meta(func: Any, name: str, args: tuple, kwargs: dict | None) -> Any:
    """Output of a hot shape-trivial op on meta tensors without torch's (slow, Python) reference
    kernels: pointwise ops broadcast, ``native_layer_norm`` keeps the shape. None: run it."""
    if kwargs and "out" in kwargs:
        return None
    if name == "native_layer_norm":
        x, normalized = args[0], args[1]
        stat = tuple(x.shape[: x.dim() - len(normalized)]) + (1,) * len(normalized)
        return (torch.empty(x.shape, dtype=x.dtype, device="meta"), torch.empty(stat, dtype=torch.float32, device="meta"),
                torch.empty(stat, dtype=torch.float32, device="meta"))
    if torch.Tag.pointwise not in func.tags or any(
            isinstance(a, torch.Tensor) and a.device.type != "meta" for a in args):
        return None
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors:
        return None
    if name.endswith("_") and not name.startswith("_"):  # in place: the first argument
        return args[0] if isinstance(args[0], torch.Tensor) and args[0].shape == torch.broadcast_shapes(
            *[t.shape for t in tensors]) else None
    shape = torch.broadcast_shapes(*[t.shape for t in tensors])
    if name in _COMPARE:
        dtype = torch.bool
    else:
        operands = [a for a in args if isinstance(a, (torch.Tensor, int, float, bool))][:2]
        dtype = torch.result_type(*operands) if len(operands) == 2 else tensors[0].dtype
    return torch.empty(shape, dtype=dtype, device="meta")


def count_flops_meta(module: nn.Module, input_shape: tuple[int, ...], *, batch: int = 1) -> FlopCount:
    """MACs of ``module`` on a meta input of shape ``(batch, *input_shape)``: no weights, no data.

    The module is typically built under ``torch.device("meta")``. Same convention and same
    ``uncounted`` contract as ``count_flops``; ``by_module`` is not tracked.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    by_op: Counter = Counter()
    uncounted: Counter = Counter()
    ignored: Counter = Counter()

    class _Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            out = _fast_meta(func, name, args, kwargs)
            if out is None:
                out = func(*args, **(kwargs or {}))
            macs = _dispatch_macs(name, args, out)
            if macs is not None:
                by_op[name] += int(macs)
            elif name in _IGNORED_NAMES or name.rstrip("_") in _IGNORED_NAMES:
                ignored[f"aten::{name}"] += 1
            else:
                uncounted[f"aten::{name}"] += 1
            return out

    from torch.overrides import TorchFunctionMode

    F = torch.nn.functional

    class _Shortcuts(TorchFunctionMode):
        """Count the hottest functions from their shapes and skip their meta decompositions
        (SDPA's math path, linear's view/addmm chain, layer norm's reference kernel)."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.linear and len(args) >= 2 and isinstance(args[1], torch.Tensor) and args[1].dim() == 2:
                x, w = args[0], args[1]
                if x.device.type == "meta" and x.dim() >= 1 and x.shape[-1] == w.shape[1]:
                    by_op["linear"] += _numel(x) * w.shape[0]
                    return torch.empty(*x.shape[:-1], w.shape[0], dtype=x.dtype, device="meta")
            elif func is F.scaled_dot_product_attention and len(args) >= 3:
                q, k, v = args[:3]
                if (q.device.type == "meta" and q.dim() >= 3 and not kwargs.get("enable_gqa")
                        and k.shape[-3:-2] == q.shape[-3:-2]):
                    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
                    by_op["scaled_dot_product_attention"] += sdpa_macs(q.shape, k.shape, v.shape)
                    return torch.empty(*batch, q.shape[-2], v.shape[-1], dtype=q.dtype, device="meta")
            elif func is F.layer_norm and args and isinstance(args[0], torch.Tensor) and args[0].device.type == "meta":
                weight = args[2] if len(args) > 2 else kwargs.get("weight")
                by_op["native_layer_norm"] += layer_norm_macs(_numel(args[0]), weight is not None)
                return torch.empty(args[0].shape, dtype=args[0].dtype, device="meta")
            return func(*args, **kwargs)

    with counting_mode():
        x = torch.empty(batch, *input_shape, device="meta")
    try:
        with kept_state(module), counting_mode(), _Counter(), _Shortcuts():
            module.eval()
            module(x)
    except Exception as e:  # noqa: BLE001 - reported as a user-facing error
        raise NasError(f"{type(module).__name__} fails on input {tuple(input_shape)}: {one_line(e, limit=300)}") from None
    return FlopCount(int(sum(by_op.values())), {}, dict(by_op), dict(uncounted), dict(ignored),
                     tuple(input_shape), batch)
