"""Base classes shared by every operator family.

Token mixers map a channels-last grid ``(B, H, W, C)`` to the same shape. They are built as
``Mixer(dim, *, grid_size, pos_encoding, block_index, <typed knobs>)``: ``grid_size`` is the
feature map the stage sees at the model's ``img_size`` (tables and fixed projections are sized
from it), ``pos_encoding`` names an attention-internal position encoding from
``operators.POS_ENCODINGS`` (or ``"none"``), and ``block_index`` is the block's place within its
stage (Swin alternates shifted windows with it). Everything after those three is a knob: typed,
defaulted, and recorded in the genome.

A module holding a tensor whose shape follows the grid it was built for (a learned position
table, a bias table over the whole feature map) defines ``resize_state(name, tensor, source)``:
it returns a checkpoint's tensor built for ``source``'s grid resampled to its own, exactly as its
forward pass resamples at another grid, or raises a one-line ``ValueError`` where that cannot be
done (``search_space.builder.checkpoint_filter_fn`` calls it when weights load at another size).
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

CONTEXT_ARGS = ("grid_size", "pos_encoding", "block_index")


@dataclass(frozen=True)
class Knob:
    """One typed knob of an operator: its name, Python type and default."""

    name: str
    type: type
    default: Any


def operator_knobs(cls: type, skip: tuple[str, ...] = ()) -> dict[str, Knob]:
    """The keyword-only knobs of an operator class, read from its ``__init__`` signature."""
    return dict(_operator_knobs(cls, skip))


@functools.cache
def _operator_knobs(cls: type, skip: tuple[str, ...]) -> dict[str, Knob]:
    hints = typing.get_type_hints(cls.__init__)
    knobs = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.name in CONTEXT_ARGS or p.name in skip:
            continue
        knobs[p.name] = Knob(p.name, _plain_type(hints.get(p.name, type(p.default))), p.default)
    return knobs


def _plain_type(hint: Any) -> type:
    origin = typing.get_origin(hint)
    if origin is not None:  # Optional[int] / int | None -> int; tuple[int, int] -> tuple
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _plain_type(args[0]) if origin in (typing.Union, types.UnionType) else origin
    return hint


class TokenMixer(nn.Module):
    """A spatial token mixer: ``(B, H, W, C) -> (B, H, W, C)``.

    Subclasses set ``supported_pos``: the attention-internal position encodings they accept
    (``"none"`` is always accepted; grid encodings such as learned absolute or CPE are applied
    outside the mixer and work with every mixer).
    """

    supported_pos: ClassVar[frozenset[str]] = frozenset()
    registry_name: ClassVar[str] = ""

    @classmethod
    def knobs(cls) -> dict[str, Knob]:
        return operator_knobs(cls)

    @classmethod
    def canonical_knobs(cls, knobs: dict[str, Any], *, depth: int) -> dict[str, Any]:
        """``knobs`` (every knob present) with those that cannot change a stage of ``depth``
        blocks set to their defaults: the genome's canonical form hashes this. The base rule
        changes nothing; mixers with context-dependent knobs override it."""
        return knobs

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        """Return why ``knobs`` cannot work for ``dim`` channels on ``grid_size``, or None.

        The base rules cover the shared knob names: ``num_heads`` must divide ``dim`` and a
        ``window_size`` may not exceed the feature map. Families with extra rules override this
        and call ``super().check``.
        """
        heads = knobs.get("num_heads", cls.knobs().get("num_heads", Knob("", int, None)).default)
        if heads is not None and (heads <= 0 or dim % heads):
            return f"num_heads={heads} must be positive and divide the width {dim}"
        win = knobs.get("window_size", cls.knobs().get("window_size", Knob("", int, None)).default)
        if win is not None and win > min(grid_size):
            return (f"window_size={win} is larger than the {grid_size[0]}x{grid_size[1]} feature map "
                    f"this stage sees; use at most {min(grid_size)}")
        return None


class GridPosEncoding(nn.Module):
    """A position encoding applied to the token grid at the start of a stage.

    Built as ``Enc(dim, *, grid_size)``; ``forward((B, H, W, C)) -> (B, H, W, C)``.
    Works with every mixer.
    """

    placement: ClassVar[str] = "grid"
    registry_name: ClassVar[str] = ""

    def __init__(self, dim: int, *, grid_size: tuple[int, int]) -> None:
        super().__init__()
        self.dim = dim
        self.grid_size = tuple(grid_size)


class AttnPosEncoding(nn.Module):
    """A position encoding that lives inside attention (relative bias, RoPE, LePE, ...).

    Built as ``Enc(*, dim, num_heads, grid_size)`` where ``grid_size`` is the attended region
    (a window, or the whole feature map). The three hooks default to no-ops:
    ``rotate`` changes q and k, ``bias`` adds to the logits, ``refine`` adds to the output.
    """

    placement: ClassVar[str] = "attention"
    registry_name: ClassVar[str] = ""

    def __init__(self, *, dim: int, num_heads: int, grid_size: tuple[int, int]) -> None:
        super().__init__()
        self.dim, self.num_heads, self.grid_size = dim, num_heads, tuple(grid_size)

    @classmethod
    def check(cls, dim: int, num_heads: int) -> str | None:
        """Return why this encoding cannot work with ``num_heads`` heads over ``dim``, or None."""
        return None

    def rotate(self, q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k

    def bias(self, q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor | None:
        return None

    def refine(self, out: torch.Tensor, v: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return out


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pos: AttnPosEncoding | None = None,
    grid: tuple[int, int] | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-head attention over ``(B, heads, N, d)`` tensors through the fused SDPA kernel.

    ``pos`` (an attention-internal position encoding) may rotate q/k, add a logit bias and
    refine the output; ``mask`` is an additive float mask broadcastable to ``(B, heads, N, N)``.
    """
    bias = mask
    if pos is not None:
        q, k = pos.rotate(q, k, grid)
        pos_bias = pos.bias(q, grid)
        if pos_bias is not None:
            bias = pos_bias if bias is None else bias + pos_bias
    if bias is not None:
        bias = bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, heads, N, d)
    if pos is not None:
        out = pos.refine(out, v, grid)
    return out


def cover_pad(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Extra zeros needed after the end of a side of ``size`` pixels so that a sliding window
    (``kernel``, ``stride``, symmetric ``padding``) reaches every pixel; 0 when none are missed.

    A strided conv or unfold ends at its last whole window, so when the stride does not divide
    the padded side the last pixels are silently ignored. Padding by this amount adds one window
    instead (timm's ``PatchEmbed(dynamic_img_pad=True)`` for ``kernel == stride``).
    """
    length = size + 2 * padding
    if length < kernel:
        return kernel - length
    last = (length - kernel) // stride * stride + kernel - 1  # last padded position a window sees
    return 0 if last >= padding + size - 1 else (-(length - kernel)) % stride


def pad_to_cover(x: torch.Tensor, kernel: int, stride: int, padding: int = 0, *,
                 channels_last: bool = False) -> torch.Tensor:
    """Zero-pad the bottom and right of ``x`` (``(B, C, H, W)``, or ``(B, H, W, C)`` with
    ``channels_last``) by ``cover_pad`` so a (``kernel``, ``stride``, ``padding``) window sees
    every pixel. Returns ``x`` itself when nothing would be missed."""
    H, W = (x.shape[1], x.shape[2]) if channels_last else (x.shape[-2], x.shape[-1])
    ph, pw = cover_pad(H, kernel, stride, padding), cover_pad(W, kernel, stride, padding)
    if not ph and not pw:
        return x
    return F.pad(x, (0, 0, 0, pw, 0, ph) if channels_last else (0, pw, 0, ph))


def make_attn_pos(name: str, *, dim: int, num_heads: int, grid_size: tuple[int, int]) -> AttnPosEncoding | None:
    """Build the attention-internal encoding ``name`` (None for ``"none"`` or a grid encoding)."""
    from operators.registry import POS_ENCODINGS

    cls = POS_ENCODINGS.get(name)
    if getattr(cls, "placement", "grid") != "attention":
        return None
    return cls(dim=dim, num_heads=num_heads, grid_size=grid_size)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, N, heads*d) -> (B, heads, N, d)``."""
    B, N, C = x.shape
    return x.view(B, N, num_heads, C // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, heads, N, d) -> (B, N, heads*d)``."""
    B, h, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, h * d)
