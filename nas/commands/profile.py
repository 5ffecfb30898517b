"""``nas profile TARGET``: FLOPs (MACs), parameters and optionally latency, per stage and total.

TARGET is ``preset:NAME`` (a genome from ``search_space.PRESETS``), ``timm:MODEL`` (any timm
model, no weights downloaded) or a path to a genome JSON file. Ops the counter saw but could not
count are always listed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "profile", help="FLOPs, parameters and latency of a preset, a timm model or a genome",
        description="Print FLOPs (multiply-accumulates, attention included), parameters and, with --latency, "
                    "latency per stage and in total. TARGET: preset:NAME | timm:MODEL | path/to/genome.json")
    p.add_argument("target", metavar="TARGET", help="preset:NAME, timm:MODEL or a genome JSON file")
    p.add_argument("--img-size", type=img_size_arg, default=None, metavar="N|HxW",
                   help="input size in pixels: N (a square) or HxW, e.g. 32x48 (default: the target's, else 224)")
    p.add_argument("--device", default="cpu", help="cpu or cuda, for --latency (default cpu)")
    p.add_argument("--latency", action="store_true", help="also measure latency per stage and in total")
    p.add_argument("--batch", type=int, default=1, help="batch size for --latency (default 1)")
    p.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16, for --latency")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for --latency (fixed; default 1)")
    p.add_argument("--repeats", type=int, default=20, help="timed repeats for --latency (default 20)")
    p.add_argument("--train-memory", type=int, metavar="BATCH", default=None,
                   help="also estimate the peak memory of a training step at this batch size")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def img_size_arg(text: str) -> int | tuple[int, int]:
    """``--img-size``: ``N`` (a square) or ``HxW`` (e.g. ``32x48``) -> ``N`` or ``(H, W)``."""
    parts = text.lower().split("x")
    try:
        hw = [int(p) for p in parts]
    except ValueError:
        hw = []
    if len(hw) not in (1, 2) or min(hw) <= 0:
        raise argparse.ArgumentTypeError(f"--img-size must be N or HxW with positive sides (e.g. 224 or 32x48), "
                                         f"got {text!r}")
    return hw[0] if len(hw) == 1 or hw[0] == hw[1] else (hw[0], hw[1])


@dataclass
class Target:
    """A resolved profiling target. ``img_size`` is ``N`` for a square, ``(H, W)`` otherwise."""

    label: str
    kind: str  # preset | timm | genome
    model: Any
    spec: Any  # ArchSpec or None
    img_size: int | tuple[int, int]
    in_chans: int

    @property
    def hw(self) -> tuple[int, int]:
        from search_space.genome import img_hw

        return img_hw(self.img_size)


def _timm_model(name: str, img_size: int | tuple[int, int] | None) -> Any:
    import timm

    from nas.errors import NasError

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise NasError(f"unknown timm model {name!r}{hint}")
    if img_size is not None:
        try:
            return timm.create_model(name, pretrained=False, img_size=img_size)
        except TypeError:  # the model has no img_size argument: it adapts to the input
            pass
        except Exception:  # noqa: BLE001 - built at the default size; the count will say where it fails
            pass
    try:
        return timm.create_model(name, pretrained=False)
    except Exception as e:  # noqa: BLE001
        raise NasError(f"timm could not build {name!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def load_genome_file(path: Path) -> Any:
    from nas.errors import NasError
    from search_space.genome import ArchSpec

    try:
        text = path.read_text()
    except OSError as e:
        raise NasError(f"cannot read genome file {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise NasError(f"malformed genome file {path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(data, dict) and "genome" in data and "stages" not in data:  # e.g. an export's metadata
        data = data["genome"]
    try:
        return ArchSpec.from_dict(data)
    except (ValueError, TypeError) as e:
        raise NasError(f"malformed genome file {path}: {e}") from None


def resolve_target(target: str, img_size: int | tuple[int, int] | None = None, build: bool = True) -> Target:
    """``preset:NAME`` | ``timm:MODEL`` | a genome JSON path -> model (and genome when there is one).

    ``img_size`` is ``N`` or ``(H, W)``; a genome is rebuilt at it, a timm model is created with
    it where the model takes an ``img_size``."""
    from nas.errors import NasError
    from search_space.genome import img_size_value

    if target.startswith("preset:"):
        from search_space.presets import get_preset

        spec = get_preset(target.split(":", 1)[1])
        kind = "preset"
    elif target.startswith("timm:"):
        name = target.split(":", 1)[1]
        model = _timm_model(name, img_size)
        cfg_size = tuple(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))[-2:])
        size = img_size_value(img_size or cfg_size)
        return Target(target, "timm", model, None, size, int(getattr(model, "in_chans", 3) or 3))
    else:
        path = Path(target)
        if not path.exists():
            raise NasError(f"TARGET {target!r} is neither preset:NAME, timm:MODEL nor an existing genome JSON file")
        if path.is_dir():
            raise NasError(f"TARGET {target!r} is a directory; give a genome JSON file")
        spec = load_genome_file(path)
        kind = "genome"
    if img_size is not None and img_size_value(img_size) != spec.img_size:
        spec = spec.replace(img_size=img_size_value(img_size))
    try:
        spec.validate()
    except ValueError as e:
        raise NasError(f"{target}: {e}") from None
    model = None
    if build:
        from search_space.builder import build_model

        model = build_model(spec)
    return Target(target, kind, model, spec, spec.img_size, spec.in_chans)


def _parts(model: Any) -> list[str]:
    from evaluators.params import params_by_part

    return list(params_by_part(model).by_part)


def run(args: argparse.Namespace) -> int:
    import torch

    from evaluators.flops import count_flops
    from evaluators.latency import resolve_device
    from evaluators.params import params_by_part
    from nas.errors import NasError
    from search_space.genome import img_hw, img_size_value

    if args.img_size is not None and min(img_hw(args.img_size)) <= 0:
        raise NasError(f"--img-size must be positive, got {args.img_size}")
    if args.latency:
        resolve_device(args.device)  # fail before building anything
    if args.batch < 1:
        raise NasError(f"--batch must be >= 1, got {args.batch}")
    tgt = resolve_target(args.target, args.img_size)
    model = tgt.model.eval()
    with torch.no_grad():
        flops = count_flops(model, (tgt.in_chans, *tgt.hw))
    params = params_by_part(model)
    parts = list(params.by_part)  # "<root>": parameters held by the model itself (cls token, ...)
    rows = []
    for part in parts:
        f = flops.module(part)
        if part == "head" and tgt.kind != "timm":
            f += flops.module("norm")
        if f or params.by_part.get(part, 0) or part in ("stem", "head"):  # skip dropout/identity children
            rows.append(dict(part=part, flops=f, params=params.by_part.get(part, 0)))
    if tgt.kind != "timm":  # NasNet's final norm is reported with the head
        rows = [r for r in rows if r["part"] != "norm"]
        norm_params = params.by_part.get("norm", 0)
        for r in rows:
            if r["part"] == "head":
                r["params"] += norm_params
    out: dict[str, Any] = dict(
        target=tgt.label, kind=tgt.kind, img_size=img_size_value(tgt.hw), flops=int(flops.total), gflops=flops.total / 1e9,
        params=int(params.total), mparams=params.total / 1e6, uncounted_ops=flops.uncounted,
        by_stage=rows, arch_id=tgt.spec.arch_id if tgt.spec is not None else None,
    )
    if tgt.spec is not None:
        out["genome"] = tgt.spec.summary()
    if args.latency:
        from evaluators.latency import measure_latency, measure_parts

        lat = measure_latency(model, device=args.device, batch=args.batch, dtype=args.dtype, img_size=tgt.img_size,
                              threads=args.threads, repeats=args.repeats, in_chans=tgt.in_chans,
                              arch_id=out["arch_id"])
        per_part = measure_parts(model, (tgt.in_chans, *tgt.hw),
                                 [r["part"] for r in rows], device=args.device, batch=args.batch, dtype=args.dtype,
                                 threads=args.threads, repeats=max(5, args.repeats // 2))
        for r in rows:
            r["latency_ms"] = per_part.get(r["part"])
        out["latency_ms"] = lat.median_ms
        out["latency"] = {k: v for k, v in lat.to_dict().items() if k != "samples_ms"}
    if args.train_memory is not None:
        from evaluators.memory import training_memory

        mem = training_memory(tgt.spec if tgt.spec is not None else model, args.train_memory, img_size=tgt.img_size)
        out["train_memory"] = mem.to_dict()
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    _print_table(out, args)
    return 0


def _print_table(out: dict[str, Any], args: argparse.Namespace) -> None:
    w = sys.stdout.write
    h, wd = (out["img_size"], out["img_size"]) if isinstance(out["img_size"], int) else out["img_size"]
    w(f"{out['target']}  ({out['kind']}, {h}x{wd})\n")
    if out.get("genome"):
        w(f"  {out['genome']}\n")
    lat = "latency" in out
    head = f"{'part':<14}{'GMACs':>10}{'share':>8}{'params (M)':>12}" + (f"{'latency ms':>12}" if lat else "")
    w(head + "\n" + "-" * len(head) + "\n")
    for r in out["by_stage"]:
        share = r["flops"] / out["flops"] if out["flops"] else 0.0
        line = f"{r['part']:<14}{r['flops'] / 1e9:>10.4f}{share:>8.1%}{r['params'] / 1e6:>12.3f}"
        if lat:
            v = r.get("latency_ms")
            line += f"{v:>12.2f}" if v is not None else f"{'-':>12}"
        w(line + "\n")
    w("-" * len(head) + "\n")
    line = f"{'total':<14}{out['flops'] / 1e9:>10.4f}{'':>8}{out['params'] / 1e6:>12.3f}"
    if lat:
        line += f"{out['latency_ms']:>12.2f}"
    w(line + "\n")
    if lat:
        L = out["latency"]
        w(f"latency: median {L['median_ms']:.2f} ms, IQR {L['spread_ms']:.2f} ms over {L['repeats']} runs; "
          f"{L['device']} ({L['device_name']}), batch {L['batch']}, {L['dtype']}, {L['threads']} thread(s), "
          f"torch {L['torch_version']}; per-part times are measured alone\n")
    if "train_memory" in out:
        m = out["train_memory"]
        w(f"training step memory at batch {m['batch']}: {m['peak_mib']:.0f} MiB ({m['method']})\n")
    if out["uncounted_ops"]:
        ops = ", ".join(f"{k} x{v}" for k, v in out["uncounted_ops"].items())
        w(f"uncounted ops (seen, no FLOP formula; their cost is NOT in the total): {ops}\n")
    else:
        w("uncounted ops: none (every op is counted or is element-wise/pooling/data movement)\n")
