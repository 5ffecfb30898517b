"""Latency measured on the target device, with a SQL cache.

``measure_latency(model_or_spec, device=..., batch=..., dtype=..., img_size=...)`` warms the
model up, times ``repeats`` forward passes under ``torch.inference_mode`` and returns the median
and the inter-quartile range. On CUDA each pass is timed with CUDA events after a
``synchronize``; on CPU with ``perf_counter`` at a fixed, recorded thread count. Every result
records the device name (CPU model or GPU name), torch version, dtype, batch, image size and
memory format.

``LatencyCache(url)`` stores results in an SQLAlchemy table keyed by (arch_id, device,
device_name, batch, dtype, img_size, memory_format, threads, torch_version): the key the issue
names plus what else changes the figure. Point it at the study store's URL to keep the cache in
the same database (SQLite or PostgreSQL); a repeat query is served from it without measuring.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evaluators.isolation import kept_state, measured_copy
from operators.errors import NasError, first_line
from search_space.genome import img_hw, img_size_value

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
CLOCKS = ("wall", "cpu")
DEFAULT_CACHE_URL = "sqlite:///studies/latency.db"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``/``"cuda"``/``"cuda:N"`` -> ``torch.device``; a clear ``NasError`` otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise NasError(f"unknown device {device!r}; use cpu or cuda (cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise NasError(f"device {device!r} is not supported for latency; use cpu or cuda")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NasError("device 'cuda' was requested but no CUDA GPU is available here "
                           "(torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NasError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return dev


def device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()


def resolve_dtype(dtype: str | torch.dtype) -> tuple[str, torch.dtype]:
    if isinstance(dtype, torch.dtype):
        names = {v: k for k, v in DTYPES.items()}
        if dtype not in names:
            raise NasError(f"dtype {dtype} is not supported; use one of {', '.join(DTYPES)}")
        return names[dtype], dtype
    if dtype not in DTYPES:
        raise NasError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return dtype, DTYPES[dtype]


@dataclass
class LatencyResult:
    """One latency measurement (milliseconds per forward pass of a batch).

    ``spread_ms`` is the inter-quartile range of the timed repeats; ``samples_ms`` keeps them.
    """

    median_ms: float
    spread_ms: float
    mean_ms: float
    min_ms: float
    repeats: int
    warmup: int
    device: str
    device_name: str
    batch: int
    dtype: str
    img_size: int | tuple[int, int]  # N for a square, (H, W) otherwise
    memory_format: str
    threads: int
    torch_version: str
    clock: str = "wall"
    arch_id: str | None = None
    cached: bool = False
    samples_ms: list[float] = field(default_factory=list)
    measured_at: str = ""

    @property
    def cv(self) -> float:
        """Coefficient of variation of the samples (std / mean)."""
        if len(self.samples_ms) < 2 or not self.mean_ms:
            return 0.0
        return statistics.stdev(self.samples_ms) / self.mean_ms

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _stats(samples: list[float]) -> tuple[float, float, float, float]:
    s = sorted(samples)
    if len(s) >= 4:
        q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive")
    else:
        q1, q3 = s[0], s[-1]
    return statistics.median(s), q3 - q1, statistics.fmean(s), s[0]


def time_callable(fn: Callable[[], Any], dev: torch.device, warmup: int, repeats: int,
                  min_warmup_s: float = 0.0, clock: str = "wall") -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` calls (and at least
    ``min_warmup_s`` seconds of warm-up). CUDA: events around each call, synchronised.
    CPU: ``clock="wall"`` (``perf_counter``) or ``"cpu"`` (the process's CPU time: immune to
    being descheduled on a shared machine; equals wall time at one uncontended thread)."""
    t_end = time.perf_counter() + min_warmup_s
    n = 0
    while n < warmup or time.perf_counter() < t_end:
        fn()
        n += 1
    samples: list[float] = []
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(float(start.elapsed_time(end)))
        return samples
    now = time.process_time if clock == "cpu" else time.perf_counter
    for _ in range(repeats):
        t0 = now()
        fn()
        samples.append((now() - t0) * 1e3)
    return samples


class _Threads:
    """Fix the CPU thread count for the duration of a measurement."""

    def __init__(self, n: int | None) -> None:
        self.n = n

    def __enter__(self) -> int:
        self.old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(int(self.n))
        return torch.get_num_threads()

    def __exit__(self, *exc: Any) -> None:
        torch.set_num_threads(self.old)


def measure_module(module: nn.Module, input_shape: tuple[int, ...], *, device: str | torch.device = "cpu",
                   batch: int = 1, dtype: str | torch.dtype = "float32", memory_format: str = "contiguous",
                   warmup: int = 5, repeats: int = 20, threads: int | None = None,
                   min_warmup_s: float = 0.0, clock: str = "wall") -> tuple[list[float], int]:
    """Time ``module`` on a random ``(batch, *input_shape)`` input; returns (samples_ms, threads).

    ``memory_format="channels_last"`` applies to 4-D ``(B, C, H, W)`` inputs and to the module.
    ``module`` itself is left as it was (a converted copy is timed when the dtype, device or
    memory format differ; its train/eval flags are restored).
    """
    dev = resolve_device(device)
    _, tdtype = resolve_dtype(dtype)
    if memory_format not in MEMORY_FORMATS:
        raise NasError(f"unknown memory format {memory_format!r}; use {' or '.join(MEMORY_FORMATS)}")
    if clock not in CLOCKS:
        raise NasError(f"unknown clock {clock!r}; use {' or '.join(CLOCKS)}")
    x = torch.randn(batch, *input_shape, device=dev, dtype=tdtype)
    fmt = memory_format if x.dim() == 4 else "contiguous"
    if fmt == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with kept_state(module):  # the caller's module keeps its dtype, device, format and modes
        work = measured_copy(module, dev, tdtype, fmt).eval()
        with _Threads(threads if dev.type == "cpu" else None) as n_threads, torch.inference_mode():
            samples = time_callable(lambda: work(x), dev, warmup, repeats, min_warmup_s, clock)
    return samples, n_threads


def measure_latency(
    model_or_spec: Any,
    *,
    device: str | torch.device = "cpu",
    batch: int = 1,
    dtype: str | torch.dtype = "float32",
    img_size: int | None = None,
    memory_format: str = "contiguous",
    warmup: int = 5,
    repeats: int = 20,
    threads: int | None = 1,
    cache: LatencyCache | None = None,
    arch_id: str | None = None,
    in_chans: int | None = None,
    clock: str = "wall",
) -> LatencyResult:
    """Median latency (ms per batch) of a model on ``device``.

    Args:
        model_or_spec: an ``nn.Module`` taking ``(B, C, H, W)``, or a genome (``ArchSpec``, its
            dict or JSON), which is built with ``build_model`` at ``img_size``.
        device: ``"cpu"`` or ``"cuda"`` (``NasError`` when no GPU is there).
        batch, dtype, img_size, memory_format: the measured configuration. ``img_size`` (``N``
            or ``(H, W)``) defaults to the genome's (224 for a plain module). The cache keeps
            square sizes only: a non-square size is measured every time.
        warmup, repeats: untimed and timed forward passes.
        threads: CPU threads used for the measurement (fixed, restored afterwards; recorded).
        clock: CPU only: ``"wall"`` time, or the process's ``"cpu"`` time (robust on a shared
            machine at ``threads=1``). CUDA always uses events.
        cache: look the result up first and store it after measuring (needs an arch_id: a
            genome's, a ``NasNet``'s, or the ``arch_id`` argument).
    """
    from search_space.genome import ArchSpec

    dev = resolve_device(device)
    dtype_name, _ = resolve_dtype(dtype)
    spec = None
    if isinstance(model_or_spec, (ArchSpec, dict, str)):
        from search_space.builder import spec_at

        spec = spec_at(model_or_spec, img_size)
    elif not isinstance(model_or_spec, nn.Module):
        raise NasError(f"measure_latency needs a model or a genome, got {type(model_or_spec).__name__}")
    elif isinstance(getattr(model_or_spec, "spec", None), ArchSpec):
        spec = model_or_spec.spec
    hw = img_hw(img_size or (spec.img_size if spec is not None else 224))
    size = img_size_value(hw)  # N for a square, (H, W) otherwise
    arch_id = arch_id or (spec.arch_id if spec is not None else None)
    chans = in_chans or (spec.in_chans if spec is not None else 3)
    n_threads = (threads or torch.get_num_threads()) if dev.type == "cpu" else 0
    key = dict(arch_id=arch_id, device=dev.type, device_name=device_name(dev), batch=batch, dtype=dtype_name,
               img_size=size, memory_format=memory_format, threads=n_threads, torch_version=torch.__version__,
               clock=clock if dev.type == "cpu" else "cuda_events")
    if not isinstance(size, int):  # the cache's img_size column holds a square's side
        cache = None
    if cache is not None and arch_id is not None:
        hit = cache.get(**key)
        if hit is not None:
            return hit
    if isinstance(model_or_spec, nn.Module):
        model = model_or_spec
    else:
        from search_space.builder import build_model

        model = build_model(spec)
    samples, used = measure_module(model, (chans, *hw), device=dev, batch=batch, dtype=dtype_name,
                                   memory_format=memory_format, warmup=warmup, repeats=repeats,
                                   threads=n_threads or None, clock=clock)
    med, iqr, mean, lo = _stats(samples)
    key["threads"] = used if dev.type == "cpu" else 0
    result = LatencyResult(med, iqr, mean, lo, repeats, warmup, samples_ms=samples,
                           measured_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **key)
    if cache is not None and arch_id is not None:
        cache.put(result)
    return result


class LatencyCache:
    """Latency results in an SQL table (SQLAlchemy), keyed by the measurement configuration.

    Args:
        url: SQLAlchemy database URL; the study store's URL keeps the cache next to the
            trials. Default ``sqlite:///studies/latency.db``.
        table: table name (prefix it to share a database between test runs).
    """

    def __init__(self, url: str | None = None, table: str = "nas_latency") -> None:
        import sqlalchemy as sa

        self.url = url or DEFAULT_CACHE_URL
        if self.url.startswith("sqlite:///") and not self.url.startswith("sqlite:///:memory:"):
            Path(self.url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        try:
            from evaluators.sql import fork_safe, normalize_url

            self.engine = fork_safe(sa.create_engine(normalize_url(self.url)))  # usable in forked workers
        except Exception as e:  # noqa: BLE001 - bad URL / missing driver
            raise NasError(f"cannot open latency cache {self.url!r}: {e}") from None
        meta = sa.MetaData()
        self.table = sa.Table(
            table, meta,
            sa.Column("arch_id", sa.String(64), primary_key=True),
            sa.Column("device", sa.String(16), primary_key=True),
            sa.Column("device_name", sa.String(200), primary_key=True),
            sa.Column("batch", sa.Integer, primary_key=True),
            sa.Column("dtype", sa.String(16), primary_key=True),
            sa.Column("img_size", sa.Integer, primary_key=True),
            sa.Column("memory_format", sa.String(16), primary_key=True),
            sa.Column("threads", sa.Integer, primary_key=True),
            sa.Column("torch_version", sa.String(64), primary_key=True),
            sa.Column("clock", sa.String(16), primary_key=True),
            sa.Column("median_ms", sa.Float, nullable=False),
            sa.Column("spread_ms", sa.Float, nullable=False),
            sa.Column("mean_ms", sa.Float),
            sa.Column("min_ms", sa.Float),
            sa.Column("repeats", sa.Integer),
            sa.Column("warmup", sa.Integer),
            sa.Column("samples_ms", sa.Text),
            sa.Column("measured_at", sa.String(40)),
        )
        try:
            meta.create_all(self.engine, checkfirst=True)
        except Exception as e:  # noqa: BLE001 - unreachable server, permissions, ...
            raise NasError(f"cannot create the latency table in {self.url!r}: {first_line(e)}") from None
        self.hits = 0
        self.misses = 0

    _KEY = ("arch_id", "device", "device_name", "batch", "dtype", "img_size", "memory_format", "threads",
            "torch_version", "clock")

    def get(self, **key: Any) -> LatencyResult | None:
        import sqlalchemy as sa

        cond = sa.and_(*[self.table.c[k] == key[k] for k in self._KEY])
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.table).where(cond)).mappings().first()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        d = dict(row)
        d["samples_ms"] = json.loads(d["samples_ms"] or "[]")
        return LatencyResult(cached=True, **d)

    def put(self, r: LatencyResult) -> None:
        import sqlalchemy as sa

        row = {k: getattr(r, k) for k in self._KEY}
        values = dict(median_ms=r.median_ms, spread_ms=r.spread_ms, mean_ms=r.mean_ms, min_ms=r.min_ms,
                      repeats=r.repeats, warmup=r.warmup, samples_ms=json.dumps(r.samples_ms),
                      measured_at=r.measured_at)
        with self.engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(self.table).values(**row, **values))
            except sa.exc.IntegrityError:  # measured concurrently or re-measured: keep the newest
                cond = sa.and_(*[self.table.c[k] == row[k] for k in self._KEY])
                conn.execute(sa.update(self.table).where(cond).values(**values))

    def __len__(self) -> int:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one())

    def drop(self) -> None:
        """Drop the table (tests clean up after themselves with it)."""
        self.table.drop(self.engine, checkfirst=True)
        self.engine.dispose()


def measure_parts(model: nn.Module, input_shape: tuple[int, ...], parts: list[str], *,
                  device: str | torch.device = "cpu", batch: int = 1, dtype: str | torch.dtype = "float32",
                  warmup: int = 3, repeats: int = 10, threads: int | None = 1,
                  clock: str = "wall") -> dict[str, float]:
    """Median ms of each named submodule, timed alone on the inputs it receives in a forward pass.

    The inputs are captured by forward pre-hooks during one pass of ``model`` on a random
    ``(batch, *input_shape)`` tensor; a part that is called more than once, or not at all, is
    left out. ``model`` itself is left as it was (see ``measure_module``).
    """
    dev = resolve_device(device)
    _, tdtype = resolve_dtype(dtype)
    with kept_state(model):
        return _measure_parts(measured_copy(model, dev, tdtype).eval(), input_shape, parts, dev, batch, tdtype,
                              warmup, repeats, threads, clock)


def _measure_parts(model: nn.Module, input_shape: tuple[int, ...], parts: list[str], dev: torch.device, batch: int,
                   tdtype: torch.dtype, warmup: int, repeats: int, threads: int | None,
                   clock: str) -> dict[str, float]:
    modules = dict(model.named_modules())
    captured: dict[str, list] = {}
    handles = []
    for name in parts:
        mod = modules.get(name)
        if mod is None:
            continue

        def hook(m: nn.Module, args: tuple, kwargs: dict, name: str = name) -> None:
            captured.setdefault(name, []).append((args, kwargs))

        handles.append(mod.register_forward_pre_hook(hook, with_kwargs=True))
    x = torch.randn(batch, *input_shape, device=dev, dtype=tdtype)
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    out: dict[str, float] = {}
    with _Threads(threads if dev.type == "cpu" else None), torch.inference_mode():
        for name, calls in captured.items():
            if len(calls) != 1:
                continue
            args, kwargs = calls[0]
            mod = modules[name]
            samples = time_callable(lambda m=mod, a=args, k=kwargs: m(*a, **k), dev, warmup, repeats, 0.0, clock)
            out[name] = _stats(samples)[0]
    return out
