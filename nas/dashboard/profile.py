"""Per-stage costs of one genome for the dashboard's architecture view, through the evaluators.

Nothing is counted or timed here: FLOPs (MACs) and parameters per stage are
``evaluators.screen`` (weight-free, the counts the search stores), per-stage latency is
``evaluators.latency.measure_parts`` (each stage timed alone on the input it receives).
"""

from __future__ import annotations


def stage_costs(genome: str, img_size: int | None = None) -> tuple[list[int], list[int]]:
    """Per-stage MACs and parameters of a genome (JSON) at ``img_size`` (default: its own),
    from ``evaluators.screen``. Raises ``ValueError`` for an invalid genome."""
    from evaluators.screening import screen

    costs = screen(genome, img_size)
    return list(costs.flops_per_stage), list(costs.params_per_stage)


def stage_latency(genome: str, img_size: int | None = None, *, repeats: int = 5, warmup: int = 2,
                  threads: int = 1) -> list[float]:
    """Median CPU latency (ms, batch 1, float32) of each stage of a genome (JSON), measured on
    demand with ``evaluators.latency.measure_parts``; a stage that could not be timed is None."""
    import torch

    from evaluators.latency import measure_parts
    from search_space import ArchSpec, build_model

    spec = ArchSpec.from_json(genome)
    size = img_size or spec.img_size
    with torch.no_grad():
        model = build_model(spec.replace(img_size=size) if size != spec.img_size else spec)
    parts = [f"stages.{i}" for i in range(len(model.stages))]
    times = measure_parts(model, (spec.in_chans, size, size), parts, device="cpu", batch=1, dtype="float32",
                          warmup=warmup, repeats=repeats, threads=threads)
    return [times.get(p) for p in parts]
