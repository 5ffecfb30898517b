"""LSH bucket attention with shared queries and keys.

Paper: Kitaev et al. 2020, "Reformer: The Efficient Transformer". Queries double as keys
(keys are the L2-normalised queries); random rotations hash each token into one of
``n_buckets`` buckets (``argmax([xR; -xR])``). Tokens are sorted by (bucket, position), cut
into chunks of ``bucket_size`` and each chunk attends to itself and the previous chunk; a
token attends to itself only when nothing else is available. ``n_hashes`` rounds run in
parallel and are combined with weights ``softmax(logsumexp of each round's logits)``.
Cost: O(R N c C) time and memory for the chunked attention (N tokens, C channels, chunk size
c, R rounds), O(R N n_b C / 2) for hashing into n_b buckets (by default n_b ~ N / c, so hashing
grows as N^2 C / c like the paper's) and an O(R N log N) sort.

Vectorised: sorting and chunking are gathers, all chunks and rounds are one batched attention.
With one round the chunks go through the fused SDPA kernel; with several rounds the softmax is
explicit because combining rounds needs each round's log-normaliser, which SDPA does not
return. The rotations are a fixed buffer drawn from a seeded generator at construction (not
saved in checkpoints), so the hashing is deterministic and reproducible; the paper redraws
them every step. Repeated pairs across rounds are not
down-weighted (the paper's duplicate correction is left out).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer, attend, merge_heads, split_heads
from operators.registry import MIXERS
from operators.window_attention import NEG_INF

_ROTATION_SEED = 20200113  # any constant: keeps the hashing reproducible across processes


@MIXERS.register("lsh")
class LSHAttention(TokenMixer):
    """Reformer attention: hash to buckets, sort, attend within chunks (+ the previous chunk)."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        bucket_size: int = 16,
        n_hashes: int = 1,
        n_buckets: int = 0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads, self.bucket_size, self.n_hashes = num_heads, bucket_size, n_hashes
        n_tokens = grid_size[0] * grid_size[1]
        # 0 = the paper's choice: about one bucket per chunk of the build grid (always even)
        self.n_buckets = n_buckets or max(2, 2 * round(n_tokens / (2 * bucket_size)))
        self.qk = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        # fixed rotations, a function of the architecture only: not saved, so checkpoints load at any size
        gen = torch.Generator().manual_seed(_ROTATION_SEED + block_index)
        rotations = torch.randn(num_heads, n_hashes, dim // num_heads, self.n_buckets // 2, generator=gen)
        self.register_buffer("rotations", rotations.to(torch.empty(0).device), persistent=False)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        c, r, nb = knobs.get("bucket_size", 16), knobs.get("n_hashes", 1), knobs.get("n_buckets", 0)
        if c < 1:
            return f"bucket_size={c} must be at least 1"
        if r < 1:
            return f"n_hashes={r} must be at least 1"
        if nb < 0 or nb % 2:
            return f"n_buckets={nb} must be an even number of buckets, or 0 to derive it from bucket_size"
        return super().check(dim, grid_size, knobs)

    def _hash(self, qk: torch.Tensor) -> torch.Tensor:
        """``(B, h, N, d) -> (B, h, R, N)`` bucket ids from the random rotations."""
        rot = torch.einsum("bhnd,hrdk->bhrnk", qk, self.rotations.to(qk.dtype))
        return torch.cat([rot, -rot], dim=-1).argmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        N, c, R, h = H * W, self.bucket_size, self.n_hashes, self.num_heads
        pad = (-N) % c
        Np, nC, d = N + pad, (N + pad) // c, C // h
        qk = split_heads(self.qk(x).view(B, N, C), h)  # (B, h, N, d)
        v = split_heads(self.v(x).view(B, N, C), h)
        buckets = F.pad(self._hash(qk), (0, pad), value=self.n_buckets)  # padding sorts last: (B, h, R, Np)
        order = buckets * Np + torch.arange(Np, device=x.device)  # unique keys: sort by bucket, then position
        perm = order.argsort(dim=-1)  # (B, h, R, Np) position of each sorted slot
        undo = perm.argsort(dim=-1)

        def sort(t: torch.Tensor) -> torch.Tensor:  # (B, h, N, d) -> (B, h, R, nC, c, d)
            t = F.pad(t, (0, 0, 0, pad)).unsqueeze(2).expand(B, h, R, Np, d)
            return t.gather(3, perm.unsqueeze(-1).expand(B, h, R, Np, d)).view(B, h, R, nC, c, d)

        def with_previous(t: torch.Tensor) -> torch.Tensor:  # chunk + the chunk before it, on dim 4
            return torch.cat([t, t.roll(1, dims=3)], dim=4)

        q = sort(qk)  # (B, h, R, nC, c, d)
        k = with_previous(F.normalize(q, dim=-1))  # (B, h, R, nC, 2c, d)
        vs = with_previous(sort(v))
        qpos = perm.view(B, h, R, nC, c)
        kpos = with_previous(qpos)  # (B, h, R, nC, 2c)
        blocked = (qpos[..., :, None] == kpos[..., None, :]) | (kpos >= N)[..., None, :]
        mask = torch.zeros(blocked.shape, dtype=q.dtype, device=x.device).masked_fill(blocked, NEG_INF)
        if R == 1:
            out = attend(q.flatten(0, 3), k.flatten(0, 3), vs.flatten(0, 3), mask=mask.flatten(0, 3))
            out = out.view(B, h, R, Np, d)
        else:  # explicit softmax: the per-round log-normaliser weighs the rounds
            logits = (q * d**-0.5) @ k.transpose(-2, -1) + mask  # (B, h, R, nC, c, 2c)
            lse = logits.logsumexp(dim=-1, keepdim=True)
            out = ((logits - lse).exp() @ vs).view(B, h, R, Np, d)
            lse = lse.view(B, h, R, Np).gather(3, undo)  # (B, h, R, Np), original order
        out = out.gather(3, undo.unsqueeze(-1).expand(B, h, R, Np, d))  # back to the original order
        if R > 1:
            out = (out * lse.softmax(dim=2).unsqueeze(-1)).sum(dim=2)  # (B, h, Np, d)
        else:
            out = out.squeeze(2)
        out = merge_heads(out[:, :, :N])  # (B, N, C)
        return self.proj(out).view(B, H, W, C)
