from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from evaluators.data import DataSpec, load_dataset
from evaluators.proxy import DeviceBatches, ProxyConfig, ProxyTrainer, StopTraining, cosine_lr
from nas import attrs
from nas.errors import NasError
from search_space import build_model
from search_space.genome import ArchSpec, HeadSpec, StageSpec, StemSpec


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataSpec(img_size=16, subset=256, val_size=128))


def tiny_spec(mixer: str = "attention", knobs=None) -> ArchSpec:
    knobs = {"num_heads": 2} if knobs is None else knobs
    return ArchSpec(stem=StemSpec("patchify", 4),
                    stages=(StageSpec(depth=1, dim=32, mixer=mixer, mixer_knobs=knobs, pos="abs"),),
                    num_classes=10, img_size=16)


def tiny_model(seed: int = 0, mixer: str = "attention", knobs=None) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(tiny_spec(mixer, knobs))


class Faulty(nn.Module):
    """Wraps a model; on the ``at``-th training forward call it returns NaN logits or raises."""

    def __init__(self, inner: nn.Module, at: int, fault: str, sleep: float = 0.0) -> None:
        super().__init__()
        self.inner, self.at, self.fault, self.sleep, self.calls = inner, at, fault, sleep, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sleep:
            time.sleep(self.sleep)
        if self.training:
            self.calls += 1
            if self.calls >= self.at and self.fault == "nan":
                return self.inner(x) * float("nan")
            if self.calls == self.at and self.fault == "oom":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.inner(x)


CFG = ProxyConfig(epochs=2, batch_size=64, device="cpu", count_flops=False)


def test_same_seed_same_result_to_the_last_digit(data):
    a = ProxyTrainer(CFG).fit(tiny_model(), data)
    b = ProxyTrainer(CFG).fit(tiny_model(), data)
    c = ProxyTrainer(ProxyConfig(epochs=2, batch_size=64, device="cpu", count_flops=False, seed=1)).fit(
        tiny_model(), data)
    assert a.status == "ok" and a.epochs == 2 and a.steps == 8 and a.images == 512
    assert a.accuracy == b.accuracy and a.loss_per_epoch == b.loss_per_epoch
    assert a.train_loss_per_epoch == b.train_loss_per_epoch
    assert a.train_loss_per_epoch != c.train_loss_per_epoch  # the seed drives order + augmentation
    assert a.images_per_s > 0 and a.wall_time_s >= a.train_time_s > 0


def test_learns_digits():
    full = load_dataset(DataSpec(img_size=16))
    cfg = ProxyConfig(epochs=4, batch_size=64, device="cpu", count_flops=False)
    r = ProxyTrainer(cfg).fit(tiny_model(mixer="sepconv", knobs={}), full)
    assert r.status == "ok" and len(r.accuracy_per_epoch) == 4
    assert r.accuracy > 0.35, r.accuracy_per_epoch  # chance is 0.1
    assert r.train_loss_per_epoch[-1] < r.train_loss_per_epoch[0]


def test_flops_and_attrs(data):
    r = ProxyTrainer(ProxyConfig(steps=3, batch_size=32, device="cpu")).fit(tiny_model(), data)
    assert r.steps == 3 and r.epochs == 1 and r.epoch_budget == 1 and r.images == 96
    assert r.flops_per_image and r.flops_per_image > 100_000
    assert r.train_flops == 3 * r.flops_per_image * 96
    a = attrs.proxy_result_attrs(r)
    assert a[attrs.ACCURACY] == r.accuracy and a[attrs.EPOCHS] == 1 and attrs.FAILURE not in a
    given = ProxyTrainer(ProxyConfig(steps=1, batch_size=32, device="cpu")).fit(tiny_model(), data,
                                                                            flops_per_image=1000)
    assert given.train_flops == 3 * 1000 * 32


def test_callback_sees_every_epoch_and_can_stop(data):
    seen = []
    r = ProxyTrainer(ProxyConfig(epochs=3, batch_size=64, device="cpu", count_flops=False)).fit(
        tiny_model(), data, on_epoch=lambda e, acc, loss: seen.append((e, acc, loss)))
    assert [s[0] for s in seen] == [1, 2, 3] and [s[1] for s in seen] == r.accuracy_per_epoch
    r = ProxyTrainer(CFG).fit(tiny_model(), data, on_epoch=lambda e, a, _loss: True)
    assert r.status == "stopped" and r.epochs == 1 and "after epoch 1" in r.reason

    def prune(e, a, _loss):
        raise StopTraining("pruned at epoch 1: below median")

    r = ProxyTrainer(CFG).fit(tiny_model(), data, on_epoch=prune)
    assert r.status == "stopped" and r.reason == "pruned at epoch 1: below median"

    class Other(Exception):
        pass

    def boom(e, a, _loss):
        raise Other()

    with pytest.raises(Other):  # e.g. optuna.TrialPruned goes straight through
        ProxyTrainer(CFG).fit(tiny_model(), data, on_epoch=boom)


def test_nan_loss_stops_with_the_step(data):
    # 4 steps per epoch; the 7th training forward is epoch 2, step 3
    r = ProxyTrainer(CFG).fit(Faulty(tiny_model(), at=7, fault="nan"), data)
    assert r.status == "diverged" and r.reason == "loss became nan at epoch 2 step 3"
    assert r.epochs == 1 and len(r.accuracy_per_epoch) == 1
    cfg = ProxyConfig(epochs=5, batch_size=64, device="cpu", count_flops=False, check_every=2)
    m = Faulty(tiny_model(), at=2, fault="nan")
    r = ProxyTrainer(cfg).fit(m, data)
    assert r.reason == "loss became nan at epoch 1 step 2" and m.calls == 2  # stopped at once


def test_oom_is_reported_and_the_process_goes_on(data):
    model = Faulty(tiny_model(), at=3, fault="oom")
    r = ProxyTrainer(CFG).fit(model, data)
    assert all(p.grad is None for p in model.parameters())  # gradients of batches 0-1 dropped
    assert r.status == "oom" and r.reason.startswith("oom at batch 2")
    assert r.accuracy is None and r.epochs == 0
    # nothing holds the optimiser state (or through it the gradients) any more
    import gc

    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is torch.optim.AdamW]
    ok = ProxyTrainer(CFG).fit(tiny_model(), data)  # the next candidate trains normally
    assert ok.status == "ok"


def test_time_limit(data):
    cfg = ProxyConfig(epochs=50, batch_size=64, device="cpu", count_flops=False, time_limit_s=0.6)
    r = ProxyTrainer(cfg).fit(Faulty(tiny_model(), at=10**9, fault="none", sleep=0.05), data)
    assert r.status == "timeout" and r.epochs < 50 and "time limit" in r.reason
    assert r.wall_time_s < 5


def test_bf16_autocast_and_channels_last_paths(data):
    """The GPU settings, exercised on the CPU (autocast to bf16 exists there too)."""
    cfg = ProxyConfig(epochs=1, batch_size=64, device="cpu", count_flops=False, precision="bf16",
                      channels_last=True)
    r = ProxyTrainer(cfg).fit(tiny_model(mixer="sepconv", knobs={}), data)
    assert r.status == "ok" and r.precision == "bf16" and 0 <= r.accuracy <= 1 and r.loss < 10


def test_augmentation_crop_and_flip_are_label_preserving_shifts(data):
    x, y = data.train_x[:16], data.train_y[:16]
    plain = DeviceBatches(x, y, data.mean, data.std, torch.device("cpu"), pad=0, flip=False)
    ref, _ = plain.plain(0, 16)
    idx = torch.arange(16)
    same, yy = plain.augmented(idx, torch.Generator().manual_seed(0))
    assert torch.equal(same, ref) and torch.equal(yy, y)
    flip = DeviceBatches(x, y, data.mean, data.std, torch.device("cpu"), pad=0, flip=True)
    out, _ = flip.augmented(idx, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(o, r.flip(-1)) and not torch.equal(o, r) for o, r in zip(out, ref, strict=False)]
    kept = [torch.equal(o, r) for o, r in zip(out, ref, strict=False)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=False)) and any(mirrored) and any(kept)
    crop = DeviceBatches(x, y, data.mean, data.std, torch.device("cpu"), pad=2, flip=False)
    out, _ = crop.augmented(idx, torch.Generator().manual_seed(0))
    assert out.shape == ref.shape and not torch.equal(out, ref)
    pad_value = crop.shift.view(-1)[0]  # a zero pixel, normalised
    for o, r in zip(out, ref, strict=False):  # each output is the reference shifted by (dy, dx) in [-2, 2]
        hits = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                s = torch.full_like(r, float(pad_value))
                s[:, max(0, -dy):16 - max(0, dy), max(0, -dx):16 - max(0, dx)] = \
                    r[:, max(0, dy):16 - max(0, -dy), max(0, dx):16 - max(0, -dx)]
                hits.append(torch.allclose(s, o))
        assert any(hits)


def test_schedule_and_config_errors():
    lrs = [cosine_lr(s, 100, 10, 0.01) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.02 and all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    with pytest.raises(NasError, match="precision"):
        ProxyConfig(precision="fp16")
    with pytest.raises(NasError, match="epochs"):
        ProxyConfig(epochs=0)


# --- divergence after the last check (issue 20 item 5) -----------------------------------------
def _nan_grads_at(model: nn.Module, step: int) -> list[int]:
    """From training step ``step`` on (1-based), every gradient of ``model`` is NaN, so that
    step's optimizer update makes the weights NaN while its own loss was still finite."""
    calls = [0]

    def count(module: nn.Module, args: tuple) -> None:
        if module.training:
            calls[0] += 1

    model.register_forward_pre_hook(count)
    for p in model.parameters():
        p.register_hook(lambda g: g * float("nan") if calls[0] >= step else g)
    return calls


def test_weights_nan_after_the_last_step_is_diverged_not_a_result(data):
    """The last step's update makes the weights NaN; its loss was finite, so only the weights
    and the validation logits show it. The run must end ``diverged``, with no accuracy for it."""
    model = tiny_model()
    seen = []
    calls = _nan_grads_at(model, step=8)  # CFG: 2 epochs x 4 steps; step 8 is the very last
    r = ProxyTrainer(CFG).fit(model, data, on_epoch=lambda e, a, loss: seen.append((e, a, loss)))
    assert calls[0] == 8
    assert r.status == "diverged" and r.reason == "weights became nan in stem.proj.weight after epoch 2"
    assert len(r.accuracy_per_epoch) == 1 and r.epochs == 1  # epoch 2 reported nothing
    assert [e for e, *_ in seen] == [1] and all(torch.isfinite(torch.tensor(v)) for _, a, v in seen)
    assert not r.ok
    # the same run without the fault is ok: the check does not fire on finite weights
    assert ProxyTrainer(CFG).fit(tiny_model(), data).status == "ok"


def test_nan_weights_reason_names_the_tensor(data):
    model = tiny_model()
    _nan_grads_at(model, step=8)
    r = ProxyTrainer(CFG).fit(model, data)
    assert r.status == "diverged"
    name = r.reason.removeprefix("weights became nan in ").removesuffix(" after epoch 2")
    assert name in dict(model.named_parameters())


class EvalInf(nn.Module):
    """Finite in training; from the ``at``-th validation forward on, logits are +inf in eval mode."""

    def __init__(self, inner: nn.Module, at: int = 1) -> None:
        super().__init__()
        self.inner, self.at, self.evals = inner, at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        if not self.training:
            self.evals += 1
            if self.evals >= self.at:
                y = y.clone()
                y[:, 0] = float("inf")
        return y


def test_non_finite_validation_logits_are_diverged(data):
    r = ProxyTrainer(CFG).fit(EvalInf(tiny_model()), data)
    assert r.status == "diverged" and r.reason == "128 non-finite validation logits at epoch 1"
    assert r.accuracy is None and r.accuracy_per_epoch == []


def test_zero_cost_proxies_refuse_non_finite_models(data):
    from evaluators.proxy import Diverged
    from evaluators.zero_cost import PROXIES, zero_cost_scores

    x, y = data.batch(16, split="train", device="cpu", seed=0)
    model = tiny_model()
    with torch.no_grad():
        model.stages[0].blocks[0].mlp.fc1.weight[0, 0] = float("nan")
    for proxy in PROXIES:
        with pytest.raises(Diverged, match=r"weights hold nan in stages\.0\.blocks\.0\.mlp\.fc1\.weight"):
            zero_cost_scores(model, x, y, proxies=[proxy])
    with pytest.raises(Diverged, match="16 of the model's logits on the batch are non-finite"):
        zero_cost_scores(EvalInf(tiny_model()), x, y, proxies=["naswot"])
    assert all(torch.isfinite(torch.tensor(v)) for v in zero_cost_scores(tiny_model(), x, y).values())


# --- pause and resume (multi-fidelity rungs) ---------------------------------------------------
PR_CFG = ProxyConfig(epochs=5, batch_size=64, device="cpu", count_flops=False)  # 4 steps per epoch


def dp_model(seed: int = 0) -> nn.Module:
    """Two attention blocks with drop-path and a head with dropout: training draws from torch's
    global RNG, so a resume must restore it, not re-seed it."""
    torch.manual_seed(seed)
    spec = ArchSpec(stem=StemSpec("patchify", 4),
                    stages=(StageSpec(depth=2, dim=32, mixer="attention", mixer_knobs={"num_heads": 2}, pos="abs"),),
                    head=HeadSpec(drop_rate=0.2), num_classes=10, img_size=16)
    return build_model(spec, drop_path_rate=0.3)


def assert_same_run(a, model_a: nn.Module, b, model_b: nn.Module) -> None:
    assert (a.status, a.epochs, a.steps, a.images) == (b.status, b.epochs, b.steps, b.images)
    assert a.accuracy_per_epoch == b.accuracy_per_epoch and a.loss_per_epoch == b.loss_per_epoch
    assert a.train_loss_per_epoch == b.train_loss_per_epoch and (a.accuracy, a.loss) == (b.accuracy, b.loss)
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def straight(data):
    """An uninterrupted 5-epoch run: (result, trained model)."""
    model = dp_model()
    return ProxyTrainer(PR_CFG).fit(model, data), model


@pytest.fixture(scope="module")
def paused2(data):
    return ProxyTrainer(PR_CFG).fit(dp_model(), data, pause_at=2)


@pytest.mark.parametrize("pause_at", [1, 2, 3, 4])
def test_pause_then_resume_equals_an_uninterrupted_run(data, straight, pause_at, tmp_path):
    ref, ref_model = straight
    p = ProxyTrainer(PR_CFG).fit(dp_model(), data, pause_at=pause_at)
    assert p.status == "paused" and p.reason == f"paused after epoch {pause_at}" and not p.ok
    assert p.epochs == pause_at and p.steps == 4 * pause_at and p.epoch_budget == 5
    assert p.accuracy_per_epoch == ref.accuracy_per_epoch[:pause_at]
    assert set(p.state) == {"version", "fingerprint", "device_type", "epoch", "step", "model", "optimizer",
                            "scheduler", "gen", "rng", "history", "flops_per_image"}
    assert "state" not in p.to_dict() and "state" not in repr(p)
    torch.save(p.state, tmp_path / "paused.pt")
    state = torch.load(tmp_path / "paused.pt", weights_only=True)  # tensors, dicts, lists and numbers only
    seen = []
    model = dp_model()
    r = ProxyTrainer(PR_CFG).fit(model, data, on_epoch=lambda e, a, loss: seen.append(e), resume=state)
    assert seen == list(range(pause_at + 1, 6)) and r.state is None
    assert_same_run(r, model, ref, ref_model)
    assert r.wall_time_s > p.wall_time_s and r.train_time_s > p.train_time_s and r.eval_time_s > p.eval_time_s


def test_a_chain_of_pauses_equals_an_uninterrupted_run(data, straight):
    ref, ref_model = straight
    a = ProxyTrainer(PR_CFG).fit(dp_model(), data, pause_at=1)
    b = ProxyTrainer(PR_CFG).fit(dp_model(seed=7), data, resume=a.state, pause_at=3)  # the init is overwritten
    assert b.status == "paused" and b.epochs == 3 and b.accuracy_per_epoch == ref.accuracy_per_epoch[:3]
    model = dp_model(seed=8)
    c = ProxyTrainer(PR_CFG).fit(model, data, resume=b.state)
    assert c.status == "ok" and c.state is None
    assert_same_run(c, model, ref, ref_model)


def test_resume_restores_the_global_rng_and_the_data_order(data, straight, paused2):
    """The test model draws from the global RNG (drop-path, dropout): a re-seeded RNG or data
    generator gives another run, so the equality above does check both restores."""
    ref, _ = straight
    reseeded = torch.Generator().manual_seed(0).get_state()
    for key, value in (("rng", {"cpu": reseeded}), ("gen", reseeded)):
        r = ProxyTrainer(PR_CFG).fit(dp_model(), data, resume={**paused2.state, key: value})
        assert r.status == "ok" and r.accuracy_per_epoch[:2] == ref.accuracy_per_epoch[:2]
        assert r.train_loss_per_epoch[2:] != ref.train_loss_per_epoch[2:], key


def test_resume_of_another_run_is_an_error(data, paused2):
    state = paused2.state
    others = [ProxyConfig(epochs=6, batch_size=64, device="cpu", count_flops=False),
              ProxyConfig(epochs=5, batch_size=32, device="cpu", count_flops=False),
              ProxyConfig(epochs=5, batch_size=64, device="cpu", count_flops=False, lr=1e-3),
              ProxyConfig(epochs=5, batch_size=64, device="cpu", count_flops=False, seed=1),
              ProxyConfig(steps=20, batch_size=64, device="cpu", count_flops=False, warmup_frac=0.2)]
    for cfg in others:
        with pytest.raises(NasError, match=r"resume state was made by another run \(.+\); resume with the paused"):
            ProxyTrainer(cfg).fit(dp_model(), data, resume=state)
    small = load_dataset(DataSpec(img_size=16, subset=200, val_size=128))
    with pytest.raises(NasError, match="n_train 256 -> 200"):
        ProxyTrainer(PR_CFG).fit(dp_model(), small, resume=state)
    with pytest.raises(NasError, match="does not fit this model"):
        ProxyTrainer(PR_CFG).fit(tiny_model(), data, resume=state)
    with pytest.raises(NasError, match="not a paused ProxyResult.state"):
        ProxyTrainer(PR_CFG).fit(dp_model(), data, resume={"model": state["model"]})
    with pytest.raises(ValueError, match="pause_at must be a 1-based epoch"):
        ProxyTrainer(PR_CFG).fit(dp_model(), data, pause_at=0)
    with pytest.raises(ValueError, match="pause_at 2 is not after epoch 2"):
        ProxyTrainer(PR_CFG).fit(dp_model(), data, resume=state, pause_at=2)
    with pytest.raises(NasError) as err:
        ProxyTrainer(others[1]).fit(dp_model(), data, resume=state)
    assert "\n" not in str(err.value) and "batch_size 64 -> 32" in str(err.value)


def test_pause_at_or_past_the_budget_just_finishes(data, straight):
    ref, _ = straight
    for pause_at in (5, 9):
        r = ProxyTrainer(PR_CFG).fit(dp_model(), data, pause_at=pause_at)
        assert r.status == "ok" and r.reason is None and r.state is None
        assert r.accuracy_per_epoch == ref.accuracy_per_epoch
    r = ProxyTrainer(ProxyConfig(steps=6, batch_size=64, device="cpu", count_flops=False)).fit(
        dp_model(), data, pause_at=2)  # a step budget: epoch 2 is its last (partial) epoch
    assert r.status == "ok" and r.steps == 6 and r.state is None


def test_a_callback_stop_wins_over_the_pause(data):
    r = ProxyTrainer(PR_CFG).fit(dp_model(), data, on_epoch=lambda e, a, loss: e == 2, pause_at=2)
    assert r.status == "stopped" and r.epochs == 2 and r.state is None

    def prune(e, a, _loss):
        raise StopTraining("pruned at the rung")

    r = ProxyTrainer(PR_CFG).fit(dp_model(), data, on_epoch=prune, pause_at=1)
    assert r.status == "stopped" and r.reason == "pruned at the rung" and r.state is None
