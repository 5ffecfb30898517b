"""The self-contained HTML plot a search writes at the end: accuracy vs FLOPs.

Every evaluated trial is a grey dot, the Pareto front a connected line of blue points; hovering
any point shows its trial number, accuracy, FLOPs, params and one-line genome. Presets are
marked as stars where they were evaluated with the same recipe, and as dashed vertical lines
at their FLOPs (at the study's resolution) where they were not. plotly.js is inlined, so the
file opens offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _hover(r: Any) -> str:
    from nas.study import format_count

    acc = f"{r.accuracy:.4f}" if r.accuracy is not None else "-"
    lat = f"<br>latency {r.latency_ms:.3g} ms" if r.latency_ms is not None else ""
    ep = f"<br>epochs {r.epochs}/{r.epoch_budget}" if r.epochs is not None and r.epoch_budget else ""
    return (f"trial {r.number}<br>accuracy {acc}<br>FLOPs {format_count(r.flops)} · params "
            f"{format_count(r.params)}{lat}{ep}<br>{r.summary or ''}")


def build_figure(rep: dict[str, Any], name: str) -> Any:
    """A plotly ``Figure`` of the report ``nas.commands.front.front_report`` returns."""
    import plotly.graph_objects as go

    from nas.front import eligible
    from nas.study import format_count

    objs = rep["objectives"]
    y_name = "accuracy" if any(n == "accuracy" for n, _ in objs) else objs[0][0]
    records = [r for r in rep["records"] if r.complete and r.flops and r.metric(y_name) is not None]
    ok = {r.number for r in eligible(records, objs)}
    front = rep["front"]
    fig = go.Figure()
    others = [r for r in records if r.number in ok]
    stopped = [r for r in records if r.number not in ok and r.feasible is not False]
    infeasible = [r for r in records if r.feasible is False]
    for group, label, color in ((others, "evaluated", "rgba(120,120,120,0.55)"),
                                (stopped, "stopped early / repeat", "rgba(200,150,60,0.5)")):
        if group:
            fig.add_trace(go.Scatter(x=[r.flops for r in group], y=[r.metric(y_name) for r in group], mode="markers",
                                     name=label, marker=dict(size=8, color=color),
                                     hovertext=[_hover(r) for r in group], hoverinfo="text"))
    if infeasible:
        fig.add_trace(go.Scatter(x=[r.flops for r in infeasible], y=[0.0] * len(infeasible), mode="markers",
                                 name="over budget (not trained)", marker=dict(size=7, symbol="x", color="rgba(200,60,60,0.5)"),
                                 hovertext=[_hover(r) for r in infeasible], hoverinfo="text"))
    if front:
        fs = sorted(front, key=lambda r: r.flops)
        fig.add_trace(go.Scatter(x=[r.flops for r in fs], y=[r.metric(y_name) for r in fs], mode="lines+markers",
                                 name="Pareto front", line=dict(shape="hv", color="#1f77b4"),
                                 marker=dict(size=11, color="#1f77b4"), hovertext=[_hover(r) for r in fs],
                                 hoverinfo="text"))
    for pname, p in (rep.get("presets") or {}).items():
        if "error" in p or not p.get("flops"):
            continue
        text = f"{pname} (preset at this resolution)<br>FLOPs {format_count(p['flops'])} · params " \
               f"{format_count(p.get('params'))}<br>{p.get('summary', '')}"
        if p.get("accuracy") is not None:
            fig.add_trace(go.Scatter(x=[p["flops"]], y=[p["accuracy"]], mode="markers+text", name=pname,
                                     text=[pname], textposition="top center",
                                     marker=dict(size=15, symbol="star", color="#d62728"),
                                     hovertext=[text + f"<br>accuracy {p['accuracy']:.4f}"], hoverinfo="text"))
        else:
            fig.add_vline(x=p["flops"], line=dict(dash="dash", color="#d62728", width=1))
            fig.add_trace(go.Scatter(x=[p["flops"]], y=[0.0], mode="markers+text", name=pname,
                                     text=[pname], textposition="top center", textfont=dict(color="#d62728"),
                                     marker=dict(size=12, symbol="star-open", color="#d62728"),
                                     hovertext=[text + "<br>accuracy not evaluated (FLOPs only)"], hoverinfo="text",
                                     legendgroup="presets", legendgrouptitle_text="presets (FLOPs at this resolution)"))
    ref = ", ".join(f"{n}={format_count(v) if n in ('flops', 'params') else f'{v:g}'}"
                    for (n, _), v in zip(objs, rep["reference_point"], strict=False))
    fig.update_layout(
        title=f"{name}: {y_name} vs FLOPs — front of {len(front)}, hypervolume "
              f"{rep['hypervolume_normalized']:.4f} (normalized; reference {ref})",
        xaxis=dict(title="FLOPs (multiply-accumulates, log scale)", type="log"),
        yaxis=dict(title=y_name), template="plotly_white", hovermode="closest",
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


def write_front_html(rep: dict[str, Any], name: str, path: str | Path) -> Path:
    """Write the plot to ``path`` (plotly.js inlined); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    build_figure(rep, name).write_html(str(p), include_plotlyjs=True, full_html=True)
    return p
