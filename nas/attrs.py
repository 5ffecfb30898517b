"""The study-store schema: names of the attributes every trial and study carries.

Optuna's RDB storage is the source of truth. Search writes these; the front, the dashboard
and export read them, so any front can be rebuilt from the store alone.
"""

from __future__ import annotations

from typing import Any

# --- trial user attributes --------------------------------------------------------------
GENOME = "genome"                  # ArchSpec canonical JSON (str)
ARCH_ID = "arch_id"                # sha1 of GENOME (str)
SUMMARY = "summary"                # ArchSpec.summary() one-liner (str)
FLOPS = "flops"                    # multiply-accumulates at the study's img_size (int)
PARAMS = "params"                  # parameter count (int)
PARAMS_PER_STAGE = "params_per_stage"  # list[int]
FLOPS_PER_STAGE = "flops_per_stage"    # list[int]
LATENCY_MS = "latency_ms"          # median latency (float), when measured
LATENCY_SPREAD_MS = "latency_spread_ms"  # interquartile range (float)
LATENCY_DEVICE = "latency_device"  # e.g. "cpu: Intel Xeon ... (2 threads)" (str)
LATENCY_SETTING = "latency_setting"  # {"batch": int, "dtype": str, "img_size": int}
LATENCY_SOURCE = "latency_source"  # "measured" or "predicted" ([latency] predict = true decided the cap)
LATENCY_PREDICTOR_VERSION = "latency_predictor_version"  # evaluators.latency_predictor.PREDICTOR_VERSION (int)
LATENCY_INTERVAL = "latency_interval"  # the predictor's [lo, hi] ms when it predicted (list[float])
ACCURACY = "accuracy"              # final validation top-1 in [0, 1] (float)
ACCURACY_PER_EPOCH = "accuracy_per_epoch"  # list[float]
LOSS_PER_EPOCH = "loss_per_epoch"  # list[float]
EPOCHS = "epochs"                  # epochs actually trained (int): < budget when stopped early
EPOCH_BUDGET = "epoch_budget"      # epochs the recipe asked for (int)
TRAIN_TIME_S = "train_time_s"      # wall time of proxy training (float)
ZERO_COST = "zero_cost"            # {"naswot": float, ...} when a zero-cost proxy scored it
FEASIBLE = "feasible"              # all constraints met (bool)
CONSTRAINTS = "constraints"        # {"max_flops": value - limit, ...}: <= 0 means satisfied
REUSED_FROM = "reused_from"        # trial number whose result was reused for the same arch_id
FAILURE = "failure_reason"         # one line, for FAILED/PRUNED trials (str)
DEVICE = "device"                  # device the trial ran on (str)
CODE_VERSION = "code_version"      # package version + git commit when known (str)
WEIGHTS = "weights_path"           # proxy-trained state dict file (safetensors/torch), when saved; `nas export --weights`
STAGE = "stage"                    # "search" or "confirmed" (supernet studies: stand-alone proxy training of a front member)
CONFIRMS = "confirms"              # the search-stage trial number a confirmed trial trained stand-alone (int)
SUPERNET_ACCURACY = "supernet_accuracy"  # validation top-1 with weights inherited from the supernet (float)
PAUSED_AT = "paused_at_rung"       # MO-ASHA: the rung (epochs) where this candidate waits, its values are that rung's (int)
RESUMES = "resumes"                # MO-ASHA: the paused trial whose training state this trial continued (int)
START_EPOCH = "start_epoch"        # MO-ASHA: epochs already trained when this trial started (int; trained = epochs - this)

# --- study user attributes --------------------------------------------------------------
STUDY_SPEC = "study_spec"          # the StudySpec as JSON (str)
STUDY_OBJECTIVES = "objectives"    # [{"name": "accuracy", "direction": "maximize"}, ...]
STUDY_REFERENCE_POINT = "reference_point"  # hypervolume reference point, objective order
STUDY_PRESETS = "presets"          # {preset: {"flops", "params", "summary", "genome", "accuracy"?}} references
STUDY_SUPERNET = "supernet"        # supernet training cost {train_time_s, steps, paths, strategy, device, ...}
WORKER = "worker"                  # "host:pid" of the process that ran the trial (str)


def proxy_result_attrs(res: Any) -> dict[str, Any]:
    """The trial attributes an ``evaluators.ProxyResult`` fills: its neutral fields
    (accuracy per epoch, epochs, wall time, ...) under this schema's names."""
    out: dict[str, Any] = {
        ACCURACY_PER_EPOCH: res.accuracy_per_epoch,
        LOSS_PER_EPOCH: res.loss_per_epoch,
        EPOCHS: res.epochs,
        EPOCH_BUDGET: res.epoch_budget,
        TRAIN_TIME_S: res.wall_time_s,
        DEVICE: res.device,
    }
    if res.accuracy is not None:
        out[ACCURACY] = res.accuracy
    if res.reason:
        out[FAILURE] = res.reason
    return out
