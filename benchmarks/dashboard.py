"""Dashboard at scale: a store with 5,000 trials (synthetic rows written through Optuna in the
real store format) loads and draws in under 3 s, and the served page stays responsive.

Measured, interleaved, medians over --repeats:
  ours      fresh read-only Store -> nas.dashboard.data records -> every study-wide figure + the
            table's first page (what the page does on its first tick)
  baseline  the same records read through Optuna's API (optuna.load_study + get_trials, as
            nas.front.load_trials does) -> the same figures
  refresh   a tick when nothing changed (fingerprint query) and a re-read with the cache warm
Also: fANOVA importance (computed apart, not on the first-render path) and, when Debian's
chromium is installed, the served page's first render and click-to-detail time.

    .venv/bin/python benchmarks/dashboard.py --out benchmarks/results/dashboard.json
    .venv/bin/python benchmarks/dashboard.py --quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine_info, write_json  # noqa: E402


def build_store(path: Path, n: int) -> tuple[str, float | None]:
    """The store at ``path`` with ``n`` trials (reused when it already holds them)."""
    import optuna

    from nas.dashboard.demo import fast_storage, write_demo_study

    url = f"sqlite:///{path}"
    if path.exists():
        try:
            s = optuna.load_study(study_name="bench", storage=url)
            if len(s.get_trials(deepcopy=False)) == n:
                return url, None
        except Exception:
            pass
        path.unlink()
    t0 = time.perf_counter()
    st = fast_storage(url)
    write_demo_study(st, "bench", n, seed=0, fail_every=25)
    st.engine.dispose()
    return url, time.perf_counter() - t0


def ours(url: str) -> dict[str, float]:
    from nas.dashboard import data as D
    from nas.dashboard.app import build_views, table_rows

    t0 = time.perf_counter()
    store = D.Store(url)
    data = D.load_study_data(store, "bench")
    t1 = time.perf_counter()
    refs = D.cached_reference_points(data.info, data.records, D.default_references(data.info))
    views = build_views(data, "flops", "accuracy", refs)
    table_rows(data.rows)[:25]
    for f in views.values():
        if f is not None:
            f.to_plotly_json()  # what Dash serialises
    t2 = time.perf_counter()
    # a tick with nothing new, then a re-read with the finished trials cached
    fp_t0 = time.perf_counter()
    store.fingerprint(data.info)
    fp_t1 = time.perf_counter()
    D.load_study_data(store, "bench")
    t3 = time.perf_counter()
    return {"load_s": t1 - t0, "draw_s": t2 - t1, "total_s": t2 - t0, "tick_nochange_s": fp_t1 - fp_t0,
            "reload_cached_s": t3 - fp_t1, "n": len(data.rows), "front": len(data.front)}


def baseline(url: str) -> dict[str, float]:
    """Optuna's API reader (what nas.front.load_trials does) feeding the same figures."""
    from nas import front as F
    from nas.dashboard import data as D
    from nas.dashboard.app import build_views, table_rows

    t0 = time.perf_counter()
    info = D.Store(url).study("bench")
    records = D.load_trials_optuna(url, "bench", [n for n, _ in info.objectives])
    front = F.pareto_front(records, info.objectives)
    starts = [D._as_dt(r.datetime_start) for r in records if r.datetime_start]
    rows = D.trial_rows(records, info.objectives, {r.number for r in front}, min(starts))
    data = D.StudyData(info=info, records=records, rows=rows, front=[r.number for r in front])
    t1 = time.perf_counter()
    views = build_views(data, "flops", "accuracy", [])
    table_rows(data.rows)[:25]
    for f in views.values():
        if f is not None:
            f.to_plotly_json()
    t2 = time.perf_counter()
    return {"load_s": t1 - t0, "draw_s": t2 - t1, "total_s": t2 - t0}


def importance(url: str) -> float:
    from nas.dashboard import data as D

    data = D.load_study_data(D.Store(url), "bench")
    t0 = time.perf_counter()
    D.param_importance(data, max_trials=500)
    return time.perf_counter() - t0


def browser(url: str, n_expected: int, screenshot: str | None = None) -> dict[str, float] | None:
    """Served page: time to the first full render of the front and from a click to the detail."""
    chromium, driver_bin = shutil.which("chromium"), "/usr/bin/chromedriver"
    if not chromium or not Path(driver_bin).exists():
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "nas.cli", "dashboard", "--storage", url, "--port", str(port),
                               "--no-count-references"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
              "--window-size=1400,1000", f"--user-data-dir={tempfile.mkdtemp(prefix='nas-bench-chrome-')}"):
        opts.add_argument(a)
    driver = None
    try:
        for _ in range(240):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.25)
        driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
        count = ("const gd=document.querySelector('#pareto .js-plotly-plot'); if(!gd||!gd.data) return -1;"
                 "let n=0; for(const t of gd.data){ if(t.meta && ['front','dominated','excluded','infeasible']"
                 ".includes(t.meta.category)) n+=(t.x||[]).length;} return n;")
        t0 = time.perf_counter()
        driver.get(f"http://127.0.0.1:{port}/")
        while driver.execute_script(count) != n_expected:
            if time.perf_counter() - t0 > 120:
                raise RuntimeError("page did not render the expected points in 120 s")
            time.sleep(0.05)
        first = time.perf_counter() - t0
        # click a table row (the table is paginated server-side) -> the architecture panel
        t0 = time.perf_counter()
        driver.find_element(By.CSS_SELECTOR, "#table td").click()
        while not driver.find_element(By.ID, "detail-hint").text.startswith("trial "):
            if time.perf_counter() - t0 > 60:
                raise RuntimeError("no detail after 60 s")
            time.sleep(0.05)
        click = time.perf_counter() - t0
        webgl = driver.execute_script("const c=document.createElement('canvas');"
                                      "return !!(c.getContext('webgl')||c.getContext('experimental-webgl'));")
        if screenshot:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(screenshot)
        return {"first_render_s": first, "click_to_detail_s": click, "webgl": bool(webgl)}
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(10)


def _expected_points(url: str) -> int:
    from nas.dashboard import data as D

    d = D.load_study_data(D.Store(url), "bench")
    return sum(1 for r in d.rows if r["category"] in ("front", "dominated", "excluded", "infeasible")
               and r["flops"] is not None and (r["accuracy"] is not None or r["category"] == "infeasible"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="300 trials, 2 repeats, no browser")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--store", default=None, help="where to keep the synthetic store (reused across runs)")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--screenshot", default=None, help="save the served page (after the click) to this PNG")
    args = ap.parse_args()
    n = args.trials or (300 if args.quick else 5000)
    repeats = args.repeats or (2 if args.quick else 5)
    path = Path(args.store or Path(tempfile.gettempdir()) / f"nas-dashboard-bench-{n}.db")
    url, build_s = build_store(path, n)
    print(f"store {path}: {n} trials" + (f" written in {build_s:.1f} s" if build_s else " (reused)"))

    rows = []
    for i in range(repeats):  # interleaved: ours, baseline, ours, baseline, ...
        for name, fn in (("ours", ours), ("baseline", baseline)) if i % 2 == 0 else (("baseline", baseline), ("ours", ours)):
            r = fn(url)
            r.update(variant=name, repeat=i)
            rows.append(r)
    imp = importance(url)
    n_points = _expected_points(url)
    page = None if (args.quick or args.no_browser) else browser(url, n_points, args.screenshot)

    def med(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["variant"] == variant and key in r)

    o_tot, b_tot = med("ours", "total_s"), med("baseline", "total_s")
    print(f"\n{'variant':<10}{'load s':>10}{'draw s':>10}{'total s':>10}")
    for v in ("ours", "baseline"):
        print(f"{v:<10}{med(v, 'load_s'):>10.3f}{med(v, 'draw_s'):>10.3f}{med(v, 'total_s'):>10.3f}")
    print(f"\nours / baseline (total): {o_tot / b_tot:.2f}   tick with no change: {med('ours', 'tick_nochange_s') * 1e3:.1f} ms"
          f"   re-read (cache warm): {med('ours', 'reload_cached_s'):.3f} s   fANOVA importance: {imp:.2f} s")
    if page:
        print(f"served page: first render {page['first_render_s']:.2f} s, click -> detail {page['click_to_detail_s']:.2f} s")
    summary = {
        "trials": n,
        "load_and_draw_s": o_tot,
        "load_s": med("ours", "load_s"),
        "draw_s": med("ours", "draw_s"),
        "under_3s": o_tot < 3.0,
        "baseline_optuna_api_load_and_draw_s": b_tot,
        "ratio_vs_optuna_api_reader": o_tot / b_tot,
        "tick_no_change_ms": med("ours", "tick_nochange_s") * 1e3,
        "reread_cache_warm_s": med("ours", "reload_cached_s"),
        "importance_s": imp,
        "front_size": next(r["front"] for r in rows if "front" in r),
    }
    if page:
        summary.update(page_first_render_s=page["first_render_s"], page_click_to_detail_s=page["click_to_detail_s"])
    try:
        summary["load_average_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    if args.out:
        write_json(args.out, summary, rows, machine=machine_info("cpu"), store_build_s=build_s, page=page,
                   command=" ".join([".venv/bin/python benchmarks/dashboard.py", *sys.argv[1:]]))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
