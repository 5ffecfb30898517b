"""Test helpers other packages' tests use: a tiny finished study in a store, fast.

``make_tiny_study(storage_url, name)`` runs a real (Optuna, NSGA-II) search of a small space
with the deterministic ``synthetic`` evaluator, so it takes a few seconds and needs no data;
every trial carries the full attribute schema of ``nas.attrs`` (genome, arch_id, FLOPs,
params, accuracy per epoch, code version, ...). ``proxy=True`` trains 1 epoch on 64 digits
instead (real accuracies; slower).
"""

from __future__ import annotations

import os
from typing import Any

# the PostgreSQL server the suite's multi-worker tests use (they skip without one)
TEST_POSTGRES = os.environ.get("NAS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

TINY_STUDY = """
[study]
name = "{name}"
storage = "{storage}"
sampler = "{sampler}"
trials = {trials}
seed = {seed}

[data]
dataset = "digits"
img_size = 16
subset = 64

[space]
shapes = ["isotropic", "pyramid"]
stems = [{{ kind = "patchify", patch_size = [2, 4] }}]
pos = ["none", "sincos"]
stages = [2, 2]
depth = [1, 1]
iso_depth = [1, 2]
width = {{ low = 16, high = 32, step = 16 }}
mlp_ratio = [2.0]
downsample = ["conv"]

[space.mixers.attention]
num_heads = [1, 2]

[space.mixers.pool]

[space.mixers.sepconv]
kernel_size = [3]

[objectives]
names = {objectives}

[constraints]
max_flops = "{max_flops}"

[evaluator]
kind = "{kind}"
epochs = {epochs}
batch_size = 32

[presets]
names = ["deit_tiny"]
"""


def tiny_study_text(name: str = "tiny", storage: str = "sqlite:///:memory:", trials: int = 8, seed: int = 0,
                    sampler: str = "nsga2", kind: str = "synthetic", epochs: int = 2,
                    objectives: tuple[str, ...] = ("accuracy", "flops"), max_flops: str = "2M") -> str:
    """The TOML of a tiny study (see the module docstring)."""
    objs = "[" + ", ".join(f'"{o}"' for o in objectives) + "]"
    return TINY_STUDY.format(name=name, storage=storage, trials=trials, seed=seed, sampler=sampler, kind=kind,
                             epochs=epochs, objectives=objs, max_flops=max_flops)


def one_genome_study_text(name: str = "one", storage: str = "sqlite:///:memory:", **kw: Any) -> str:
    """The TOML of a tiny study whose space holds exactly one genome (an isotropic, one-block,
    16-wide ``pool`` model with a patch-4 stem and no position encoding): every trial proposes
    it, whatever the sampler (reuse, claims, the backends' conformance suite)."""
    text = tiny_study_text(name, storage, **kw)
    return (text.replace('shapes = ["isotropic", "pyramid"]', 'shapes = ["isotropic"]')
            .replace("patch_size = [2, 4]", "patch_size = [4]").replace('pos = ["none", "sincos"]', 'pos = ["none"]')
            .replace("iso_depth = [1, 2]", "iso_depth = [1, 1]")
            .replace("width = { low = 16, high = 32, step = 16 }", "width = [16, 16]")
            .replace("[space.mixers.attention]\nnum_heads = [1, 2]\n", "")
            .replace("[space.mixers.sepconv]\nkernel_size = [3]\n", ""))


def make_tiny_study(storage_url: str, name: str = "tiny", trials: int = 8, seed: int = 0, proxy: bool = False,
                    **kw: Any) -> Any:
    """Run a tiny finished study into ``storage_url``; returns its ``StudySpec``.

    ``proxy=False`` (default): synthetic accuracies, a few seconds. ``proxy=True``: one epoch of
    real proxy training on 64 digits per trial.
    """
    from nas.backends.optuna_backend import run_worker
    from nas.commands.search import prepare
    from nas.study import parse_study

    text = tiny_study_text(name, storage_url, trials, seed, kind="proxy" if proxy else "synthetic",
                           epochs=1 if proxy else 2, **kw)
    spec = parse_study(text, f"<{name}>")
    prepare(spec, heartbeat_s=None)
    run_worker(spec, trials)
    return spec


def postgres_reachable(url: str = TEST_POSTGRES) -> bool:
    """Whether a PostgreSQL server answers at ``url`` within 3 s."""
    import sqlalchemy

    from nas.store import normalize_url

    try:
        eng = sqlalchemy.create_engine(normalize_url(url), connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


def run_worker_processes(spec: Any, target: int, n: int = 3, timeout_s: float = 300) -> list[int | None]:
    """Run ``n`` spawned Optuna worker processes on ``spec``'s store until it holds ``target``
    trials (``nas.backends.optuna_backend``); returns their exit codes (None: still running at
    ``timeout_s``, then killed)."""
    import multiprocessing as mp

    from nas.backends.optuna_backend import _worker_entry

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_entry, args=(spec, target, i, None, None)) for i in range(n)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=timeout_s)
        return [p.exitcode for p in procs]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
