"""report.html in a real headless Chromium (the Debian package, driven by Selenium), on a smoke grid.

Skipped, with the reason, where Chromium, its driver or Selenium is missing; ``.ci/run`` installs them. A
screenshot of each page state checked is kept in ``$SCRAPBENCH_TEST_ARTIFACTS`` (default: ``test-artifacts/``
at the repository root, git-ignored).
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import math
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser import chromium, console_errors, missing_browser, requested_urls
from PIL import Image
from toy_method import ColourDistance

from scrapbench.core import registry
from scrapbench.report.dataset_report import build_report
from scrapbench.report.html.tables import table_files
from scrapbench.run.grid import run_benchmark
from scrapbench.run.plan import RunOptions

pytestmark = pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser()))

XSS = "<img src=x onerror=alert(1)>"
ARTIFACTS = Path(os.environ.get("SCRAPBENCH_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "test-artifacts")


class CraftedName(ColourDistance):
    """The toy method, as a plugin whose display name is markup."""

    display_name = XSS


@pytest.fixture(scope="module")
def report(tmp_path_factory, smoke_dataset):
    """A smoke grid (the toy method and the crafted plugin, one seed each) and its report."""
    root = tmp_path_factory.mktemp("html_browser")
    registry.list_methods()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._REGISTRY, "toy", registry.MethodSpec("toy", ColourDistance, "toy", ("table2",)))
        patch.setitem(registry._REGISTRY, "crafted", registry.MethodSpec("crafted", CraftedName, "crafted",
                                                                          ("table2",), {"noise": 20.0}))
        results = run_benchmark(smoke_dataset, ["toy", "crafted"], range(1),
                                RunOptions(preset="smoke", out=root / "runs", show_progress=False))
        assert {r.status for r in results} == {"done"}
        build_report(root / "runs", root / "report", n_boot=20)
    return root / "report"


@pytest.fixture(scope="module")
def driver():
    with chromium() as browser:
        yield browser


def _open(driver, url: str) -> None:
    """Load ``url`` on a clean slate: the logs of what came before are read and dropped."""
    driver.get("about:blank")
    console_errors(driver)
    requested_urls(driver)
    driver.get(url)


def _keep(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"report_html_{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 0
    return path


def _viewer_data(driver) -> dict:
    return json.loads(driver.execute_script("return document.getElementById('viewer-data').textContent"))


def test_page_loads_without_errors_or_requests_outside_its_folder(driver, report):
    _open(driver, (report / "report.html").as_uri())
    assert console_errors(driver) == []
    urls = requested_urls(driver)
    folder = report.as_uri() + "/"
    assert urls and all(u.startswith(folder) for u in urls), [u for u in urls if not u.startswith(folder)]
    driver.execute_script("document.getElementById('viewer').scrollIntoView()")  # thumbnails load when seen
    assert driver.execute_async_script(
        "const done = arguments[0]; Promise.all([...document.querySelectorAll('#viewer-grid img')].slice(0, 8)"
        ".map(i => i.decode().then(() => true, () => false))).then(done)") == [True] * 8
    urls = requested_urls(driver)
    assert any("/figures/viewer/m1/" in u for u in urls) and all(u.startswith(folder) for u in urls)
    driver.execute_script("window.scrollTo(0, 0)")
    # every table file and every figure of the folder is on the page, each figure loaded
    stems = [t.stem for t in table_files(report)]
    assert driver.execute_script("return [...document.querySelectorAll('section.table')].map(s => s.id)") == \
        [f"table-{stem}" for stem in stems]
    assert {"table-table2", "table-bootstrap", "table-per_class", "table-per_size"} <= set(f"table-{s}" for s in stems)
    loaded = driver.execute_script("return [...document.querySelectorAll('#figures img')]"
                                   ".map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
    assert sorted(src for src, _ in loaded) == sorted(f"figures/{p.relative_to(report / 'figures').as_posix()}"
                                                      for p in (report / "figures").glob("*.png"))
    driver.execute_script("document.querySelectorAll('#figures img').forEach(i => i.loading = 'eager')")
    driver.execute_script("document.getElementById('figures').scrollIntoView()")
    assert all(driver.execute_script(f"return document.querySelector('#figures img[src=\"{src}\"]').decode()"
                                     f".then(() => true, () => false)") for src, _ in loaded)
    _keep(driver, "first_screen")
    assert console_errors(driver) == []


def test_page_opens_from_a_static_web_server(driver, report):
    handler = functools.partial(_QuietHandler, directory=str(report))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        origin = f"http://127.0.0.1:{server.server_address[1]}/"
        _open(driver, origin + "report.html")
        assert driver.execute_script("return document.querySelectorAll('#viewer-grid img').length") > 0
        assert console_errors(driver) == []
        urls = requested_urls(driver)
        assert urls and all(u.startswith(origin) for u in urls)
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request lines in the test output
        pass


def _first_column(driver, table_id: str) -> list[str]:
    return driver.execute_script(
        f"return [...document.querySelectorAll('#{table_id} tbody tr')].map(r => r.cells[0].textContent)")


def test_sorting_a_column_reorders_the_rows(driver, report):
    _open(driver, (report / "report.html").as_uri())
    numbers = pd.read_csv(report / "table2.csv")
    label = dict(zip(numbers["method"], numbers["label"], strict=True))
    by_ap = [label[m] for m in numbers.sort_values("ap_mean_pct", ascending=False)["method"]]
    assert len(set(numbers["ap_mean_pct"])) == 2 and _first_column(driver, "table-table2") == ["toy", XSS]
    header = driver.execute_script("return [...document.querySelectorAll('#table-table2 th')]"
                                   ".find(th => th.textContent.startsWith('AP'))")
    header.click()
    assert _first_column(driver, "table-table2") == by_ap
    assert header.get_attribute("aria-sort") == "descending"
    header.click()
    assert _first_column(driver, "table-table2") == by_ap[::-1]
    assert header.get_attribute("aria-sort") == "ascending"


def test_viewer_shows_the_image_of_a_chosen_index(driver, report, smoke_dataset):
    _open(driver, (report / "report.html").as_uri() + "#viewer")
    data = _viewer_data(driver)
    index = 9
    driver.execute_script("const box = document.getElementById('v-per-page'); box.value = '12';"
                          "box.dispatchEvent(new Event('change'));"
                          "const sort = document.getElementById('v-sort'); sort.value = 'ap';"
                          "sort.dispatchEvent(new Event('change'));")
    ap = data["methods"][0]["ap"]
    worst = min((v, i) for i, v in enumerate(ap) if v is not None)[1]
    assert driver.execute_script("return document.querySelector('#viewer-grid .info').dataset.index") == str(worst)
    driver.execute_script(f"const box = document.getElementById('v-goto'); box.value = '{index}';"
                          "box.dispatchEvent(new Event('change'));")
    row = driver.execute_script(
        "const info = document.querySelector('#viewer-grid .info.target'); const cells = [];"
        "let next = info.nextElementSibling; for (let k = 0; k < 2; k++) { cells.push(next.querySelector('img'));"
        " next = next.nextElementSibling; }"
        "return [info.dataset.index, info.querySelector('.id').textContent, cells.map(i => i.getAttribute('src'))]")
    assert row == [str(index), smoke_dataset.test.ids[index],
                   [f"figures/viewer/image/{index:05d}.jpg", f"figures/viewer/truth/{index:05d}.jpg"]]
    shown = np.asarray(Image.open(report / "figures" / "viewer" / "image" / f"{index:05d}.jpg"), np.float32)
    assert np.abs(shown - smoke_dataset.test[index].image).mean() < 8  # that file is that test image
    _keep(driver, "viewer")
    assert console_errors(driver) == []


def _overlay_pixels(driver, selector: str) -> np.ndarray:
    element = driver.find_element("css selector", selector)
    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB"), np.int16)


def test_threshold_control_masks_each_method_at_its_threshold(driver, report):
    """The mask drawn by the SVG filter is the map's pixels at or above the threshold (read back from screenshots:
    the page itself never reads pixels)."""
    _open(driver, (report / "report.html").as_uri() + "#viewer")
    data = _viewer_data(driver)
    method = data["methods"][0]
    index = next(i for i, a in enumerate(data["anomalous"]) if a)
    driver.execute_script(f"const box = document.getElementById('v-goto'); box.value = '{index}';"
                          "box.dispatchEvent(new Event('change'));"
                          "document.querySelector('input[name=v-mode][value=f1]').click();")
    stack = "#viewer-grid .info.target + .cell + .cell + .cell .stack img.overlay"
    codes = np.asarray(Image.open(report / "figures" / "viewer" / "m0" / f"{index:05d}.png"), np.int16)
    first = math.ceil(255 * (method["threshold"] - method["lo"]) / (method["hi"] - method["lo"]) - 1e-9)
    assert driver.execute_script("return document.getElementById('mask-0-a').getAttribute('intercept')") == \
        str(1 - first)
    masked = _overlay_pixels(driver, stack)
    slider = driver.execute_script("return document.querySelector('#v-method-list input[type=range]')")
    driver.execute_script(f"arguments[0].value = '{method['hi'] + 1}'; arguments[0].dispatchEvent(new Event('input'))",
                          slider)
    assert driver.execute_script("return document.querySelector('input[name=v-mode]:checked').value") == "user"
    plain = _overlay_pixels(driver, stack)  # above every code: no mask, the image alone
    changed = np.abs(masked - plain).sum(axis=-1) > 60
    side = data["side"]
    expected = np.asarray(Image.fromarray((codes >= first).astype(np.uint8) * 255).resize((side, side),
                                                                                         Image.Resampling.NEAREST)) > 0
    assert changed.shape == expected.shape
    assert 0 < expected.mean() < 1 and (changed == expected).mean() > 0.97
    driver.save_screenshot(str(ARTIFACTS / "report_html_threshold.png"))


def test_crafted_method_name_is_shown_as_text(driver, report):
    _open(driver, (report / "report.html").as_uri())
    shown = driver.execute_script(
        "return [...document.querySelectorAll('td, th, option, .head, span')].filter(e => e.children.length === 0)"
        ".map(e => e.textContent.trim())")
    assert shown.count(XSS) >= 3  # Table 2 row, the viewer's column head and sort choice, ...
    assert "<img" in (report / "table2.md").read_text()  # the name really is markup
    assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"], img[onerror]').length") == 0
    assert driver.execute_script("return [...document.images].filter(i => !i.getAttribute('src')"
                                 ".startsWith('figures/')).length") == 0
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018
    assert not any(u.endswith("/x") for u in requested_urls(driver))
    assert console_errors(driver) == []
