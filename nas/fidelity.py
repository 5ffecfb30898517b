"""Multi-fidelity for multi-objective searches: asynchronous successive halving whose
promotions go by Pareto rank at the rung, with training continued from the rung.

MO-ASHA (Schmucker et al. 2021, "Multi-objective Asynchronous Successive Halving"; ASHA: Li et
al. 2020). ``[evaluator.fidelity] pruner = "mo_asha"`` with ``min_epochs`` (r) and
``reduction_factor`` (eta) sets rungs at r, r*eta, r*eta^2, ... epochs below the study's epoch
budget. A candidate trains to the first rung and is recorded there (``RungTable``: its
objective vector at the rung, i.e. accuracy after that many epochs with its costs); it goes on
to the next rung when it is among the top ``floor(n / eta)`` of the ``n`` candidates that
reached the rung, ordered by constrained non-dominated sorting and then crowding distance
(NSGA-II's, ``nas.samplers.selection``). Otherwise it *pauses*: its training state (weights,
AdamW moments, the position in a learning-rate schedule defined over the whole budget, the
data-order and dropout RNG states; ``evaluators.ProxyTrainer.fit(pause_at=..., resume=...)``)
is saved beside the study's weights, and its trial ends COMPLETE with the rung's values, marked
``attrs.PAUSED_AT``. Each new rung record can lift older paused candidates into their rung's
top ``1/eta``; those are promoted by enqueueing a continuation trial with the same genome
(``attrs.RESUMES``), which whichever worker asks next runs: it loads the state and trains on.
A promoted run therefore equals an uninterrupted one (``tests/evaluators/test_proxy.py``).

Everything is decided from the store (the rung table in the study's own database, atomic
claims on a promotion), so many workers, both backends and a resumed study behave alike.
Paused trials are not front members (``nas.front.eligible`` keeps full-budget trials); the
evolutionary sampler ranks them below every full-budget result (``nas.samplers.selection``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas import attrs
from nas.errors import NasError
from nas.store import StoreTable


def rung_epochs(min_epochs: int, reduction_factor: int, budget: int) -> list[int]:
    """The rungs below ``budget``: ``min_epochs * reduction_factor**k`` epochs, k = 0, 1, ...

    Raises:
        NasError: no rung lies below the budget (``min_epochs >= budget``).
    """
    if min_epochs >= budget:
        raise NasError(f"[evaluator.fidelity] min_epochs={min_epochs} leaves no rung below the budget of {budget} "
                       f"epochs; lower min_epochs or raise [evaluator] epochs")
    out, r = [], min_epochs
    while r < budget:
        out.append(r)
        r *= reduction_factor
    return out


@dataclass(frozen=True)
class RungRow:
    """A candidate that reached a rung: the trial that recorded it, its objective values at the
    rung (study objective order), the saved training state (None once promoted and continued)
    and the trial number that continues it (None while it waits)."""

    arch_id: str
    rung: int
    trial_number: int
    values: tuple[float, ...]
    state_path: str | None
    promoted_by: int | None
    created_at: float = 0.0
    promoted_at: float | None = None


PROMOTED_IN_PLACE = -1   # promoted_by of a candidate that went on in the trial that reached the rung
PROMOTION_QUEUED = -2    # promoted_by while its continuation trial is being enqueued


class RungTable(StoreTable):
    """One row per (study, arch_id, rung) in a ``nas_rungs`` table of the study's database."""

    TABLE = "nas_rungs"

    @staticmethod
    def columns() -> list[Any]:
        import sqlalchemy as sa

        return [sa.Column("study_name", sa.String(512), primary_key=True),
                sa.Column("arch_id", sa.String(64), primary_key=True),
                sa.Column("rung", sa.Integer, primary_key=True),
                sa.Column("trial_number", sa.Integer, nullable=False),
                sa.Column("value_json", sa.Text, nullable=False),
                sa.Column("state_path", sa.Text, nullable=True),
                sa.Column("promoted_by", sa.Integer, nullable=True),
                sa.Column("created_at", sa.Float, nullable=False),
                sa.Column("promoted_at", sa.Float, nullable=True)]

    def add(self, study_name: str, arch_id: str, rung: int, number: int, values: list[float],
            state_path: str | None) -> None:
        """Record ``arch_id`` at ``rung`` (a retry of the same trial replaces its own row)."""
        import sqlalchemy as sa

        t = self.table
        row = dict(study_name=study_name, arch_id=arch_id, rung=rung, trial_number=number,
                   value_json=json.dumps([float(v) for v in values]), state_path=state_path, promoted_by=None,
                   created_at=time.time(), promoted_at=None)
        key = (t.c.study_name == study_name) & (t.c.arch_id == arch_id) & (t.c.rung == rung)
        try:
            with self.engine.begin() as conn:
                conn.execute(t.insert().values(**row))
        except sa.exc.IntegrityError:
            with self.engine.begin() as conn:
                conn.execute(t.update().where(key).values(**{k: v for k, v in row.items() if k not in
                                                            ("study_name", "arch_id", "rung")}))

    def rows(self, study_name: str, rung: int | None = None) -> list[RungRow]:
        import sqlalchemy as sa

        t = self.table
        cond = t.c.study_name == study_name
        if rung is not None:
            cond = cond & (t.c.rung == rung)
        with self.engine.connect() as conn:
            got = conn.execute(sa.select(t.c.arch_id, t.c.rung, t.c.trial_number, t.c.value_json, t.c.state_path,
                                         t.c.promoted_by, t.c.created_at, t.c.promoted_at).where(cond)).all()
        return [RungRow(a, int(r), int(n), tuple(json.loads(v)), p, None if b is None else int(b), c, pa)
                for a, r, n, v, p, b, c, pa in got]

    def claim(self, study_name: str, arch_id: str, rung: int, by: int) -> bool:
        """Mark a waiting candidate promoted by ``by``; True if this call won."""
        t = self.table
        with self.engine.begin() as conn:
            res = conn.execute(t.update().where((t.c.study_name == study_name) & (t.c.arch_id == arch_id)
                                                & (t.c.rung == rung) & t.c.promoted_by.is_(None))
                               .values(promoted_by=by, promoted_at=time.time()))
        return res.rowcount == 1

    def set_promoted_by(self, study_name: str, arch_id: str, rung: int, by: int | None,
                        state_gone: bool = False) -> None:
        """Set who continues a candidate (None: it waits again); ``state_gone``: its saved
        training state was used up."""
        t = self.table
        values: dict[str, Any] = {"promoted_by": by}
        if by is None:
            values["promoted_at"] = None
        if state_gone:
            values["state_path"] = None
        with self.engine.begin() as conn:
            conn.execute(t.update().where((t.c.study_name == study_name) & (t.c.arch_id == arch_id)
                                          & (t.c.rung == rung)).values(**values))


def top_of_rung(rows: list[RungRow], directions: list[Any], reduction_factor: int) -> list[RungRow]:
    """The promotable ``floor(n / eta)`` of the ``n`` candidates at one rung: the first by
    non-dominated rank, then crowding distance (larger first), then trial number.
    ``directions``: the study's, as ``"maximize"``/``"minimize"`` or ``StudyDirection``."""
    k = len(rows) // reduction_factor
    if k == 0:
        return []
    from optuna.study import StudyDirection
    from optuna.trial import FrozenTrial, TrialState

    directions = [d if isinstance(d, StudyDirection) else StudyDirection[str(d).upper()] for d in directions]

    from nas.samplers.selection import rank_and_crowding

    trials = [FrozenTrial(number=r.trial_number, state=TrialState.COMPLETE, value=None, values=list(r.values),
                          datetime_start=None, datetime_complete=None, params={}, distributions={}, user_attrs={},
                          system_attrs={}, intermediate_values={}, trial_id=i)
              for i, r in enumerate(rows)]
    rc = rank_and_crowding(trials, directions)
    order = sorted(rows, key=lambda r: (rc[r.trial_number][0], -rc[r.trial_number][1], r.trial_number))
    return order[:k]


class SuccessiveHalving:
    """MO-ASHA for one study in one process (see the module docstring). ``TrialStep`` calls
    ``train`` instead of a single full-budget evaluation when the study names ``mo_asha``."""

    def __init__(self, study: Any, storage: Any, state_dir: str | Path) -> None:
        f = study.evaluator.fidelity
        self.study = study
        self.state_dir = Path(state_dir)
        self.eta = f.reduction_factor
        self.rungs = rung_epochs(f.min_epochs, f.reduction_factor, study.evaluator.epochs)
        self.directions = [o.direction for o in study.objectives]
        self.table = RungTable(storage)
        self.storage = storage

    def __getstate__(self) -> dict[str, Any]:
        return {"study": self.study, "storage": self.storage, "state_dir": self.state_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["study"], state["storage"], state["state_dir"])

    # --- training through the rungs -------------------------------------------------------------
    def train(self, te: Any, cand: Any, number: int, resume: RungRow | None = None) -> tuple[Any, dict[str, Any]]:
        """Train ``cand`` for trial ``number`` from its start (or from the state of ``resume``,
        the waiting candidate this trial continues) through the rungs it is promoted at.

        Returns ``(outcome, fidelity attrs)``: the last ``nas.evaluator.Outcome`` (status
        ``"paused"`` when it stopped at a rung) and ``attrs.START_EPOCH`` / ``attrs.PAUSED_AT``.
        """
        name = self.study.name
        state, start = None, 0
        if resume is not None:  # its state file is dropped once the next segment is done
            state, start = self._load(resume), resume.rung
            self.table.set_promoted_by(name, cand.arch_id, resume.rung, number)
        extra: dict[str, Any] = {attrs.START_EPOCH: start}
        if resume is not None:
            extra[attrs.RESUMES] = resume.trial_number
        while True:
            nxt = next((r for r in self.rungs if r > start), None)
            out = te.evaluate(cand, resume=state, pause_at=nxt)
            if resume is not None:  # the continued segment is done (whatever its outcome)
                self.table.set_promoted_by(name, cand.arch_id, resume.rung, number, state_gone=True)
                self._drop(resume.state_path)
            if out.status != "paused":
                return out, extra
            values = te.values(cand, out.accuracy)
            path = self._save(cand.arch_id, nxt, out.state)
            self.table.add(name, cand.arch_id, nxt, number, values, str(path))
            promoted = self.promote(nxt, number)
            resume = None
            if not promoted:
                extra[attrs.PAUSED_AT] = nxt
                return out, extra
            self.table.set_promoted_by(name, cand.arch_id, nxt, PROMOTED_IN_PLACE, state_gone=True)
            self._drop(str(path))  # (promote() claimed it: promoted_at is set)
            state, start = out.state, nxt

    def promote(self, rung: int, number: int) -> bool:
        """After trial ``number`` recorded a candidate at ``rung``: whether that candidate is
        promotable (it goes on in place); every other waiting candidate of the rung that is now
        in its top ``1/eta`` gets a continuation trial enqueued."""
        name = self.study.name
        top = top_of_rung(self.table.rows(name, rung), self.directions, self.eta)
        mine = False
        for row in top:
            if row.promoted_by is not None:
                continue
            if row.trial_number == number:
                mine = self.table.claim(name, row.arch_id, rung, PROMOTED_IN_PLACE)
            elif self.table.claim(name, row.arch_id, rung, PROMOTION_QUEUED):
                self._enqueue(row)
        return mine

    def enqueue_waiting(self) -> int:
        """Enqueue a continuation for every waiting candidate in its rung's top ``1/eta`` (a
        resumed study, or promotions lost with a dead worker); returns how many."""
        name, n = self.study.name, 0
        rows = self.table.rows(name)
        trials = {t.number: t for t in self._study().get_trials(deepcopy=False)}
        for r in rows:
            if r.promoted_by == PROMOTION_QUEUED and not self._queued(r, trials.values()):
                stale = True   # claimed, then its worker died before the continuation was enqueued
            elif r.promoted_by is not None and r.promoted_by >= 0 and r.state_path:
                t = trials.get(r.promoted_by)  # its continuation ended without finishing the segment
                stale = t is not None and t.state.is_finished() and t.state.name != "COMPLETE"
            else:
                stale = False
            if stale:
                self.table.set_promoted_by(name, r.arch_id, r.rung, None)
        for rung in sorted({r.rung for r in rows}, reverse=True):
            for row in top_of_rung(self.table.rows(name, rung), self.directions, self.eta):
                if row.promoted_by is None and self.table.claim(name, row.arch_id, rung, PROMOTION_QUEUED):
                    self._enqueue(row)
                    n += 1
        return n

    def resume_row(self, trial_user_attrs: dict[str, Any], arch_id: str) -> RungRow | None:
        """The promoted candidate a continuation trial resumes (from its ``attrs.RESUMES``):
        the row of that trial queued for promotion, with its training state."""
        src = trial_user_attrs.get(attrs.RESUMES)
        if src is None:
            return None
        rows = [r for r in self.table.rows(self.study.name) if r.trial_number == int(src) and r.arch_id == arch_id
                and r.state_path and r.promoted_by == PROMOTION_QUEUED]
        return max(rows, key=lambda r: r.rung) if rows else None

    # --- queue and checkpoints ----------------------------------------------------------------
    def _study(self) -> Any:
        import optuna

        return optuna.load_study(study_name=self.study.name, storage=self.storage)

    def _enqueue(self, row: RungRow) -> None:
        study = self._study()
        params = next(t.params for t in study.get_trials(deepcopy=False) if t.number == row.trial_number)
        study.enqueue_trial(dict(params), user_attrs={attrs.RESUMES: row.trial_number}, skip_if_exists=False)

    @staticmethod
    def _queued(row: RungRow, trials: Any) -> bool:
        """Whether a continuation of ``row`` is waiting or running among the study's ``trials``."""
        for t in trials:
            if t.user_attrs.get(attrs.RESUMES) == row.trial_number and not t.state.is_finished():
                return True
        return False

    def _save(self, arch_id: str, rung: int, state: Any) -> Path:
        import torch

        d = self.state_dir
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{arch_id}_e{rung}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    def _load(self, row: RungRow) -> Any:
        import torch

        if not row.state_path or not Path(row.state_path).exists():
            raise NasError(f"the training state of trial {row.trial_number} at rung {row.rung} is missing "
                           f"({row.state_path}); it cannot be continued")
        return torch.load(row.state_path, map_location="cpu", weights_only=True)

    @staticmethod
    def _drop(path: str | None) -> None:
        if path:
            Path(path).unlink(missing_ok=True)


def trained_epochs(user_attrs: dict[str, Any]) -> int:
    """Epochs a trial itself trained (0 for a reused result): reached minus resumed-from."""
    if user_attrs.get(attrs.REUSED_FROM) is not None:
        return 0
    e = user_attrs.get(attrs.EPOCHS) or 0
    return max(0, int(e) - int(user_attrs.get(attrs.START_EPOCH) or 0))


def waiting(trials: list[Any]) -> dict[int, int]:
    """Trial number -> rung of every paused candidate no later trial continued (yet).
    ``trials``: Optuna ``FrozenTrial``s or ``nas.front.TrialRecord``s (state an enum or its name)."""
    continued = {t.user_attrs.get(attrs.RESUMES) for t in trials if t.user_attrs.get(attrs.RESUMES) is not None}
    return {t.number: int(t.user_attrs[attrs.PAUSED_AT]) for t in trials
            if t.user_attrs.get(attrs.PAUSED_AT) is not None and t.number not in continued
            and t.user_attrs.get(attrs.REUSED_FROM) is None and getattr(t.state, "name", t.state) == "COMPLETE"}


def cumulative_compute(records: list[Any]) -> list[tuple[int, int]]:
    """(trial number, epochs trained by all trials finished so far), in completion order."""
    done = sorted((r for r in records if getattr(r, "datetime_complete", None)),
                  key=lambda r: (r.datetime_complete, r.number))
    out, total = [], 0
    for r in done:
        total += trained_epochs(r.user_attrs)
        out.append((r.number, total))
    return out

