"""The live dashboard: a Dash app over the study store (read-only).

A 2-second ``dcc.Interval`` asks the store for a cheap fingerprint (trial count, last id,
finished count, last completion); only when it changed are the trials re-read (finished
trials are cached) and the views rebuilt, so a running search shows up within seconds and an
idle page costs one small query per tick. Every view is built from ``nas.dashboard.data``
records by ``nas.dashboard.figures``; a store or study that cannot be read gives a message,
never a traceback.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from nas.dashboard import data as D
from nas.dashboard import figures as FIG

TICK_MS = 2000
REFERENCE_WAIT_S = 120  # the server waits at most this long for reference costs before serving
PAGE_SIZE = 25
TABLE_COLUMNS = [
    ("number", "trial"), ("state", "state"), ("category", "category"), ("feasible", "feasible"),
    ("accuracy", "accuracy"), ("flops", "FLOPs"), ("params", "params"), ("latency_ms", "latency ms"),
    ("mixer", "mixer"), ("pos", "pos"), ("stem", "stem"), ("shape", "shape"), ("epochs", "epochs"),
    ("summary", "genome"),
]
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DETAIL_PROMPT = ("Click a point on the plot or a row of the table to see that trial's stages, per-stage costs, "
                 "learning curve and export command.")
HIDDEN = {"display": "none"}


class DashboardState:
    """Server-side state shared by the callbacks: the store and the latest data per study."""

    def __init__(self, storage_url: str, *, references: list[str] | None = None,
                 count_references: bool = True) -> None:
        self.url = storage_url
        self.references = references
        self.count_references = count_references
        self.error: str | None = None
        self.store: D.Store | None = None
        self._data: dict[str, D.StudyData] = {}
        self._imp: dict[str, tuple[tuple, list]] = {}
        self._lock = threading.Lock()
        self._ref_threads: dict[tuple, threading.Thread] = {}
        self.connect()

    def connect(self) -> None:
        try:
            self.store = D.Store(self.url)
            self.error = None
        except D.StoreError as e:
            self.store, self.error = None, str(e)

    def studies(self) -> list[D.StudyInfo]:
        if self.store is None:
            self.connect()
        if self.store is None:
            return []
        try:
            return self.store.studies()
        except D.StoreError as e:
            self.error = str(e)
            return []

    def fingerprint(self, study: str) -> str:
        """Changes whenever the study gains or finishes a trial (or a reference cost lands)."""
        if self.store is None:
            self.connect()
            if self.store is None:
                return f"error:{self.error}"
        try:
            info = self.store.study(study)
            fp = self.store.fingerprint(info)
        except D.StoreError as e:
            return f"error:{e}"
        return "|".join(fp) + f"|refs={D.cached_reference_count()}"

    def data(self, study: str) -> D.StudyData:
        """The study's data, re-read only when its fingerprint changed."""
        if self.store is None:
            raise D.StoreError(self.error or f"cannot reach the store {D.redact(self.url)}")
        with self._lock:
            info = self.store.study(study)
            fp = self.store.fingerprint(info)
            cached = self._data.get(study)
            if cached is not None and cached.fingerprint == fp:
                return cached
            data = D.load_study_data(self.store, study)
            self._data[study] = data
            self._start_reference_count(data.info)
            return data

    def reference_names(self, info: D.StudyInfo, records=()) -> list[str]:
        """``--references`` if given, else the few nearest the study's budget (``default_references``)."""
        return list(self.references) if self.references is not None else D.default_references(info, records)

    def warm_references(self) -> list[threading.Thread]:
        """Count every study's reference costs in the background (seconds per timm model the
        first time, then from the disk cache), started with the server so the page has them
        from its first view; the threads, for ``serve`` to wait on."""
        return [t for info in self.studies() if (t := self._start_reference_count(info)) is not None]

    def _start_reference_count(self, info: D.StudyInfo) -> threading.Thread | None:
        if not self.count_references:
            return None
        names = list(dict.fromkeys(D.reference_candidates(info) + list(self.references or [])))
        key = (info.name, info.img_size, info.num_classes, tuple(names))
        if key in self._ref_threads:
            return self._ref_threads[key]

        def work() -> None:
            for n in names:
                try:
                    D.warm_references(info, [n])
                except Exception:  # shown as unavailable on the page
                    logging.getLogger(__name__).exception("counting %s", n)

        t = threading.Thread(target=work, name=f"refs-{info.name}", daemon=True)
        self._ref_threads[key] = t
        t.start()
        return t

    def importance(self, data: D.StudyData) -> list[dict[str, Any]]:
        """fANOVA importance, recomputed when the number of evaluated trials grew by 10%."""
        n = sum(1 for r in data.rows if r["category"] in ("front", "dominated"))
        old = self._imp.get(data.info.name)
        if old is not None and n <= old[0][0] * 1.1 and old[0][1] == data.info.study_id:
            return old[1]
        imp = D.param_importance(data, max_trials=500)
        self._imp[data.info.name] = ((n, data.info.study_id), imp)
        return imp


def create_app(storage_url: str, *, study: str | None = None, references: list[str] | None = None,
               count_references: bool = True, tick_ms: int = TICK_MS):
    """The Dash app for the store at ``storage_url`` (``study``: the one shown first)."""
    import dash
    from dash import Input, Output, State, dash_table, dcc, html
    from dash.exceptions import PreventUpdate

    _preload_lazy_imports()
    state = DashboardState(storage_url, references=references, count_references=count_references)
    app = dash.Dash(__name__, title="attention NAS dashboard", update_title=None)
    app.server.config["NAS_STATE"] = state
    axis_options = [{"label": D.AXIS_LABELS[a], "value": a} for a in D.AXES]

    def serve_layout():
        infos = state.studies()
        names = [i.name for i in infos]
        first = study if study in names else (names[0] if names else study)
        banner = []
        if state.error:
            banner = [html.Div(f"Cannot read the store: {state.error}", id="store-error", className="error")]
        elif not names:
            banner = [html.Div(f"The store {D.redact(storage_url)} holds no studies yet.", id="store-error",
                               className="error")]
        elif study and study not in names:
            banner = [html.Div(f"No study {study!r} in this store; showing {first!r}. Studies: {', '.join(names)}",
                               id="store-error", className="error")]
        overview = study_chips(infos)
        return html.Div([
            html.H2(["attention NAS ", html.Small(D.redact(storage_url), style={"color": "#888"})]),
            *banner,
            html.Div(overview, id="studies"),
            html.Div([
                html.Label("study"), dcc.Dropdown(id="study", options=names, value=first, clearable=False,
                                                  style={"width": "260px"}),
                html.Label("x"), dcc.Dropdown(id="x-axis", options=axis_options, value="flops", clearable=False,
                                              style={"width": "200px"}),
                html.Label("y"), dcc.Dropdown(id="y-axis", options=axis_options, value="accuracy",
                                              clearable=False, style={"width": "200px"}),
                html.Label("references"), dcc.Dropdown(id="refs", multi=True, style={"minWidth": "380px"}),
            ], className="controls"),
            html.Div(id="status", className="status"),
            dcc.Graph(id="pareto", config={"displaylogo": False}, figure=FIG.message_figure("reading the study ...")),
            html.Div(dcc.Graph(id="pareto3d"), id="pareto3d-box"),
            html.Div([
                html.H3("Selected architecture"),
                html.Div(DETAIL_PROMPT, id="detail-hint"),
                # hidden until a trial is selected: no empty axes before the first click
                html.Div(id="detail-box", style=HIDDEN, children=[
                    html.Button("measure per-stage latency (CPU, batch 1)", id="measure-latency", n_clicks=0),
                    dcc.Loading(dcc.Graph(id="arch")), dcc.Graph(id="curve"),
                    html.Pre(id="export-cmd", className="cmd"),
                ]),
            ], id="detail"),
            # a sentence, not empty axes, until each view's data arrives
            dcc.Graph(id="hv", figure=FIG.message_figure("computing the hypervolume ...", height=250)),
            # MO-ASHA studies only: hypervolume over the epochs trained
            html.Div(dcc.Graph(id="hv-compute"), id="hv-compute-box", style=HIDDEN),
            dcc.Graph(id="composition", figure=FIG.message_figure("counting what the front is made of ...", height=250)),
            dcc.Graph(id="importance", figure=FIG.message_figure("computing feature importance (fANOVA) ...",
                                                                 height=250)),
            html.H3("Trials"),
            html.Div([
                html.Label("state"), dcc.Dropdown(id="state-filter", multi=True, style={"minWidth": "250px"},
                                                  options=["COMPLETE", "RUNNING", "PRUNED", "FAIL", "WAITING"]),
                html.Label("feasible"), dcc.Dropdown(id="feasible-filter", options=["yes", "no", "?"], multi=True,
                                                     style={"minWidth": "160px"}),
            ], className="controls"),
            dash_table.DataTable(
                id="table", columns=[{"name": n, "id": c} for c, n in TABLE_COLUMNS], page_current=0,
                page_size=PAGE_SIZE, page_action="custom", sort_action="custom", sort_mode="single", sort_by=[],
                tooltip_duration=None, style_table={"overflowX": "auto"}, style_cell={"fontSize": 12, "maxWidth": "420px",
                                                               "overflow": "hidden", "textOverflow": "ellipsis"},
                style_data_conditional=[{"if": {"filter_query": '{category} = "front"'},
                                         "backgroundColor": "#fde0dd"}]),
            dcc.Interval(id="tick", interval=tick_ms),
            dcc.Store(id="version"), dcc.Store(id="selected"),
        ], style={"fontFamily": "sans-serif", "margin": "12px"})

    app.layout = serve_layout
    app.index_string = app.index_string.replace("</head>", _CSS + "</head>")

    @app.callback(Output("version", "data"), Input("tick", "n_intervals"), Input("study", "value"),
                  State("version", "data"))
    def poll(_n, name, old):
        fp = state.fingerprint(name) if name else f"error:{state.error or 'no study'}"
        if fp == old:
            raise PreventUpdate
        return fp

    def get_data(name):
        if not name:
            raise D.StoreError(state.error or f"the store {D.redact(storage_url)} holds no studies")
        return state.data(name)

    @app.callback(Output("refs", "options"), Output("refs", "value"), Input("study", "value"))
    def refs_for_study(name):
        try:
            info = state.store.study(name) if state.store and name else None
        except D.StoreError:
            info = None
        if info is None:
            return [], []
        try:
            records = state.data(name).records
        except D.StoreError:
            records = []
        names = state.reference_names(info, records)
        from search_space import PRESETS

        options = sorted(set(names) | set(D.reference_candidates(info)) | {f"preset:{p}" for p in PRESETS})
        return options, names

    @app.callback(Output("pareto", "figure"), Output("pareto3d", "figure"), Output("pareto3d-box", "style"),
                  Output("hv", "figure"), Output("hv-compute", "figure"), Output("hv-compute-box", "style"),
                  Output("composition", "figure"), Output("status", "children"),
                  Output("studies", "children"), Input("version", "data"), Input("x-axis", "value"), Input("y-axis", "value"), Input("refs", "value"),
                  State("study", "value"))
    def draw(_version, x, y, refs, name):
        try:
            data = get_data(name)
        except D.StoreError as e:
            msg = FIG.message_figure(str(e))
            return msg, msg, HIDDEN, msg, msg, HIDDEN, msg, str(e), dash.no_update
        chips = study_chips(state.studies())  # every study in the store, kept current
        n = len(data.rows)
        if n == 0:
            msg = FIG.message_figure(f"study {name!r} has no trials yet; this page updates as they arrive")
            return msg, msg, HIDDEN, msg, msg, HIDDEN, msg, f"{name}: no trials yet", chips
        built = build_views(data, x, y, D.cached_reference_points(data.info, data.records, refs or []))
        hidden = {} if built["pareto3d"] is not None else {"display": "none"}
        counts = {}
        for r in data.rows:
            counts[r["category"]] = counts.get(r["category"], 0) + 1
        status = (f"{name}: {n} trials; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                  + f"; updated {time.strftime('%H:%M:%S')}")
        hc = built["hv_compute"]
        return (built["pareto"], built["pareto3d"] or FIG.message_figure(""), hidden, built["hv"],
                hc or FIG.message_figure(""), {} if hc is not None else HIDDEN, built["composition"], status, chips)

    # after the front is drawn (its status line changes), not alongside: it is the slowest view
    @app.callback(Output("importance", "figure"), Input("status", "children"), State("study", "value"))
    def draw_importance(_status, name):
        try:
            data = get_data(name)
            return FIG.importance_figure(state.importance(data))
        except D.StoreError as e:
            return FIG.message_figure(str(e), height=250)

    @app.callback(Output("table", "data"), Output("table", "page_count"), Output("table", "tooltip_data"),
                  Input("version", "data"),
                  Input("table", "page_current"), Input("table", "page_size"), Input("table", "sort_by"),
                  Input("state-filter", "value"), Input("feasible-filter", "value"), State("study", "value"))
    def table(_version, page, size, sort_by, states, feas, name):
        try:
            data = get_data(name)
        except D.StoreError:
            return [], 1, []
        rows = table_rows(data.rows, states=states, feasible=feas, sort_by=sort_by)
        size = size or PAGE_SIZE
        shown = rows[page * size:(page + 1) * size]
        # the genome column is cut at the cell's width: its whole summary on hover
        tips = [{"summary": {"value": r.get("summary") or "", "type": "text"}} for r in shown]
        return shown, max(1, -(-len(rows) // size)), tips

    @app.callback(Output("selected", "data"), Input("pareto", "clickData"), Input("pareto3d", "clickData"),
                  Input("table", "active_cell"), State("table", "data"))
    def select(click, click3d, cell, rows):
        trig = dash.ctx.triggered_id
        if trig in ("pareto", "pareto3d"):
            c = click if trig == "pareto" else click3d
            try:
                return int(c["points"][0]["customdata"])
            except (TypeError, KeyError, IndexError, ValueError):
                raise PreventUpdate from None
        if trig == "table" and cell and rows and cell["row"] < len(rows):
            return int(rows[cell["row"]]["number"])
        raise PreventUpdate

    @app.callback(Output("arch", "figure"), Output("curve", "figure"), Output("export-cmd", "children"),
                  Output("detail-hint", "children"), Output("detail-box", "style"), Input("selected", "data"), Input("measure-latency", "n_clicks"),
                  State("study", "value"))
    def detail(number, _clicks, name):
        if number is None:
            raise PreventUpdate
        measure = dash.ctx.triggered_id == "measure-latency"
        try:
            data = get_data(name)
        except D.StoreError as e:
            return dash.no_update, dash.no_update, "", str(e), HIDDEN
        rec = data.record(number)
        if rec is None:
            return dash.no_update, dash.no_update, "", f"no trial {number}", HIDDEN
        try:
            arch = D.architecture(rec, study_name=name, storage_url=storage_url, compute=True,
                                  img_size=data.info.img_size, measure_latency=measure)
        except Exception as e:  # a genome this code cannot build: say so, keep the page
            arch = D.architecture(rec, study_name=name, storage_url=storage_url, img_size=data.info.img_size)
            arch["error"] = D._first_line(e)
        hint = f"trial {number} ({rec.state}); " + ", ".join(f"{k} {FIG._fmt(k, v)}" for k, v in rec.values.items())
        if arch.get("error"):
            hint += f" (per-stage costs unavailable: {arch['error']})"
        return FIG.architecture_figure(arch), FIG.learning_curve_figure(arch), arch["export_command"], hint, {}

    return app


def study_chips(infos: list[D.StudyInfo]) -> list[Any]:
    """One line per study in the store: name, trials, objectives."""
    from dash import html

    return [html.Span(f"{i.name}: {i.n_trials} trials, objectives "
                      f"{', '.join(f'{n} ({d[:3]})' for n, d in i.objectives)}", className="study-chip")
            for i in infos]


def _preload_lazy_imports() -> None:
    """Import what plotly and the data layer import lazily, once, before the threaded server
    starts: two callbacks importing pandas for the first time at once can see it half-initialised."""
    import importlib

    for name in ("numpy", "pandas", "plotly.graph_objects", "plotly.subplots", "optuna"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def build_views(data: D.StudyData, x: str, y: str, refs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every study-wide figure from the data layer's records (shared by the page and the report)."""
    names = [n for n, _ in data.objectives]
    out: dict[str, Any] = {}
    out["pareto"] = FIG.pareto_figure(data.rows, D.front_2d(data.records, x, y, study=data), x, y, references=refs,
                                      title=f"{data.info.name}: {D.AXIS_LABELS.get(y, y)} vs {D.AXIS_LABELS.get(x, x)}")
    out["pareto3d"] = FIG.pareto3d_figure(data.rows, names) if len(names) == 3 else None
    out["hv"] = FIG.hypervolume_figure(D.hypervolume_history(data))
    hc = D.hypervolume_over_compute(data)  # None unless the study ran MO-ASHA
    out["hv_compute"] = FIG.hypervolume_compute_figure(hc) if hc is not None else None
    out["composition"] = FIG.composition_figure(D.composition(data))
    return out


def table_rows(rows: list[dict[str, Any]], *, states: list[str] | None = None, feasible: list[str] | None = None,
               sort_by: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Rows filtered by state and feasibility and sorted (missing values last)."""
    out = [r for r in rows if (not states or r["state"] in states) and (not feasible or r["feasible"] in feasible)]
    if sort_by:
        col, desc = sort_by[0]["column_id"], sort_by[0]["direction"] == "desc"
        present = [r for r in out if r.get(col) is not None]
        missing = [r for r in out if r.get(col) is None]
        present.sort(key=lambda r: r[col] if not isinstance(r[col], str) else r[col].lower(), reverse=desc)
        out = present + missing
    return [{c: _cell(r.get(c)) for c, _ in TABLE_COLUMNS} for r in out]


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.6g}")
    return v


def check_host(host: str) -> str | None:
    """A warning when ``host`` exposes the dashboard beyond this machine, else None."""
    if host in LOCAL_HOSTS:
        return None
    return (f"warning: serving on {host} makes the dashboard (study names, genomes, the store's URL) reachable "
            f"from other machines; it has no authentication. Use --host 127.0.0.1 to keep it local.")


def serve(storage_url: str, *, host: str = "127.0.0.1", port: int = 8050, study: str | None = None,
          references: list[str] | None = None, count_references: bool = True) -> None:
    """Build the app and serve it until interrupted."""
    warning = check_host(host)
    if warning:
        print(warning, file=sys.stderr)
    app = create_app(storage_url, study=study, references=references, count_references=count_references)
    threads = app.server.config["NAS_STATE"].warm_references()
    if threads and any(t.is_alive() for t in threads):
        print(f"nas dashboard: counting reference models' costs (once; cached in {D.reference_cache_path()}) ...",
              file=sys.stderr)
        deadline = time.monotonic() + REFERENCE_WAIT_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    print(f"nas dashboard: http://{host}:{port}/  (store {D.redact(storage_url)}, read-only)", file=sys.stderr)
    app.run(host=host, port=port, debug=False)


_CSS = """<style>
.controls{display:flex;gap:10px;align-items:center;flex-wrap:wrap;margin:8px 0}
.status{color:#555;margin:6px 0;font-size:13px}
.error{background:#fde0dd;border:1px solid #d62728;padding:8px;margin:8px 0}
.study-chip{display:inline-block;background:#f0f0f0;border-radius:4px;padding:2px 8px;margin:2px;font-size:12px}
.cmd{background:#f6f8fa;padding:8px;border:1px solid #ddd}
#detail{border-top:1px solid #ddd;margin-top:10px}
</style>"""
