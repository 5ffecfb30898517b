"""``nas report``: the dashboard's views as one self-contained HTML file (plotly.js inlined once,
so it opens offline), built from the same data layer and figures as the live page."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from nas.dashboard import data as D
from nas.dashboard import figures as FIG
from nas.dashboard.app import TABLE_COLUMNS, build_views, table_rows

MAX_TABLE_ROWS = 2000


def build_report(storage_url: str, study: str, out: str | Path, *, x: str = "flops", y: str = "accuracy",
                 references: list[str] | None = None, count_references: bool = True,
                 details: int = 5) -> dict[str, Any]:
    """Write the report for ``study`` to ``out``; returns what it holds (trials, front size, bytes).

    Raises:
        StoreError: the store cannot be read or has no such study.
    """
    store = D.Store(storage_url)
    data = D.load_study_data(store, study)
    if not data.rows:
        raise D.StoreError(f"study {study!r} has no trials yet; nothing to report")
    if references is None and count_references:
        D.warm_references(data.info)  # the candidates' costs, so the defaults can be the ones nearest the budget
    names = references if references is not None else D.default_references(data.info, data.records)
    refs = D.reference_points(data.info, data.records, names, compute=count_references)
    views = build_views(data, x, y, refs)
    figs: list[tuple[str, Any]] = [("Pareto front", views["pareto"])]
    objs = [n for n, _ in data.objectives]
    # every other pair of axes that the study has values for, so the file covers them all
    for a, b in (("params", "accuracy"), ("latency_ms", "accuracy"), ("flops", "latency_ms")):
        if (a, b) != (x, y) and any(r.get(a) is not None for r in data.rows) and \
                any(r.get(b) is not None for r in data.rows):
            figs.append((f"{b} vs {a}", FIG.pareto_figure(data.rows, D.front_2d(data.records, a, b, study=data), a, b,
                                                          references=refs)))
    if views["pareto3d"] is not None:
        figs.append(("3D front", views["pareto3d"]))
    figs.append(("Hypervolume", views["hv"]))
    if views["hv_compute"] is not None:
        figs.append(("Hypervolume over training compute", views["hv_compute"]))
    figs += [("Front composition", views["composition"]),
             ("Feature importance", FIG.importance_figure(D.param_importance(data, max_trials=500)))]
    front_recs = [data.record(n) for n in data.front][:details]
    for rec in front_recs:
        arch = D.architecture(rec, study_name=study, storage_url=storage_url, compute=False,
                              img_size=data.info.img_size)
        figs.append((f"Front member: trial {rec.number}", FIG.architecture_figure(arch)))
        figs.append((f"Learning curve: trial {rec.number}", FIG.learning_curve_figure(arch)))

    parts = []
    for i, (title, fig) in enumerate(figs):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False}))
    front_rows = [r for r in data.rows if r["category"] == "front"]
    cmds = "".join(
        f"<tr><td>{r['number']}</td><td>{html.escape(str(r.get('summary') or ''))}</td>"
        f"<td><code>nas export {html.escape(study)} --storage {html.escape(storage_url)} --trial {r['number']} "
        f"--out exported/{html.escape(study)}-{r['number']}</code></td></tr>" for r in front_rows)
    rows = table_rows(data.rows, sort_by=[{"column_id": "number", "direction": "asc"}])
    shown = rows[:MAX_TABLE_ROWS]
    head = "".join(f"<th>{html.escape(n)}</th>" for _, n in TABLE_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if r[c] is None else str(r[c]))}</td>"
                                   for c, _ in TABLE_COLUMNS) + "</tr>" for r in shown)
    more = f"<p>{len(rows) - len(shown)} more trials not listed.</p>" if len(rows) > len(shown) else ""
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(study)}: attention NAS report</title>
<style>body{{font-family:sans-serif;margin:16px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ddd;padding:2px 6px}} code{{font-size:12px}}</style></head><body>
<h1>{html.escape(study)}</h1>
<p>{len(data.rows)} trials, {len(data.front)} on the Pareto front; objectives
{html.escape(', '.join(f'{n} ({d})' for n, d in data.objectives))}; store {html.escape(D.redact(storage_url))}.</p>
{''.join(parts)}
<h2>Export a front member</h2><table><tr><th>trial</th><th>genome</th><th>command</th></tr>{cmds}</table>
<h2>Trials</h2><table><tr>{head}</tr>{body}</table>{more}
</body></html>"""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return {"path": str(out), "trials": len(data.rows), "front": len(data.front), "figures": len(figs),
            "bytes": out.stat().st_size, "objectives": objs}
