"""One FLOP formula per op, shared by both counting engines (JIT trace and meta dispatch)."""

from __future__ import annotations

import inspect
import io
import re
import tokenize

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evaluators import flops
from evaluators.flops import count_flops, count_flops_meta


class _Attend(nn.Module):
    """SDPA on fixed shapes: q (B, Hq, L, E), k (B, Hk, S, E), v (B, Hk, S, Ev) from a (B, L, C) input."""

    def __init__(self, C: int, Hq: int, Hk: int, S: int, E: int, Ev: int) -> None:
        super().__init__()
        self.Hq, self.Hk, self.S, self.E, self.Ev = Hq, Hk, S, E, Ev
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        q = x.reshape(B, L, self.Hq, C // self.Hq).transpose(1, 2)[..., : self.E] * self.scale
        k = x.new_ones(B, self.Hk, self.S, self.E)
        v = x.new_ones(B, self.Hk, self.S, self.Ev)
        kw = {"enable_gqa": True} if self.Hk != self.Hq else {}
        return F.scaled_dot_product_attention(q, k, v, **kw)


CASES = {  # (B, L, C, Hq, Hk, S, E, Ev)
    "self": (2, 16, 32, 4, 4, 16, 8, 8),
    "cross, Ev != E": (1, 10, 24, 3, 3, 7, 8, 5),
    "grouped-query": (2, 9, 32, 4, 2, 9, 8, 8),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sdpa_by_hand_in_both_engines(case):
    B, L, C, Hq, Hk, S, E, Ev = CASES[case]
    if Hk != Hq and "enable_gqa" not in (F.scaled_dot_product_attention.__doc__ or ""):
        pytest.skip("this torch has no enable_gqa")
    by_hand = B * Hq * L * S * (E + Ev)  # Q K^T and P V
    assert flops.sdpa_macs((B, Hq, L, E), (B, Hk, S, E), (B, Hk, S, Ev)) == by_hand
    assert flops.sdpa_blhe_macs((B, L, Hq, E), (B, S, Hk, E), (B, S, Hk, Ev)) == by_hand
    jit = count_flops(_Attend(C, Hq, Hk, S, E, Ev), (L, C), batch=B)
    assert jit.by_operator.get("scaled_dot_product_attention") == by_hand, jit.by_operator
    with torch.device("meta"):
        m = _Attend(C, Hq, Hk, S, E, Ev)
    meta = count_flops_meta(m, (L, C), batch=B)
    # the module does no other multiply-accumulates (grouped-query SDPA reaches the meta
    # dispatcher decomposed into bmm's, which add up to the same)
    assert int(jit) == int(meta) == by_hand, (jit.by_operator, meta.by_operator)
    assert not jit.uncounted and not meta.uncounted


def test_norms_and_bmm_by_hand_in_both_engines():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(6)
            self.gn = nn.GroupNorm(2, 4, affine=False)

        def forward(self, x):  # (B, 4, 6)
            y = self.ln(x)
            z = self.gn(x.unsqueeze(-1)).squeeze(-1)
            return torch.bmm(y, z.transpose(1, 2))  # (B, 4, 6) @ (B, 6, 4)

    B = 3
    want = {"layer_norm": B * 4 * 6 * 5, "group_norm": B * 4 * 6 * 4, "bmm": B * 4 * 6 * 4}
    assert flops.layer_norm_macs(B * 24, True) == want["layer_norm"]
    assert flops.layer_norm_macs(B * 24, False) == want["group_norm"]
    assert flops.bmm_macs((B, 4, 6), (B, 6, 4)) == want["bmm"]
    jit = count_flops(M(), (4, 6), batch=B)
    with torch.device("meta"):
        m = M()
    meta = count_flops_meta(m, (4, 6), batch=B)
    assert int(jit) == int(meta) == sum(want.values()), (jit.by_operator, meta.by_operator)


def test_each_formula_is_written_once():
    """The attention product, the norm rules and the FFT estimate appear in the code (docstrings
    and comments aside) once each: in their formula function."""
    toks = tokenize.generate_tokens(io.StringIO(inspect.getsource(flops)).readline)
    code = " ".join(t.string for t in toks if t.type not in (tokenize.STRING, tokenize.COMMENT))
    assert len(re.findall(r"\+ Ev|shape \[ - 1 \] \+ \w+ \. shape \[ - 1 \]", code)) == 1, "attention"
    assert len(re.findall(r"\( 5 if \w+ else 4 \)|\( 5 if", code)) == 1, "layer norm"
    assert len(re.findall(r"\( 4 if", code)) == 1, "rms norm"
    assert len(re.findall(r"log2", code)) == 1, "fft"
