"""The served dashboard in a real browser (Debian's headless chromium via selenium) while a
study is running: the front renders with the expected number of points, new trials appear
without a reload, clicking a point opens its architecture, and a screenshot is kept in
tests/artifacts/dashboard.png."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Debian's chromium/chromium-driver are not installed (apt-get install chromium chromium-driver; "
           ".ci/run installs them)")

POINT_CATEGORIES = ("front", "dominated", "excluded", "infeasible")
COUNT_JS = """
const gd = document.querySelector('#pareto .js-plotly-plot');
if (!gd || !gd.data) return -1;
const cats = arguments[0];
let n = 0;
for (const t of gd.data) { if (t.meta && cats.includes(t.meta.category)) n += (t.x || []).length; }
return n;
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expected_points(url: str, study: str) -> int:
    """What the page should draw on accuracy vs FLOPs, from the store via the data layer."""
    from nas.dashboard import data as D

    d = D.load_study_data(D.Store(url), study)
    # over-budget trials (not trained) are drawn on a rug below the others
    return sum(1 for r in d.rows if r["category"] in POINT_CATEGORIES and r["flops"] is not None
               and (r["accuracy"] is not None or r["category"] == "infeasible"))


def _wait(pred, timeout: float, what: str):
    t0 = time.time()
    last = None
    while time.time() - t0 < timeout:
        last = pred()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@pytest.fixture()
def live_study(tmp_path):
    """A store with 30 trials and a writer process that keeps the study running."""
    from nas.dashboard.demo import fast_storage, write_demo_study

    url = f"sqlite:///{tmp_path / 'live.db'}"
    write_demo_study(fast_storage(url), "live", 30, seed=3)
    target, done = tmp_path / "target", tmp_path / "done"
    target.write_text("30")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen([sys.executable, "-m", "nas.dashboard.demo", url, "live", str(target), str(done)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "nas.cli", "dashboard", "--storage", url, "--port", str(port),
                               "--study", "live", "--no-count-references"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield {"url": url, "port": port, "target": target, "done": done, "writer": writer, "server": server}
    finally:
        for p in (server, writer):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--no-first-run", "--window-size=1400,2200", f"--user-data-dir={tempfile.mkdtemp(prefix='nas-chrome-')}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_live_dashboard_in_chromium(live_study):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url, port = live_study["url"], live_study["port"]

    def up() -> bool:
        if live_study["server"].poll() is not None:
            raise AssertionError("server exited:\n" + live_study["server"].stdout.read().decode())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    _wait(up, 60, "the dashboard server to listen")
    _wait(lambda: live_study["done"].exists(), 60, "the writer to start")
    driver = _browser()
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        # 1. the front renders with the expected number of points
        expected = _expected_points(url, "live")
        assert expected > 0
        _wait(lambda: driver.execute_script(COUNT_JS, list(POINT_CATEGORIES)) == expected, 60,
              f"{expected} points on the front plot")
        # before any click: a prompt, no empty plots
        assert not driver.find_element(By.ID, "detail-box").is_displayed()
        assert driver.find_element(By.ID, "detail-hint").text.startswith("Click a point")
        n_front = driver.execute_script(
            "return document.querySelector('#pareto .js-plotly-plot').data"
            ".filter(t => t.meta && t.meta.category === 'front')[0].x.length")
        assert n_front >= 1
        # 2. the study keeps running: new trials appear without a reload
        driver.execute_script("window.__not_reloaded = 1;")
        live_study["target"].write_text("42")
        _wait(lambda: live_study["done"].read_text().strip() == "42", 90, "the writer to add 12 trials")
        expected2 = _expected_points(url, "live")
        assert expected2 >= expected + 12
        _wait(lambda: driver.execute_script(COUNT_JS, list(POINT_CATEGORIES)) == expected2, 60,
              f"{expected2} points after the new trials")
        assert driver.execute_script("return window.__not_reloaded") == 1, "the page was reloaded"
        # 3. clicking a front point opens its architecture
        numbers = driver.execute_script(
            "return document.querySelector('#pareto .js-plotly-plot').data"
            ".filter(t => t.meta && t.meta.category === 'front')[0].customdata")
        trace_idx = driver.execute_script(
            "return document.querySelector('#pareto .js-plotly-plot').data"
            ".findIndex(t => t.meta && t.meta.category === 'front')")
        points = driver.find_elements(By.CSS_SELECTOR, f"#pareto .scatterlayer .trace:nth-of-type({trace_idx + 1}) path.point")
        assert points, "no SVG markers for the front trace"
        ActionChains(driver).move_to_element(points[0]).pause(0.3).click().perform()
        hint = _wait(lambda: (lambda t: t if t.startswith("trial ") else None)(
            driver.find_element(By.ID, "detail-hint").text), 30, "the clicked trial's detail")
        clicked = int(hint.split()[1])
        assert clicked in numbers
        cmd = _wait(lambda: driver.find_element(By.ID, "export-cmd").text, 30, "the export command")
        assert f"nas export live --storage {url} --trial {clicked} --out" in cmd
        _wait(lambda: driver.execute_script(
            "const g = document.querySelector('#arch .js-plotly-plot'); return g && g.layout && g.layout.shapes"
            " && g.layout.shapes.length"), 30, "the stage drawing")
        stages = driver.execute_script("return document.querySelector('#arch .js-plotly-plot').layout.shapes.length")
        assert stages >= 1
        assert driver.find_element(By.ID, "detail-box").is_displayed()
        # 4. clicking a table row opens that trial
        cells = [c for c in driver.find_elements(By.CSS_SELECTOR, "#table td[data-dash-column='number']")
                 if c.text.strip() and int(c.text) != clicked]
        assert cells, "no table rows"
        row_trial = int(cells[0].text)
        cells[0].click()
        _wait(lambda: driver.find_element(By.ID, "detail-hint").text.startswith(f"trial {row_trial} "), 30,
              f"trial {row_trial}'s detail after clicking its row")
        assert f"--trial {row_trial} " in driver.find_element(By.ID, "export-cmd").text
        assert "live: 4" in driver.find_element(By.ID, "studies").text  # the study list is live too
        driver.execute_script("window.scrollTo(0, 0)")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    finally:
        driver.quit()

