"""The dashboard's data layer (no drawing here), in one namespace for the app, the report and scripts.

It is split along its seams; each name lives in one module:

- ``nas.dashboard.store``: the read-only store reader (``Store``, ``StudyInfo``, ``StoreError``);
- ``nas.dashboard.views``: records -> view models (rows, fronts, hypervolume over trials, time
  and training compute, composition, architecture detail);
- ``nas.dashboard.importance``: fANOVA importance over genome features;
- ``nas.dashboard.profile``: per-stage costs and latency, through ``evaluators``;
- ``nas.dashboard.references``: presets and timm models on the study's axes, costs cached on disk.
"""

from __future__ import annotations

from nas.dashboard.importance import genome_features, param_importance
from nas.dashboard.profile import stage_costs, stage_latency
from nas.dashboard.references import (
    DEFAULT_REFERENCE_COUNT,
    DEFAULT_TIMM_REFERENCES,
    cached_reference_count,
    cached_reference_points,
    default_references,
    reference_cache_path,
    reference_candidates,
    reference_cost,
    reference_points,
    study_budget_flops,
    warm_references,
)
from nas.dashboard.store import (
    Store,
    StoreError,
    StudyInfo,
    _as_dt,
    _first_line,
    load_trials_optuna,
    read_only_url,
    redact,
)
from nas.dashboard.views import (
    AXES,
    AXIS_LABELS,
    COMPOSITION_FACETS,
    StudyData,
    architecture,
    composition,
    feasibility,
    front_2d,
    genome_facets,
    hypervolume_history,
    hypervolume_over_compute,
    load_study_data,
    metric,
    reference_point,
    trial_rows,
)

__all__ = [
    "AXES", "AXIS_LABELS", "COMPOSITION_FACETS", "DEFAULT_REFERENCE_COUNT", "DEFAULT_TIMM_REFERENCES", "Store", "StoreError", "StudyData",
    "StudyInfo", "architecture", "cached_reference_count", "cached_reference_points", "composition", "default_references", "feasibility",
    "front_2d", "genome_facets", "genome_features", "hypervolume_history", "hypervolume_over_compute", "load_study_data", "load_trials_optuna", "metric",
    "param_importance", "read_only_url", "redact", "reference_cache_path", "reference_candidates", "reference_cost", "reference_point",
    "reference_points", "study_budget_flops", "warm_references",
    "stage_costs", "stage_latency", "trial_rows", "_as_dt", "_first_line",
]
