"""Decode image files once per machine: a file-backed ``uint8`` array every worker memory-maps.

A study that trains on image files (ImageFolder, a Hugging Face ``datasets`` folder) used to
decode every image in every worker process, on every start and resume. Here the images a study
uses -- its train/validation split and subset, chosen *before* decoding from the labels alone --
are decoded once, at the study's resolution, by a pool of processes, into

    <cache_dir>/<spec>-<files>/images.npy   uint8 (N, img_size, img_size, in_chans)
                               labels.npy   int64 (N,)
                               meta.json    n_train, class names, train mean/std, skipped files

``<spec>`` hashes the data spec (dataset, root, size, channels, split, subset, seed, columns) and
``<files>`` the files' identity (relative paths, sizes, mtimes in ns) and the chosen indices, so
touching, changing, adding or removing a file makes a new entry (the stale ones of the same spec
are removed) and an unchanged one is reused. Workers open ``images.npy`` with ``np.load(...,
mmap_mode="c")``: the pages live once in the OS page cache, shared by all processes on the
machine (copy-on-write: a worker that wrote into them would get private copies).

Writes are atomic: a build goes to a temporary folder renamed into place at the end, under a
per-spec ``filelock`` lock, so two workers starting together decode once (the second waits,
then maps the finished folder). A crashed build leaves only a temporary folder, removed by the
next build of that spec.

Decoding (``decode_image``): PIL, shorter side resized to ``img_size`` (bilinear), centre crop,
grey (``L``) for ``in_chans == 1`` else RGB. For JPEGs the cached path uses PIL's ``draft``
mode, which lets libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling) when that still leaves the
shorter side >= ``img_size``: pixel values differ by a few levels from a full-size decode, and
decoding is several times faster. Unreadable or truncated files are counted and skipped; one
warning names the first few.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1  # bump when the layout or the decoding changes: old entries are then never matched
CHUNK = 64  # images per task sent to a decoding process
NAMED = 3   # bad files named in the warning

Ref = str | bytes  # an image file's path, or an encoded image's bytes


@dataclass
class Images:
    """One source's images, listed (labels known) but not decoded.

    Args:
        labels: ``int64 (N,)`` class index of each image.
        read: indices -> their ``Ref`` (path or encoded bytes), called in the main process one
            chunk at a time (a Hugging Face table reads its bytes only for the chosen rows).
        describe: index -> how a warning names that image (its path, or ``row 12``).
    """

    labels: np.ndarray
    read: Callable[[Sequence[int]], list[Ref]]
    describe: Callable[[int], str]


@dataclass
class Decoded:
    """Decoded images of a split pair: ``x[:n_train]`` train, ``x[n_train:]`` validation.

    ``x`` is ``uint8 (N, S, S, C)`` (a copy-on-write memory map when it comes from the cache),
    ``y`` ``int64 (N,)``; ``mean``/``std`` the training part's per-channel statistics on the
    ``[0, 1]`` scale; ``skipped`` the unreadable files left out; ``path`` the cache entry or None.
    """

    x: np.ndarray
    y: np.ndarray
    n_train: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    skipped: int = 0
    path: Path | None = None


# --- decoding ------------------------------------------------------------------------------
def decode_image(src: Ref, size: int, chans: int, draft: bool = False) -> np.ndarray:
    """One image -> ``uint8 (size, size, chans)``: the shorter side resized to ``size``
    (bilinear), centre-cropped; grey for ``chans == 1``, else RGB (grey replicated when ``chans``
    is 3). ``draft``: let libjpeg decode JPEGs at a reduced scale still >= ``size``.
    Raises whatever PIL raises for an unreadable or truncated file (``OSError``, ...)."""
    from PIL import Image

    mode = "L" if chans == 1 else "RGB"
    with Image.open(src if isinstance(src, str) else io.BytesIO(src)) as im:
        if draft and im.format == "JPEG":
            im.draft(mode, (size, size))  # keeps both sides >= size
        im = im.convert(mode)
        w, h = im.size
        s = size / min(w, h)
        im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        a = np.asarray(im, dtype=np.uint8).reshape(size, size, -1)
    if a.shape[-1] != chans:
        if a.shape[-1] != 1:
            raise ValueError(f"cannot make {chans}-channel images from {mode}")
        a = np.repeat(a, chans, axis=-1)
    return a


def _decode_chunk(refs: list[Ref], size: int, chans: int, draft: bool) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode a chunk; bad images stay zero and are returned as ``(position, reason)``."""
    out = np.zeros((len(refs), size, size, chans), dtype=np.uint8)
    bad = []
    for i, ref in enumerate(refs):
        try:
            out[i] = decode_image(ref, size, chans, draft)
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError ...
            bad.append((i, f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"))
    return out, bad


def _chunks(jobs: Sequence[tuple[Images, np.ndarray]]) -> Iterator[tuple[int, Images, np.ndarray]]:
    pos = 0
    for images, idx in jobs:
        for s in range(0, len(idx), CHUNK):
            part = idx[s:s + CHUNK]
            yield pos, images, part
            pos += len(part)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _pool_context() -> Any:
    # forkserver: children start from a clean server process, not a fork of a (threaded, torch-
    # holding) worker; spawn where there is no forkserver.
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def decode_into(out: np.ndarray, jobs: Sequence[tuple[Images, np.ndarray]], size: int, chans: int, *,
                workers: int = 1, draft: bool = False, desc: str = "decoding") -> list[tuple[int, str]]:
    """Decode ``jobs`` (each ``(images, indices)``, concatenated in order) into ``out``
    (``uint8 (sum of lengths, size, size, chans)``), with ``workers`` processes (1: here) and a
    tqdm bar on a terminal. Returns the bad images as ``(position in out, "path: reason")``."""
    from tqdm.auto import tqdm

    total = sum(len(idx) for _, idx in jobs)
    bad: list[tuple[int, str]] = []

    def take(pos: int, images: Images, part: np.ndarray, res: tuple[np.ndarray, list]) -> None:
        arr, chunk_bad = res
        out[pos:pos + len(arr)] = arr
        bad.extend((pos + i, f"{images.describe(int(part[i]))}: {why}") for i, why in chunk_bad)
        bar.update(len(arr))

    serial = workers <= 1 or total <= CHUNK or mp.current_process().daemon  # a daemon has no children
    with tqdm(total=total, desc=desc, unit="img", disable=None, leave=False, dynamic_ncols=True) as bar:
        if serial:
            for pos, images, part in _chunks(jobs):
                take(pos, images, part, _decode_chunk(images.read(part), size, chans, draft))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as ex:
                pending: dict[Any, tuple[int, Images, np.ndarray]] = {}
                for pos, images, part in _chunks(jobs):
                    if len(pending) >= 3 * workers:  # bounded: a table's bytes are read as we go
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for f in done:
                            take(*pending.pop(f), f.result())
                    pending[ex.submit(_decode_chunk, images.read(part), size, chans, draft)] = (pos, images, part)
                for f in list(pending):
                    take(*pending.pop(f), f.result())
    return sorted(bad)


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std of ``uint8 (N, ..., C)`` on the ``[0, 1]`` scale, std
    floored at 1e-3; in chunks of ``chunk`` images, so a memory map is streamed, not copied."""
    c = x.shape[-1]
    s = np.zeros(c)
    ss = np.zeros(c)
    n = 0
    for i in range(0, len(x), chunk):
        f = np.asarray(x[i:i + chunk], dtype=np.float64).reshape(-1, c) / 255.0
        s += f.sum(0)
        ss += np.square(f).sum(0)
        n += len(f)
    mean = s / max(n, 1)
    var = (ss - n * mean ** 2) / max(n - 1, 1)
    std = np.maximum(np.sqrt(np.maximum(var, 0.0)), 1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def warn_skipped(bad: list[tuple[int, str]], total: int) -> None:
    """One warning line: how many images were skipped and the first ``NAMED`` of them."""
    if bad:
        first = "; ".join(why for _, why in bad[:NAMED])
        more = f" (and {len(bad) - NAMED} more)" if len(bad) > NAMED else ""
        warnings.warn(f"skipped {len(bad)} of {total} images that could not be decoded: {first}{more}",
                      stacklevel=3)


def _keep(bad: list[tuple[int, str]], total: int) -> np.ndarray:
    keep = np.ones(total, dtype=bool)
    keep[[p for p, _ in bad]] = False
    return keep


def decode(jobs: Sequence[tuple[Images, np.ndarray]], size: int, chans: int, *, workers: int = 1,
           draft: bool = False) -> Decoded:
    """Decode ``(train, val)`` jobs in memory (no cache); bad files skipped with one warning."""
    total = sum(len(idx) for _, idx in jobs)
    x = np.zeros((total, size, size, chans), dtype=np.uint8)
    bad = decode_into(x, jobs, size, chans, workers=workers, draft=draft)
    y = np.concatenate([images.labels[idx] for images, idx in jobs]).astype(np.int64)
    n_train = len(jobs[0][1])
    if bad:
        warn_skipped(bad, total)
        keep = _keep(bad, total)
        n_train = int(keep[:n_train].sum())
        x, y = x[keep], y[keep]
    mean, std = channel_stats(x[:n_train])
    return Decoded(x, y, n_train, mean, std, skipped=len(bad))


# --- the cache -----------------------------------------------------------------------------
def file_identity(paths: Sequence[str | Path], base: str | Path) -> list[tuple[str, int, int]]:
    """``(path relative to base, size in bytes, mtime in ns)`` of each file, for a cache key."""
    prefix = os.path.join(str(base), "")
    out = []
    for p in map(str, paths):
        st = os.stat(p)
        rel = p[len(prefix):] if p.startswith(prefix) else os.path.relpath(p, base)  # relpath: slow
        out.append((rel, st.st_size, st.st_mtime_ns))
    return out


def _digest(obj: Any) -> hashlib.blake2b:
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(obj, sort_keys=True, default=str).encode())
    return h


def cache_key(spec: dict[str, Any], identity: Sequence[tuple[str, int, int]],
              jobs: Sequence[tuple[Images, np.ndarray]]) -> tuple[str, str]:
    """``(spec hash, files hash)``: the entry's folder is ``<spec>-<files>``. The files hash
    covers the files' identity and the chosen indices and their labels."""
    spec_h = _digest({"format": FORMAT, **spec}).hexdigest()[:16]
    h = _digest(list(identity))
    for images, idx in jobs:
        h.update(np.ascontiguousarray(idx, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(images.labels[idx], dtype=np.int64).tobytes())
    return spec_h, h.hexdigest()[:16]


def _open(entry: Path) -> Decoded:
    meta = json.loads((entry / "meta.json").read_text())
    return Decoded(x=np.load(entry / "images.npy", mmap_mode="c"), y=np.load(entry / "labels.npy"),
                   n_train=int(meta["n_train"]), mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                   skipped=int(meta["skipped"]), path=entry)


def cached(jobs: Sequence[tuple[Images, np.ndarray]], size: int, chans: int, *, spec: dict[str, Any],
           identity: Sequence[tuple[str, int, int]], cache_dir: str | Path, workers: int | None = None,
           draft: bool = True) -> Decoded:
    """The decoded images of ``jobs`` from ``cache_dir``, decoding them first if no entry
    matches ``spec`` and ``identity`` (see the module docstring). ``workers``: decoding
    processes (None: this machine's usable cores). Raises ``OSError`` if ``cache_dir`` cannot be
    written."""
    from filelock import FileLock, Timeout

    root = Path(cache_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    spec_h, files_h = cache_key(spec, identity, jobs)
    entry = root / f"{spec_h}-{files_h}"
    if (entry / "meta.json").is_file():
        return _open(entry)
    lock = FileLock(str(root / f"{spec_h}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:  # another process is decoding this spec: wait for it, then use its entry
        print(f"waiting for another process decoding into {entry} ...", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        if (entry / "meta.json").is_file():
            return _open(entry)
        for old in root.glob(f".{spec_h}-*.tmp*"):  # a crashed build's leftovers
            shutil.rmtree(old, ignore_errors=True)
        tmp = root / f".{entry.name}.tmp{os.getpid()}"
        tmp.mkdir()
        total = sum(len(idx) for _, idx in jobs)
        x = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                      shape=(total, size, size, chans))
        bad = decode_into(x, jobs, size, chans, workers=workers or usable_cores(), draft=draft,
                          desc=f"decoding {total} images into {root.name}/")
        y = np.concatenate([images.labels[idx] for images, idx in jobs]).astype(np.int64)
        n_train = len(jobs[0][1])
        if bad:
            warn_skipped(bad, total)
            keep = _keep(bad, total)
            n_train = int(keep[:n_train].sum())
            good = np.lib.format.open_memmap(tmp / "kept.npy", mode="w+", dtype=np.uint8,
                                             shape=(int(keep.sum()), size, size, chans))
            for i, j in enumerate(np.flatnonzero(keep)):  # rare path: row by row, no RAM copy
                good[i] = x[j]
            good.flush()
            del x, good
            os.replace(tmp / "kept.npy", tmp / "images.npy")
            x = np.load(tmp / "images.npy", mmap_mode="r")
            y = y[keep]
        else:
            x.flush()
        mean, std = channel_stats(x[:n_train])
        del x
        np.save(tmp / "labels.npy", y)
        meta = {"format": FORMAT, "spec": spec, "n_train": n_train, "mean": mean, "std": std,
                "skipped": len(bad), "skipped_named": [why for _, why in bad[:NAMED]]}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        os.rename(tmp, entry)  # the commit: an entry exists whole or not at all
        for old in root.glob(f"{spec_h}-*"):  # the same spec over files that have changed since
            if old != entry:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        lock.release()
    return _open(entry)
