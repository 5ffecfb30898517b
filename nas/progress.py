"""A tqdm progress bar for a search: trials done, feasible, front size, ETA.

It reads the store (not a worker's memory), so it shows the same thing whether trials run in
this process, in ``--workers`` processes or on a Ray cluster.
"""

from __future__ import annotations

import sys
from typing import Any

from nas.store import counted


def study_counts(study: Any) -> dict[str, int]:
    """done (counted), feasible, front size, failed, running."""
    from nas.front import pareto_front, record_from_trial, study_objectives

    trials = study.get_trials(deepcopy=False)
    objs = study_objectives(study)
    names = [n for n, _ in objs]
    recs = [record_from_trial(t, names) for t in trials if t.state.name == "COMPLETE"]
    return {
        "done": sum(counted(t) for t in trials),
        "feasible": sum(1 for r in recs if r.feasible is not False),
        "front": len(pareto_front(recs, objs)),
        "failed": sum(1 for t in trials if t.state.name == "FAIL"),
        "running": sum(1 for t in trials if t.state.name == "RUNNING"),
    }


class Progress:
    """``Progress(total, initial)``; ``update(study)`` after each trial (or on a timer)."""

    def __init__(self, total: int | None, initial: int = 0, enabled: bool = True, desc: str = "search") -> None:
        self.bar = None
        self.last = initial
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="trial", file=sys.stderr,
                            dynamic_ncols=True, smoothing=0.1)

    def update(self, study: Any) -> dict[str, int]:
        c = study_counts(study)
        if self.bar is not None:
            self.bar.set_postfix(feasible=c["feasible"], front=c["front"], failed=c["failed"], refresh=False)
            if self.bar.total is not None and c["done"] > self.bar.total:  # workers finishing in-flight trials
                self.bar.total = c["done"]
            if c["done"] > self.last:
                self.bar.update(c["done"] - self.last)
            else:
                self.bar.refresh()
        self.last = max(self.last, c["done"])
        return c

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
