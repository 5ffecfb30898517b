"""Plain records (``nas.dashboard.data``) -> plotly figures. No store access here.

Large point clouds are drawn with WebGL (``Scattergl``) above ``WEBGL_ABOVE`` points so the
page stays responsive with thousands of trials.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas.dashboard.data import AXES, AXIS_LABELS

WEBGL_ABOVE = 1000
LOG_AXES = ("flops", "params", "latency_ms")
CATEGORY_STYLE: dict[str, dict[str, Any]] = {
    # category -> marker style; the order is the legend's
    "front": {"color": "#d62728", "size": 10, "symbol": "circle", "name": "Pareto front"},
    "dominated": {"color": "#1f77b4", "size": 6, "symbol": "circle", "name": "dominated (feasible)"},
    "excluded": {"color": "#9ecae1", "size": 5, "symbol": "circle-open",
                 "name": "not eligible (stopped early / repeated genome)"},
    "infeasible": {"color": "#7f7f7f", "size": 6, "symbol": "x", "name": "infeasible (over budget)"},
    # supernet studies: the search front is scored with inherited weights; these were trained stand-alone
    "confirmed": {"color": "#2ca02c", "size": 11, "symbol": "diamond", "name": "confirmed front (stand-alone)"},
    "confirmed_dominated": {"color": "#98df8a", "size": 8, "symbol": "diamond-open",
                            "name": "confirmed, dominated (stand-alone)"},
}
# MO-ASHA candidates paused at a rung (values at the rung, not the budget): faint, never front-like
WAITING_STYLE: dict[str, Any] = {"color": "#b0b0b0", "size": 5, "symbol": "square-open", "opacity": 0.55}
MIXER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"]


def message_figure(text: str, height: int = 300) -> go.Figure:
    """A blank figure that says ``text`` (empty study, unknown study, unreachable store)."""
    fig = go.Figure()
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 15})
    fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=height,
                      margin={"l": 20, "r": 20, "t": 20, "b": 20}, template="plotly_white")
    return fig


def _scatter_cls(n: int):
    return go.Scattergl if n > WEBGL_ABOVE else go.Scatter


def _fmt(name: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if name in ("flops", "params"):
        return f"{v / 1e9:.3g} G" if v >= 1e9 else (f"{v / 1e6:.3g} M" if v >= 1e6 else f"{v / 1e3:.3g} K")
    if name == "accuracy":
        return f"{100 * v:.2f}%"
    return f"{v:.4g}"


def _hover(r: dict[str, Any], names: Sequence[str]) -> str:
    what = r["category"]
    if r.get("rung") is not None:
        what = f"waiting at a rung: values after {_epochs(r['rung'])}" + \
            (f" of {r['epoch_budget']}" if r.get("epoch_budget") else "")
    parts = [f"trial {r['number']} ({what})"]
    parts += [f"{n}: {_fmt(n, r.get(n))}" for n in names]
    if r.get("summary"):
        parts.append(r["summary"])
    return "<br>".join(parts)


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def waiting_by_rung(rows: Sequence[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Rows of MO-ASHA candidates waiting at a rung, by rung (epochs), lowest rung first."""
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if r["category"] == "waiting":
            out.setdefault(int(r["rung"]), []).append(r)
    return dict(sorted(out.items()))


def waiting_name(rung: int, n: int) -> str:
    """Legend name of the trace of candidates waiting at ``rung`` epochs."""
    return f"waiting at a rung ({_epochs(rung)}; values at the rung) ({n})"


def pareto_figure(rows: Sequence[dict[str, Any]], front2d: Sequence[dict[str, Any]], x: str, y: str, *,
                  references: Sequence[dict[str, Any]] = (), title: str = "") -> go.Figure:
    """2D front: front members, dominated, not eligible and infeasible trials told apart; the
    pair's own front drawn as a staircase line; reference models on the same axes (with no
    accuracy, a model on an accuracy plot is a dashed line at its cost). MO-ASHA candidates
    waiting at a rung get one faint trace per rung (``meta.category == "waiting"``), drawn first
    so everything else lies above them."""
    # over-budget trials were not trained: on an accuracy axis they sit on a rug below the rest
    accs = [r["accuracy"] for r in rows if _num(r.get("accuracy"))]
    floor = (min(accs) - 0.04 * ((max(accs) - min(accs)) or 1.0)) if accs else 0.0

    def coord(r: dict[str, Any], k: str) -> float | None:
        v = r.get(k)
        if _num(v):
            return v
        return floor if k == "accuracy" and r["category"] == "infeasible" else None

    pts = [r for r in rows if r["category"] in CATEGORY_STYLE and coord(r, x) is not None and coord(r, y) is not None]
    waits = {k: [r for r in sub if coord(r, x) is not None and coord(r, y) is not None]
             for k, sub in waiting_by_rung(rows).items()}
    Scatter = _scatter_cls(len(pts) + sum(len(v) for v in waits.values()))
    fig = go.Figure()
    for rung, sub in waits.items():
        fig.add_trace(Scatter(
            x=[coord(r, x) for r in sub], y=[coord(r, y) for r in sub], mode="markers",
            name=waiting_name(rung, len(sub)), customdata=[r["number"] for r in sub],
            hovertext=[_hover(r, (x, y)) for r in sub], hoverinfo="text", opacity=WAITING_STYLE["opacity"],
            marker={"color": WAITING_STYLE["color"], "size": WAITING_STYLE["size"], "symbol": WAITING_STYLE["symbol"]},
            meta={"category": "waiting", "rung": rung},
        ))
    for cat, style in CATEGORY_STYLE.items():
        sub = [r for r in pts if r["category"] == cat]
        fig.add_trace(Scatter(
            x=[coord(r, x) for r in sub], y=[coord(r, y) for r in sub], mode="markers",
            name=f"{style['name']} ({len(sub)})",
            customdata=[r["number"] for r in sub], hovertext=[_hover(r, (x, y)) for r in sub], hoverinfo="text",
            marker={"color": style["color"], "size": style["size"], "symbol": style["symbol"],
                    "line": {"width": 1, "color": "white"} if cat == "front" else None},
            meta={"category": cat},
        ))
    if front2d:
        fig.add_trace(go.Scatter(x=[p[x] for p in front2d], y=[p[y] for p in front2d], mode="lines",
                                 line={"color": "#d62728", "width": 1.5, "shape": "hv"}, hoverinfo="skip",
                                 name=f"front of {x} vs {y}", meta={"category": "front-line"}))
    _add_references(fig, references, x, y, [(coord(r, x), coord(r, y)) for r in pts])
    fig.update_layout(
        title=title or f"{AXIS_LABELS.get(y, y)} vs {AXIS_LABELS.get(x, x)}",
        xaxis_title=_axis_title(x), yaxis_title=_axis_title(y), template="plotly_white", height=520,
        legend={"orientation": "h", "y": -0.18}, margin={"l": 60, "r": 20, "t": 50, "b": 40}, clickmode="event",
        uirevision=f"{x}-{y}",
    )
    if x in LOG_AXES:
        fig.update_xaxes(type="log")
    if y in LOG_AXES:
        fig.update_yaxes(type="log")
    return fig


def _axis_title(name: str) -> str:
    better = "higher" if AXES.get(name) == "maximize" else "lower"
    return f"{AXIS_LABELS.get(name, name)} ({better} is better)"


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


REF_COLORS = ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
REF_SYMBOLS = {"preset": "diamond", "timm": "star"}
LABEL_GAP = 0.025  # two reference labels closer than this fraction of the axis share a tier


def label_tiers(positions: Sequence[float], *, gap: float = LABEL_GAP, tiers: int = 2) -> list[int | None]:
    """Lay out labels along one axis so they do not collide: ``positions`` are fractions of the
    axis (0..1); each label gets the first tier (0, 1, ...) whose previous label is at least
    ``gap`` away, or None (no room: the legend names it), in the input order."""
    last: list[float | None] = [None] * tiers
    out: list[int | None] = [None] * len(positions)
    for i in sorted(range(len(positions)), key=lambda i: positions[i]):
        for t in range(tiers):
            if last[t] is None or positions[i] - last[t] >= gap:
                out[i], last[t] = t, positions[i]
                break
    return out


def _axis_fraction(values: Sequence[float], log: bool):
    """A function from a value to its fraction of the axis spanned by ``values``."""
    vals = [math.log10(v) if log else v for v in values if _num(v) and (v > 0 or not log)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    span = (hi - lo) or 1.0
    return lambda v: ((math.log10(v) if log else v) - lo) / span


def _wrap(summary: str, width: int = 110) -> str:
    """A long genome summary broken at its ``" | "`` separators into lines of about ``width``."""
    lines, cur = [], ""
    for part in summary.split(" | "):
        if cur and len(cur) + 3 + len(part) > width:
            lines.append(cur + " |")
            cur = part
        else:
            cur = f"{cur} | {part}" if cur else part
    return "<br>".join(lines + [cur])


def _add_references(fig: go.Figure, refs: Sequence[dict[str, Any]], x: str, y: str,
                    pts: Sequence[tuple[float, float]] = ()) -> None:
    """Each reference in its own colour with a legend entry (name, kind, cost): a marker where its
    accuracy on this study's recipe is known, else a dotted line at its cost with a short label
    laid out by ``label_tiers`` (bottom, then top; none when both are taken)."""
    drawn = [r for r in refs if _num(r.get(x)) or _num(r.get(y))]
    lines = []
    for i, r in enumerate(drawn):
        color = REF_COLORS[i % len(REF_COLORS)]
        kind = r.get("kind") or "reference"
        if _num(r.get(x)) and _num(r.get(y)):
            fig.add_trace(go.Scatter(
                x=[r[x]], y=[r[y]], mode="markers", legendgroup="references",
                marker={"symbol": REF_SYMBOLS.get(kind, "square"), "size": 12, "color": color,
                        "line": {"width": 1, "color": "black"}},
                name=f"{r['label']} ({kind}): {_fmt(x, r[x])}, {_fmt(y, r[y])}",
                hovertext=[f"{r['name']}<br>{x}: {_fmt(x, r[x])}<br>{y}: {_fmt(y, r[y])}"], hoverinfo="text",
                meta={"category": f"ref-{kind}", "reference": r["name"]}))
        elif y == "accuracy" and _num(r.get(x)) or x == "accuracy" and _num(r.get(y)):
            axis = x if y == "accuracy" else y
            lines.append((r, axis, color))
            fig.add_trace(go.Scatter(  # the legend entry of a dotted line (shapes have none)
                x=[None], y=[None], mode="lines", line={"dash": "dot", "color": color, "width": 1.5},
                legendgroup="references", name=f"{r['label']} ({kind}): {_fmt(axis, r[axis])}, accuracy not evaluated",
                meta={"category": f"ref-{kind}", "reference": r["name"]}))
    if not lines:
        return
    vertical = y == "accuracy"
    along = x if vertical else y
    coords = [p[0] if vertical else p[1] for p in pts] + [r[along] for r, _, _ in lines]
    frac = _axis_fraction(coords, along in LOG_AXES)
    tiers = label_tiers([frac(r[along]) for r, _, _ in lines])
    for (r, axis, color), tier in zip(lines, tiers):
        v = r[axis]
        # (annotations are placed by hand: plotly puts a line's own annotation wrongly on log axes)
        pos = math.log10(v) if axis in LOG_AXES else v
        if vertical:
            fig.add_vline(x=v, line={"dash": "dot", "color": color, "width": 1.5})
            if tier is not None:
                fig.add_annotation(x=pos, y=0 if tier == 0 else 1, xref="x", yref="paper", text=r["label"],
                                   textangle=-90, showarrow=False, xanchor="right",
                                   yanchor="bottom" if tier == 0 else "top", font={"size": 10, "color": color})
        else:
            fig.add_hline(y=v, line={"dash": "dot", "color": color, "width": 1.5})
            if tier is not None:
                fig.add_annotation(y=pos, x=0 if tier == 0 else 1, xref="paper", yref="y", text=r["label"],
                                   showarrow=False, xanchor="left" if tier == 0 else "right", yanchor="bottom",
                                   font={"size": 10, "color": color})


def pareto3d_figure(rows: Sequence[dict[str, Any]], axes: Sequence[str]) -> go.Figure:
    """The 3D front for three objectives (front members in red, the rest faint)."""
    a, b, c = axes
    fig = go.Figure()
    for rung, sub in waiting_by_rung(rows).items():
        sub = [r for r in sub if all(_num(r.get(k)) for k in axes)]
        fig.add_trace(go.Scatter3d(
            x=[r[a] for r in sub], y=[r[b] for r in sub], z=[r[c] for r in sub], mode="markers",
            name=waiting_name(rung, len(sub)), customdata=[r["number"] for r in sub],
            hovertext=[_hover(r, axes) for r in sub], hoverinfo="text", meta={"category": "waiting", "rung": rung},
            marker={"color": WAITING_STYLE["color"], "size": 2, "opacity": 0.25}))
    for cat, style in CATEGORY_STYLE.items():
        sub = [r for r in rows if r["category"] == cat and all(_num(r.get(k)) for k in axes)]
        fig.add_trace(go.Scatter3d(
            x=[r[a] for r in sub], y=[r[b] for r in sub], z=[r[c] for r in sub], mode="markers",
            name=f"{style['name']} ({len(sub)})", customdata=[r["number"] for r in sub],
            hovertext=[_hover(r, axes) for r in sub], hoverinfo="text",
            marker={"color": style["color"], "size": 5 if cat == "front" else 2.5,
                    "opacity": 1.0 if cat == "front" else 0.35}))
    fig.update_layout(scene={"xaxis_title": a, "yaxis_title": b, "zaxis_title": c}, template="plotly_white",
                      height=520, title=f"3D front: {a}, {b}, {c}", margin={"l": 0, "r": 0, "t": 40, "b": 0},
                      uirevision="3d")
    return fig


def hypervolume_figure(hv: dict[str, Any]) -> go.Figure:
    """Hypervolume over trials and over wall time (two panels)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("over trials", "over wall time"))
    bt, bw = hv.get("by_trial") or [], hv.get("by_time") or []
    fig.add_trace(go.Scatter(x=[p["trial"] for p in bt], y=[p["hypervolume"] for p in bt], mode="lines",
                             line={"shape": "hv", "color": "#d62728"}, name="by trial"), row=1, col=1)
    hours = [p["elapsed_s"] / 3600 if p.get("elapsed_s") is not None else None for p in bw]
    fig.add_trace(go.Scatter(x=hours, y=[p["hypervolume"] for p in bw], mode="lines",
                             line={"shape": "hv", "color": "#1f77b4"}, name="by wall time"), row=1, col=2)
    fig.update_xaxes(title_text="trial number", row=1, col=1)
    fig.update_xaxes(title_text="hours since the first trial started", row=1, col=2)
    fig.update_yaxes(title_text="hypervolume", row=1, col=1)
    ref = hv.get("reference_point")
    fig.update_layout(template="plotly_white", height=330, showlegend=False,
                      title=f"Hypervolume (reference point {[float(f'{v:.4g}') for v in ref] if ref else '-'})",
                      margin={"l": 60, "r": 20, "t": 60, "b": 40})
    return fig


def hypervolume_compute_figure(hc: dict[str, Any]) -> go.Figure:
    """Hypervolume of the full-budget front against the epochs trained so far (an MO-ASHA study,
    ``nas.dashboard.views.hypervolume_over_compute``); a dotted line marks what training every
    candidate to the full budget would have cost."""
    pts = hc.get("points") or []
    fig = go.Figure(go.Scatter(x=[p["epochs"] for p in pts], y=[p["hypervolume"] for p in pts], mode="lines",
                               line={"shape": "hv", "color": "#d62728"}, name="hypervolume",
                               customdata=[p["trial"] for p in pts],
                               hovertemplate="after trial %{customdata}: %{x} epochs, hypervolume %{y:.4g}"
                                             "<extra></extra>"))
    full = hc.get("full_budget_epochs")
    if full:
        fig.add_vline(x=full, line={"dash": "dot", "color": "#7f7f7f", "width": 1.5})
        fig.add_annotation(x=full, y=1, xref="x", yref="paper", showarrow=False, xanchor="right", yanchor="top",
                           text=f"full budget for all {hc.get('candidates')} candidates: {full} epochs",
                           font={"size": 10, "color": "#555"})
    waits = ", ".join(f"{n} at {_epochs(k)}" for k, n in (hc.get("waiting") or {}).items()) or "none"
    ref = hc.get("reference_point")
    fig.update_layout(template="plotly_white", height=330, showlegend=False,
                      title=f"Hypervolume over training compute (MO-ASHA)<br><sup>{hc.get('epochs_trained')} epochs "
                            f"trained; waiting at rungs: {waits}; reference point "
                            f"{[float(f'{v:.4g}') for v in ref] if ref else '-'}</sup>",
                      xaxis_title="epochs trained, all trials together", yaxis_title="hypervolume (full-budget front)",
                      margin={"l": 60, "r": 20, "t": 60, "b": 40})
    if full:
        fig.update_xaxes(range=[0, 1.02 * max(full, pts[-1]["epochs"] if pts else 0)])
    return fig


def composition_figure(comp: Sequence[dict[str, Any]]) -> go.Figure:
    """Share of trials using each mixer / position encoding / stem / shape, front vs. all."""
    facets = ("mixer", "pos", "stem", "shape")
    fig = make_subplots(rows=1, cols=4, subplot_titles=("mixer", "position encoding", "stem", "shape"))
    for i, facet in enumerate(facets, start=1):
        sub = [c for c in comp if c["facet"] == facet]
        labels = [c["value"] for c in sub]
        fig.add_trace(go.Bar(x=labels, y=[c["all_share"] for c in sub], name="all evaluated trials",
                             marker_color="#9ecae1", showlegend=i == 1,
                             hovertext=[f"{c['all']} trials" for c in sub]), row=1, col=i)
        fig.add_trace(go.Bar(x=labels, y=[c["front_share"] for c in sub], name="Pareto front",
                             marker_color="#d62728", showlegend=i == 1,
                             hovertext=[f"{c['front']} front members" for c in sub]), row=1, col=i)
    fig.update_yaxes(tickformat=".0%")
    fig.update_yaxes(title_text="share", row=1, col=1)
    fig.update_layout(barmode="group", template="plotly_white", height=330, title="What the front is made of",
                      legend={"orientation": "h", "y": -0.25}, margin={"l": 60, "r": 20, "t": 60, "b": 40})
    return fig


def importance_figure(imp: Sequence[dict[str, Any]], *, top: int = 15) -> go.Figure:
    """fANOVA importance of genome features (``nas.dashboard.importance``), one group of bars per
    objective; the ``top`` features by their largest importance over the objectives."""
    if not imp:
        return message_figure("feature importance needs at least two evaluated trials whose genomes differ",
                              height=250)
    objectives = list(dict.fromkeys(i["objective"] for i in imp))
    best: dict[str, float] = {}
    for i in imp:
        best[i["param"]] = max(best.get(i["param"], 0.0), i["importance"])
    params = sorted(best, key=lambda p: -best[p])[:top]
    fig = go.Figure()
    for o in objectives:
        vals = {i["param"]: i["importance"] for i in imp if i["objective"] == o}
        fig.add_trace(go.Bar(y=params[::-1], x=[vals.get(p, 0.0) for p in params[::-1]], orientation="h", name=o))
    shown = "" if len(best) <= top else f" (top {top} of {len(best)})"
    fig.update_layout(barmode="group", template="plotly_white",
                      title=f"What matters: importance of genome features per objective (fANOVA){shown}",
                      xaxis_title="importance (sums to 1 per objective)",
                      height=max(250, 60 + 22 * len(params) * len(objectives)), margin={"l": 220, "r": 20, "t": 50, "b": 40})
    return fig


def architecture_figure(arch: dict[str, Any]) -> go.Figure:
    """The stages drawn (box width ~ depth, height ~ width, colour = mixer) and the per-stage
    FLOPs, parameters and latency."""
    stages = arch.get("stages") or []
    if not stages:
        return message_figure("this trial has no genome", height=250)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45],
                        subplot_titles=("stages (box width = depth, height = width)", "per-stage costs"),
                        )
    mixers = list(dict.fromkeys(s["mixer"] for s in stages))
    color = {m: MIXER_COLORS[i % len(MIXER_COLORS)] for i, m in enumerate(mixers)}
    x0, max_dim = 0.0, max(s["dim"] or 1 for s in stages)
    for s in stages:
        w, h = max(1, s["depth"] or 1), (s["dim"] or 1) / max_dim
        fig.add_shape(type="rect", x0=x0, x1=x0 + w, y0=-h / 2, y1=h / 2, fillcolor=color[s["mixer"]],
                      opacity=0.75, line={"color": "black", "width": 1}, row=1, col=1)
        fig.add_trace(go.Scatter(x=[x0 + w / 2], y=[0], mode="text", text=[f"{s['mixer']}<br>x{s['depth']} @{s['dim']}"],
                                 textfont={"size": 12, "color": "black"}, showlegend=False, hoverinfo="skip"), row=1, col=1)
        x0 += w + 0.4
    fig.update_xaxes(visible=False, row=1, col=1)
    fig.update_yaxes(visible=False, range=[-0.6, 0.6], row=1, col=1)
    labels = [f"stage {s['stage']}" for s in stages]
    # each cost as the stage's share of the stages' total, so the three fit one axis; hover: absolute
    for key, name, color, unit, scale in (("flops", "FLOPs", "#ff7f0e", "MMACs", 1e6),
                                          ("params", "params", "#2ca02c", "M", 1e6),
                                          ("latency_ms", "latency (CPU)", "#1f77b4", "ms", 1.0)):
        vals = [s.get(key) for s in stages]
        if all(v is None for v in vals):
            continue
        total = sum(v or 0 for v in vals) or 1.0
        fig.add_trace(go.Bar(x=labels, y=[(v or 0) / total for v in vals], name=name, marker_color=color,
                             hovertext=[f"{name}: {(v or 0) / scale:.4g} {unit}" for v in vals], hoverinfo="text"),
                      row=1, col=2)
    fig.update_yaxes(tickformat=".0%", title_text="share of the stages' total", row=1, col=2)
    title = f"trial {arch['number']}: {_wrap(arch.get('summary') or '')}"
    extra = 24 * title.count("<br>")
    fig.update_layout(template="plotly_white", height=320 + extra, title=title,
                      margin={"l": 20, "r": 20, "t": 70 + extra, "b": 30}, legend={"orientation": "h", "y": -0.15},
                      barmode="group")
    return fig


def learning_curve_figure(arch: dict[str, Any]) -> go.Figure:
    """Validation accuracy (and training loss when stored) per epoch."""
    acc = arch.get("accuracy_per_epoch") or []
    if not acc:
        return message_figure("no learning curve stored for this trial (not trained, or over budget)", height=260)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=list(range(1, len(acc) + 1)), y=acc, mode="lines+markers", name="val accuracy"))
    loss = arch.get("loss_per_epoch") or []
    if loss:
        fig.add_trace(go.Scatter(x=list(range(1, len(loss) + 1)), y=loss, mode="lines", name="train loss",
                                 line={"dash": "dot"}), secondary_y=True)
    fig.update_layout(template="plotly_white", height=260, title="learning curve", xaxis_title="epoch",
                      margin={"l": 50, "r": 20, "t": 40, "b": 40}, legend={"orientation": "h", "y": -0.3})
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", secondary_y=False)
    return fig
