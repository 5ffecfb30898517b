"""Time to the first trial on an ImageFolder of JPEGs: the decoded-image cache vs. today's loader.

A generated ImageFolder (``--images`` JPEGs of 256 to 500 px, 10 classes: smooth colour fields,
filled ellipses and rectangles, grain; written once under ``--data-dir`` and reused) is loaded
at ``--img-size`` by ``--workers`` worker processes started together, as ``nas search
--workers N`` starts them, in three ways in the same run:

* ``current``: ``load_dataset(spec)`` without a cache: every worker decodes every image itself,
  full-size decodes, one by one (the per-worker path a study used before the cache);
* ``cold``: ``load_dataset(spec, cache_dir=...)`` on an empty cache: one worker decodes (a pool of
  ``--decode-workers`` processes, JPEG draft mode) into the cache, the other waits on its lock
  and maps the result;
* ``warm``: the same with the cache built (a resume, or more workers joining).

"Data ready" is measured inside each worker from the ``load_dataset`` call until every page of
the images has been read once (one byte per 4 KiB: a memory map is otherwise read lazily; a
trial's own pass over its data costs the same in every mode); the
interpreter's start and the ``torch`` import are the same for every mode and are reported apart
(``import_s``: torch, torchvision -- which a search worker imports with timm anyway -- and
PIL). A mode's start time is its slowest worker's. Memory: each worker reads its own
``/proc/self/smaps_rollup`` (RSS, PSS, USS = private clean + dirty) while every worker holds its
data, and the PSS of the cache file's mapping in ``/proc/self/smaps``: summed over workers it
is the number of copies of the data on the machine times its size (``data_copies``).

    python benchmarks/data_loading.py [--quick] [--out FILE] [--images N] [--img-size S]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

CLASSES = 10


# --- the generated ImageFolder -------------------------------------------------------------
def _make_image(i: int, root: str) -> None:
    """Image ``i``: a smooth colour field (bicubic from a 4-8 px grid) with class-tinted
    shapes and fine grain, 256-500 px per side, JPEG quality 90."""
    from PIL import Image, ImageDraw

    r = np.random.default_rng(i)
    c = i % CLASSES
    w, h = (int(v) for v in r.integers(256, 501, size=2))
    grid = r.integers(0, 256, size=(int(r.integers(4, 9)), int(r.integers(4, 9)), 3), dtype=np.uint8)
    im = Image.fromarray(grid).resize((w, h), Image.BICUBIC)
    d = ImageDraw.Draw(im)
    tint = np.array([(37 * c) % 256, (91 * c) % 256, (53 * c) % 256])
    for _ in range(int(r.integers(3, 8))):
        x0, y0 = int(r.integers(0, w)), int(r.integers(0, h))
        box = [x0, y0, x0 + int(r.integers(20, 160)), y0 + int(r.integers(20, 160))]
        col = tuple(int(v) for v in (tint + r.integers(0, 64, 3)) % 256)
        (d.ellipse if r.random() < 0.5 else d.rectangle)(box, fill=col)
    a = np.asarray(im, dtype=np.int16) + r.integers(-6, 7, size=(h, w, 1), dtype=np.int16)
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(
        os.path.join(root, f"class{c}", f"{i:06d}.jpg"), "JPEG", quality=90)


def _make_chunk(ids: list[int], root: str) -> None:
    for i in ids:
        _make_image(i, root)


def generate(root: Path, n: int, procs: int) -> float:
    """Write the ImageFolder once (a ``.complete`` marker says it is whole); seconds spent."""
    marker = root / ".complete"
    if marker.is_file() and marker.read_text().strip() == str(n):
        return 0.0
    from tqdm.auto import tqdm

    shutil.rmtree(root, ignore_errors=True)
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True)
    t = time.perf_counter()
    chunks = [list(range(s, min(n, s + 100))) for s in range(0, n, 100)]
    with ProcessPoolExecutor(procs, mp_context=mp.get_context("spawn")) as ex, \
            tqdm(total=n, desc=f"generating {n} JPEGs", unit="img") as bar:
        for ids, _ in zip(chunks, ex.map(_make_chunk, chunks, [str(root)] * len(chunks))):
            bar.update(len(ids))
    marker.write_text(str(n))
    return time.perf_counter() - t


# --- one worker process --------------------------------------------------------------------
def _memory(mapped: str | None) -> dict[str, float]:
    """This process's RSS / PSS / USS in MB (smaps_rollup) and the PSS / RSS of the mapping of
    file ``mapped`` (smaps), where /proc has them."""
    out: dict[str, float] = {}
    try:
        kb = {}
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
            k, v = line.split(":", 1)
            kb[k] = int(v.split()[0])
        out = {"rss_mb": kb["Rss"] / 1024, "pss_mb": kb["Pss"] / 1024,
               "uss_mb": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024}
        if mapped:
            cur = False
            pss = rss = 0
            for line in Path("/proc/self/smaps").read_text().splitlines():
                head = line.split()
                if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:  # a mapping's header
                    cur = line.endswith(mapped)
                elif cur and line.startswith("Pss:"):
                    pss += int(head[1])
                elif cur and line.startswith("Rss:"):
                    rss += int(head[1])
            out.update(data_map_pss_mb=pss / 1024, data_map_rss_mb=rss / 1024)
    except (OSError, KeyError, ValueError):
        pass
    return out


def _worker(mode: str, spec_kw: dict[str, Any], cache_dir: str, decode_workers: int | None,
            barrier: Any, queue: Any) -> None:
    t = time.perf_counter()
    import torch
    import torchvision.datasets.folder  # noqa: F401 - a search worker has it (timm imports torchvision)
    from PIL import Image  # noqa: F401

    torch.set_num_threads(1)
    from evaluators.data import DataSpec, load_dataset

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    if mode == "current":
        data = load_dataset(DataSpec(**spec_kw))
    else:
        data = load_dataset(DataSpec(**spec_kw), cache_dir=cache_dir, workers=decode_workers)
    load_s = time.perf_counter() - t
    checksum = sum(int(x.reshape(-1)[::4096].sum()) for x in (data.train_x, data.val_x))  # every 4 KiB page
    ready_s = time.perf_counter() - t
    barrier.wait()  # all workers hold their data now
    mapped = None
    if mode != "current":
        entries = [p for p in Path(cache_dir).iterdir() if p.is_dir() and not p.name.startswith(".")]
        mapped = str(entries[0] / "images.npy") if len(entries) == 1 else None
    queue.put({"mode": mode, "pid": os.getpid(), "import_s": import_s, "load_s": load_s, "ready_s": ready_s,
               "images": len(data.train_y) + len(data.val_y), "checksum": checksum,
               "data_mb": (data.train_x.numel() + data.val_x.numel()) / 2**20, **_memory(mapped)})
    barrier.wait()  # stay alive until every worker has measured


def run_mode(mode: str, workers: int, spec_kw: dict[str, Any], cache_dir: Path,
             decode_workers: int | None) -> dict[str, Any]:
    """Start ``workers`` processes together; their results and the mode's start time."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    t = time.perf_counter()
    procs = [ctx.Process(target=_worker, args=(mode, spec_kw, str(cache_dir), decode_workers, barrier, queue))
             for _ in range(workers)]
    for p in procs:
        p.start()
    res = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a {mode} worker failed")
    if len({r["checksum"] for r in res}) != 1:
        raise RuntimeError(f"{mode} workers loaded different data")
    wall = time.perf_counter() - t
    return {"mode": mode, "start_s": max(r["ready_s"] for r in res), "wall_s": wall, "workers": res}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 images, one warm start (< 2 min on an idle machine)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/data_loading.json"))
    ap.add_argument("--images", type=int, default=None, help="JPEGs in the generated folder (20,000)")
    ap.add_argument("--img-size", type=int, default=32, help="the study's resolution")
    ap.add_argument("--workers", type=int, default=2, help="worker processes loading the data together")
    ap.add_argument("--decode-workers", type=int, default=None, help="cache decoding processes (all cores)")
    ap.add_argument("--reps", type=int, default=1, help="repetitions of current + cold (median)")
    ap.add_argument("--warm-reps", type=int, default=None, help="warm starts after each cold one (3; quick: 1)")
    ap.add_argument("--data-dir", default=None,
                    help="where the generated folder is kept (default: <tmp>/attention-nas-bench)")
    args = ap.parse_args(argv)
    n = args.images or (2000 if args.quick else 20000)
    reps, warm_reps = args.reps, args.warm_reps or (1 if args.quick else 3)
    base = Path(args.data_dir or Path(tempfile.gettempdir()) / "attention-nas-bench")
    folder = base / f"imagefolder-{n}"
    gen_s = generate(folder, n, procs=max(2, os.cpu_count() or 1))
    spec_kw = {"dataset": "imagefolder", "root": str(folder), "img_size": args.img_size, "seed": 0}
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{n} JPEGs in {folder} (generated in {gen_s:.0f} s); {args.workers} workers, img {args.img_size}; "
          f"{uptime}", flush=True)

    runs: dict[str, list[dict[str, Any]]] = {"current": [], "cold": [], "warm": []}
    cache = base / f"cache-{n}-{os.getpid()}"
    try:
        for rep in range(reps):
            for mode in ("current", "cold") + ("warm",) * warm_reps:
                if mode == "cold":
                    shutil.rmtree(cache, ignore_errors=True)
                r = run_mode(mode, args.workers, spec_kw, cache, args.decode_workers)
                runs[mode].append(r)
                print(f"rep {rep} {mode:<8} start {r['start_s']:7.2f} s  "
                      + "  ".join(f"[rss {w.get('rss_mb', 0):.0f} pss {w.get('pss_mb', 0):.0f} "
                                  f"uss {w.get('uss_mb', 0):.0f} MB]" for w in r["workers"]), flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    def med(mode: str, key: str = "start_s") -> float:
        return statistics.median(r[key] for r in runs[mode])

    def per_worker(mode: str, key: str) -> float | None:
        vals = [w[key] for r in runs[mode] for w in r["workers"] if key in w]
        return statistics.median(vals) if vals else None

    last_warm = runs["warm"][-1]["workers"]
    data_mb = last_warm[0]["data_mb"]
    map_pss = [w.get("data_map_pss_mb") for w in last_warm]
    current, cold, warm = med("current"), med("cold"), med("warm")
    summary = {
        "warm_start_s": warm,
        "cold_start_s": cold,
        "current_start_s": current,
        "cold_speedup_vs_current": current / cold,
        "warm_speedup_vs_current": current / warm,
        "decode_img_s": n / cold,
        "current_img_s_per_worker": n / current,
        "rss_per_worker_mb": per_worker("warm", "rss_mb"),
        "pss_per_worker_mb": per_worker("warm", "pss_mb"),
        "uss_per_worker_mb": per_worker("warm", "uss_mb"),
        "current_rss_per_worker_mb": per_worker("current", "rss_mb"),
        "current_pss_per_worker_mb": per_worker("current", "pss_mb"),
        "current_uss_per_worker_mb": per_worker("current", "uss_mb"),
        "data_mb": data_mb,
        "data_copies": (sum(map_pss) / data_mb) if all(v is not None for v in map_pss) else None,
        "import_s": per_worker("warm", "import_s"),
        "images": n, "img_size": args.img_size, "workers": args.workers,
        "goal_warm_start_met": warm <= 2.0,
        "goal_cold_speedup_met": current / cold >= 3.0,
        "uptime": uptime,
    }
    from benchmarks._common import write_json

    rows = [{k: v for k, v in r.items()} for mode in runs for r in runs[mode]]
    path = write_json(args.out, summary, rows, load_avg_1m=os.getloadavg()[0],
                      settings={"images": n, "img_size": args.img_size, "workers": args.workers, "reps": reps, "warm_reps": warm_reps,
                                "decode_workers": args.decode_workers, "quick": args.quick,
                                "data_dir": str(folder), "generate_s": gen_s})
    for k in ("warm_start_s", "cold_start_s", "current_start_s", "cold_speedup_vs_current", "decode_img_s",
              "rss_per_worker_mb", "pss_per_worker_mb", "uss_per_worker_mb", "current_uss_per_worker_mb",
              "data_mb", "data_copies"):
        v = summary[k]
        print(f"{k:<28}{v:10.2f}" if isinstance(v, float) else f"{k:<28}{v}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
