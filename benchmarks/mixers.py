"""Every registered token mixer against global attention: time, peak memory and FLOPs.

For each shape (full run: B=8 at 56x56 with C=64, and B=8 at 14x14 with C=256) every mixer in
``operators.MIXERS`` is built for that grid (so fixed-grid mixers such as Linformer get their
own grid) and measured:

* forward+backward time: median over repeats. Each round times the global-attention baseline
  of that shape, then every mixer once, so the baseline is interleaved with the mixers in the
  same run; the ratio is ``median(mixer) / median(attention)``.
* peak memory of one forward+backward: the largest running sum of the CPU allocator's
  allocations minus frees recorded by ``torch.profiler`` (``profile_memory=True``; the
  ``Allocation`` events of the profiler's event tree, in time order). It counts exactly the
  tensor memory allocated during the step (activations saved for backward, temporaries,
  gradients), not the input or the weights, and it does not depend on the C allocator's
  caching or on what the rest of the process holds, unlike RSS.
* FLOPs (multiply-accumulates) of one forward pass with ``evaluators.count_flops``, which
  counts ``scaled_dot_product_attention`` (plain fvcore does not).

It also shows that global attention goes through the fused SDPA kernel: the aten kernel that
ran is recorded, and its peak memory is compared with an explicit ``softmax(QK^T / sqrt(d)) V``
of the same shape and weights, which materialises the ``N x N`` attention matrix.

Rows ``attention+<pos>`` measure global attention with each attention-internal position
encoding it accepts (``--no-pos`` skips them): bias encodings hand SDPA an ``N x N`` mask.

Every mixer with a ``num_heads`` knob uses ``C / 32`` heads (head width 32, as in Swin), the
baseline too; all other knobs keep their defaults unless the mixer's ``check`` rejects them for
the shape, in which case its ``contract_knobs(grid)`` are used. A mixer that fails to build or
run is reported with the reason.

    .venv/bin/python benchmarks/mixers.py [--quick] [--out benchmarks/results/mixers.json]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]  # _common, and this checkout's packages
from _common import machine_info, write_json  # noqa: E402

from operators import MIXERS  # noqa: E402  (importing operators fills the registries)
from operators.attention import GlobalAttention  # noqa: E402

BASELINE = "attention"
DEBUG = False
EXPLICIT = "explicit_softmax_attention"


@dataclass(frozen=True)
class Shape:
    batch: int
    h: int
    w: int
    dim: int

    @property
    def name(self) -> str:
        return f"B{self.batch}_{self.h}x{self.w}_C{self.dim}"

    @property
    def tuple(self) -> tuple[int, int, int, int]:
        return (self.batch, self.h, self.w, self.dim)


FULL_SHAPES = (Shape(8, 56, 56, 64), Shape(8, 14, 14, 256))
QUICK_SHAPES = (Shape(2, 28, 28, 64), Shape(2, 14, 14, 128))


class ExplicitAttention(GlobalAttention):
    """Global attention written out as ``softmax(q k^T / sqrt(d)) v``: the N x N matrix exists."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, d)
        attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, heads, N, N)
        out = attn.softmax(dim=-1) @ v  # (B, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, H * W, C)).view(B, H, W, C)


class ImageLayout(nn.Module):
    """``(B, C, H, W) -> mixer on (B, H, W, C) -> (B, C, H, W)``, for the image-shaped FLOP counter."""

    def __init__(self, mixer: nn.Module) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def knobs_for(cls: type, shape: Shape) -> dict[str, Any]:
    """Head width 32 where the mixer has heads; the contract's knobs if the defaults don't fit."""
    grid = (shape.h, shape.w)
    knobs: dict[str, Any] = {}
    if "num_heads" in cls.knobs():
        knobs["num_heads"] = max(shape.dim // 32, 1)
    if cls.check(shape.dim, grid, knobs) is None:
        return knobs
    if hasattr(cls, "contract_knobs"):
        alt = {**knobs, **cls.contract_knobs(grid)}
        if cls.check(shape.dim, grid, alt) is None:
            return alt
    raise ValueError(cls.check(shape.dim, grid, knobs))


def build(name: str, shape: Shape) -> tuple[nn.Module, dict[str, Any]]:
    """``name`` is a registered mixer, ``EXPLICIT``, or ``"attention+<pos>"`` (global attention
    with an attention-internal position encoding)."""
    mixer, _, pos = name.partition("+")
    cls = ExplicitAttention if name == EXPLICIT else MIXERS.get(mixer)
    knobs = knobs_for(GlobalAttention if name == EXPLICIT else cls, shape)
    torch.manual_seed(0)
    m = cls(shape.dim, grid_size=(shape.h, shape.w), pos_encoding=pos or "none", **knobs)
    return m, ({**knobs, "pos_encoding": pos} if pos else knobs)


def step(m: nn.Module, x: torch.Tensor, g: torch.Tensor) -> None:
    """One forward+backward with a fixed output gradient."""
    m(x).backward(g)


def timed_step(m: nn.Module, x: torch.Tensor, g: torch.Tensor) -> float:
    x.grad = None
    m.zero_grad(set_to_none=True)
    t = time.perf_counter()
    step(m, x, g)
    return time.perf_counter() - t


def peak_memory(m: nn.Module, x: torch.Tensor, g: torch.Tensor) -> tuple[int, list[str]]:
    """Peak bytes allocated during one forward+backward (profiler allocation events) and the
    names of the aten SDPA kernels that ran."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    x.grad = None
    m.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(m, x, g)
    allocs, kernels, stack = [], set(), list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        ev = stack.pop()
        stack.extend(ev.children)
        if ev.tag == _EventType.Allocation and ev.extra_fields.device.type == "cpu":
            allocs.append((ev.start_time_ns, ev.extra_fields.alloc_size))
        elif "scaled_dot_product" in ev.name:
            kernels.add(ev.name)
    live = peak = 0
    for _, size in sorted(allocs, key=lambda a: a[0]):
        live += size
        peak = max(peak, live)
    return peak, sorted(kernels)


def count_macs(m: nn.Module, shape: Shape) -> tuple[int, dict[str, int]]:
    """Forward multiply-accumulates and the ops the counter saw but could not count.

    ``evaluators.count_flops`` when this checkout has it; otherwise plain fvcore with an SDPA
    handle (``B * heads * L * S * (E + Ev)``), so attention is never counted as zero."""
    try:
        from evaluators.flops import count_flops
    except ImportError:
        return _fvcore_macs(m, shape)
    fc = count_flops(ImageLayout(m), input_size=(shape.dim, shape.h, shape.w), batch=shape.batch)
    return int(fc), dict(fc.uncounted)


def _fvcore_macs(m: nn.Module, shape: Shape) -> tuple[int, dict[str, int]]:
    from fvcore.nn import FlopCountAnalysis

    def sdpa(inputs: list[Any], outputs: list[Any]) -> int:
        q, k, v = (i.type().sizes() for i in inputs[:3])
        return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])

    was_training = m.training
    m.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fca = FlopCountAnalysis(m, torch.randn(*shape.tuple)).set_op_handle(
                "aten::scaled_dot_product_attention", sdpa)
            fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(fca.total()), {}
    finally:
        m.train(was_training)


def _reason(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:300]


def bench_shape(shape: Shape, names: list[str], repeats: int, slow_s: float, log=print) -> list[dict[str, Any]]:
    """Measure every name at one shape; the baseline is timed once per round, interleaved."""
    torch.manual_seed(0)
    x = torch.randn(*shape.tuple, requires_grad=True)
    g = torch.randn(*shape.tuple)
    rows: dict[str, dict[str, Any]] = {}
    modules: dict[str, nn.Module] = {}
    for name in [BASELINE, EXPLICIT, *[n for n in names if n != BASELINE]]:
        row = rows[name] = {"mixer": name, "shape": shape.name, "status": "ok"}
        try:
            m, row["knobs"] = build(name, shape)
            row["params"] = sum(p.numel() for p in m.parameters())
            row["warmup_s"] = timed_step(m, x, g)  # warm-up (and the first sign of failure)
            modules[name] = m
        except Exception as e:  # noqa: BLE001  (a failing mixer is reported, not dropped)
            row.update(status="failed", reason=_reason(e))
            log(f"  {name}: FAILED {row['reason']}")
            if DEBUG:
                traceback.print_exc()
    times: dict[str, list[float]] = {n: [] for n in modules}
    for r in range(repeats):
        for name, m in modules.items():
            if r > 0 and rows[name]["warmup_s"] > slow_s and name != BASELINE:
                continue  # very slow mixers are timed once (their ratio is far from 1 anyway)
            try:
                times[name].append(timed_step(m, x, g))
            except Exception as e:  # noqa: BLE001
                rows[name].update(status="failed", reason=_reason(e))
        log(f"  round {r + 1}/{repeats} done")
    for name, m in modules.items():
        row = rows[name]
        if times[name]:
            row["time_ms"] = 1e3 * statistics.median(times[name])
            row["time_ms_min"], row["time_ms_max"] = 1e3 * min(times[name]), 1e3 * max(times[name])
            row["repeats"] = len(times[name])
        try:
            row["peak_mem_bytes"], row["sdpa_kernels"] = peak_memory(m, x, g)
        except Exception as e:  # noqa: BLE001
            row["mem_error"] = _reason(e)
        try:
            row["macs"], uncounted = count_macs(m, shape)
            if uncounted:
                row["uncounted_ops"] = uncounted
        except Exception as e:  # noqa: BLE001
            row["flops_error"] = _reason(e)
        log(f"  {name}: {row.get('time_ms', float('nan')):.1f} ms, "
            f"{row.get('peak_mem_bytes', 0) / 2**20:.1f} MiB, {row.get('macs', 0) / 1e9:.3f} GMACs")
    base = rows[BASELINE]
    for row in rows.values():
        for key, ratio in (("time_ms", "time_ratio"), ("peak_mem_bytes", "mem_ratio"), ("macs", "flops_ratio")):
            if row.get(key) is not None and base.get(key):
                row[ratio] = row[key] / base[key]
    return list(rows.values())


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table, one line per (shape, mixer)."""
    head = ("| shape | mixer | fwd+bwd ms | x attn | peak MiB | x attn | GMACs | x attn | knobs / status |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---|")
    lines = [head]
    for r in rows:
        note = r.get("reason") or ", ".join(f"{k}={v}" for k, v in (r.get("knobs") or {}).items())
        if r.get("uncounted_ops"):
            note += f" (uncounted: {', '.join(r['uncounted_ops'])})"
        if r.get("flops_error"):
            note += f" (FLOPs failed: {r['flops_error']})"
        if r.get("repeats") == 1:
            note += " (timed once: slow)"
        mem = r.get("peak_mem_bytes")
        lines.append(
            f"| {r['shape']} | {r['mixer']}{'' if r['status'] == 'ok' else ' (FAILED)'} "
            f"| {_fmt(r.get('time_ms'), '.1f')} | {_fmt(r.get('time_ratio'), '.2f')} "
            f"| {_fmt(mem / 2**20 if mem is not None else None, '.1f')} | {_fmt(r.get('mem_ratio'), '.2f')} "
            f"| {_fmt(r['macs'] / 1e9 if r.get('macs') is not None else None, '.3f')} "
            f"| {_fmt(r.get('flops_ratio'), '.2f')} | {note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes and few repeats (under two minutes)")
    ap.add_argument("--out", default="benchmarks/results/mixers.json", help="JSON results file")
    ap.add_argument("--repeats", type=int, default=None, help="timing rounds (default 5, quick 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: less noise)")
    ap.add_argument("--mixers", default="", help="comma-separated subset (default: every registered mixer)")
    ap.add_argument("--no-pos", action="store_true",
                    help="skip the global-attention + position-encoding rows")
    ap.add_argument("--debug", action="store_true", help="print tracebacks of failing mixers")
    args = ap.parse_args(argv)
    global DEBUG
    DEBUG = args.debug
    torch.set_num_threads(args.threads)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    repeats = args.repeats or (3 if args.quick else 5)
    slow_s = 2.0 if args.quick else 20.0
    names = [n.strip() for n in args.mixers.split(",") if n.strip()] or MIXERS.names()
    if not args.no_pos:  # the cost of each attention-internal encoding on global attention
        names += [f"{BASELINE}+{p}" for p in sorted(MIXERS.get(BASELINE).supported_pos)]
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for shape in shapes:
        print(f"shape {shape.name}: {len(names)} mixers, {repeats} rounds", flush=True)
        rows += bench_shape(shape, names, repeats, slow_s, log=lambda s: print(s, flush=True))
    print(table(rows))

    big = shapes[0].name
    by = {(r["shape"], r["mixer"]): r for r in rows}
    fused, explicit = by[(big, BASELINE)], by[(big, EXPLICIT)]
    mixers = {r["mixer"] for r in rows if r["mixer"] != EXPLICIT and "+" not in r["mixer"]}
    failed = sorted({f"{r['mixer']}@{r['shape']}" for r in rows if r["status"] != "ok"})
    summary: dict[str, Any] = {
        "mixers_benchmarked": len(mixers),
        "failed": failed,
        "fused_kernel": ", ".join(fused.get("sdpa_kernels", [])),
        "fused_vs_explicit_memory_ratio": (fused.get("peak_mem_bytes") or 0) / explicit["peak_mem_bytes"]
        if explicit.get("peak_mem_bytes") else None,
        "fused_vs_explicit_time_ratio": explicit.get("time_ratio") and 1 / explicit["time_ratio"],
        "fused_shape": big,
    }
    for shape in shapes:
        base = by[(shape.name, BASELINE)]
        summary[f"attention_ms_{shape.name}"] = base.get("time_ms")
        summary[f"attention_peak_mib_{shape.name}"] = (base.get("peak_mem_bytes") or 0) / 2**20
        summary[f"attention_gmacs_{shape.name}"] = (base.get("macs") or 0) / 1e9
        ok = [r for r in rows if r["shape"] == shape.name and r.get("time_ratio") and r["mixer"] != BASELINE]
        if ok:
            fastest = min(ok, key=lambda r: r["time_ratio"])
            summary[f"fastest_{shape.name}"] = f"{fastest['mixer']} ({fastest['time_ratio']:.2f}x attention)"
    summary["wall_s"] = time.perf_counter() - t0
    print("\nsummary:")
    for k, v in summary.items():
        print(f"  {k}: {v}")
    info = machine_info("cpu")
    path = write_json(args.out, summary, rows, machine=info, quick=args.quick, repeats=repeats,
                      shapes=[s.name for s in shapes], table_markdown=table(rows),
                      command="benchmarks/mixers.py" + (" --quick" if args.quick else ""))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
