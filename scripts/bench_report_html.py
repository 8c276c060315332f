"""report.html on a results folder: report time with and without it, its size, the thumbnails' size, the page's
load time in headless Chromium, a projection to the paper's test set, and the two README screenshots.

    .venv/bin/python scripts/bench_report_html.py RUNS [--work /tmp/html_bench] [--images 2418]
        [--screenshots results/reference]

RUNS is a results folder of finished runs with maps (the default job's ``runs/``). The report is written twice
into WORK (``--no-html``, then with the page; ``--skip-timing`` writes it once). The projection copies the
viewer's data cyclically to ``--images`` test images (thumbnails hard-linked, so the files stay the measured
ones) and loads that page too. Browser: the Debian chromium and chromium-driver, as in the tests
(tests/browser.py). Figures go to stdout (Markdown) and WORK/bench_report_html.json.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the one Chromium set-up, shared with the browser tests

from browser import chromium, console_errors, load_seconds, requested_urls  # noqa: E402

from scrapbench.report.html.page import render_page  # noqa: E402


def _report(runs: Path, out: Path, html: bool) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "scrapbench"), "report", str(runs), "--out", str(out),
                    "--html" if html else "--no-html"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def _viewer_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', text, re.S)[1])


def _decode_visible(driver) -> None:
    """Wait until the viewer's thumbnails in the window are decoded (lazy ones below it never load)."""
    driver.execute_async_script(
        "const done = arguments[0]; const grid = document.getElementById('viewer-grid').getBoundingClientRect();"
        "const seen = [...document.querySelectorAll('#viewer-grid img')].filter(i => {"
        " const r = i.getBoundingClientRect(); return r.bottom > Math.max(0, grid.top) && r.top < window.innerHeight"
        " && r.right > grid.left && r.left < Math.min(grid.right, window.innerWidth); });"
        "Promise.all(seen.map(i => i.decode().catch(() => null))).then(() => done(seen.length))")


def _browser_times(driver, url: str) -> dict[str, float]:
    """Navigation → load event, and → the viewer's first page of thumbnails decoded (scrolled into view)."""
    driver.get("about:blank")
    console_errors(driver)
    requested_urls(driver)
    start = time.perf_counter()
    driver.get(url)
    loaded = load_seconds(driver)
    driver.execute_script("document.getElementById('viewer').scrollIntoView()")
    _decode_visible(driver)
    shown = time.perf_counter() - start
    errors = console_errors(driver)
    if errors:
        raise SystemExit(f"console errors on {url}: {errors}")
    return {"load_s": round(loaded, 3), "viewer_shown_s": round(shown, 3), "requests": len(requested_urls(driver))}


def _projected(report: Path, work: Path, images: int) -> Path:
    """A copy of the report whose viewer holds ``images`` test images (the measured ones, cyclically)."""
    target = work / f"projected_{images}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(report, target, ignore=shutil.ignore_patterns("viewer", "report.html"))
    data = _viewer_data(report / "report.html")
    n = len(data["ids"])
    cycle = [i % n for i in range(images)]
    source, viewer = report / data["dir"], target / data["dir"]
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (viewer / folder.name).mkdir(parents=True)
        for i, j in enumerate(cycle):
            for old in folder.glob(f"{j:05d}.*"):
                os.link(old, viewer / folder.name / f"{i:05d}{old.suffix}")
    data["ids"] = [f"{data['ids'][j]}~{i}" for i, j in enumerate(cycle)]
    for key in ("anomalous", "pixels", "classes", "sizes"):
        data[key] = [data[key][j] for j in cycle]
    for method in data["methods"]:
        for key in ("ap", "auroc", "max"):
            method[key] = [method[key][j] for j in cycle]
        method["missing"] = [i for i, j in enumerate(cycle) if j in set(method["missing"])]
    (target / "report.html").write_text(render_page(target, data), encoding="utf-8")
    return target


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _serve(folder: Path):
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _screenshots(driver, page: Path, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(1400, 900)
    driver.get(page.as_uri())
    first = folder / "report_first_screen.png"
    driver.save_screenshot(str(first))
    names = [m["name"] for m in _viewer_data(page)["methods"]]
    method = names.index("ours") if "ours" in names else 0  # anomalous images, worst AP of the paper's method first
    driver.execute_script(
        "const c = document.getElementById('v-class'); c.value = 'anomalous'; c.dispatchEvent(new Event('change'));"
        f"const m = document.getElementById('v-sort-method'); m.value = '{method}';"
        "m.dispatchEvent(new Event('change'));"
        "const s = document.getElementById('v-sort'); s.value = 'ap'; s.dispatchEvent(new Event('change'));"
        "document.getElementById('viewer').scrollIntoView();")
    driver.set_window_size(2200, 1000)  # every method's column
    driver.execute_script("document.getElementById('viewer-controls').scrollIntoView()")
    _decode_visible(driver)
    viewer = folder / "report_viewer.png"
    driver.save_screenshot(str(viewer))
    return [first, viewer]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/html_bench"))
    parser.add_argument("--images", type=int, default=2418)
    parser.add_argument("--screenshots", type=Path, default=None)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="keep WORK/report's files when it holds a report.html "
                                                             "(its page is rendered again)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    report = args.work / "report"
    result: dict = {}
    if not args.skip_timing:
        result["report_no_html_s"] = round(_report(args.runs, args.work / "report_no_html", html=False), 1)
    if args.reuse and (report / "report.html").is_file():  # the page again (this code's CSS/JS), same data
        (report / "report.html").write_text(render_page(report, _viewer_data(report / "report.html")), "utf-8")
    else:
        result["report_html_s"] = round(_report(args.runs, report, html=True), 1)
    data = _viewer_data(report / "report.html")
    n, methods = len(data["ids"]), len(data["methods"])
    thumbs, files = _bytes(report / data["dir"])
    result.update(images=n, methods=methods, report_html_bytes=(report / "report.html").stat().st_size,
                  viewer_json_bytes=len(json.dumps(data, separators=(",", ":"))), thumbnail_bytes=thumbs,
                  thumbnail_files=files, thumbnail_side=data["side"])
    projected = _projected(report, args.work, args.images)
    result["projected"] = {"images": args.images, "report_html_bytes": (projected / "report.html").stat().st_size,
                           "thumbnail_bytes_same_size_images": round(thumbs * args.images / n),
                           "thumbnail_files": round(files * args.images / n)}
    with chromium() as driver:
        result["chromium_file"] = _browser_times(driver, (report / "report.html").as_uri())
        server = _serve(report)
        try:
            result["chromium_http"] = _browser_times(driver, f"http://127.0.0.1:{server.server_address[1]}/report.html")
        finally:
            server.shutdown()
        result["projected"]["chromium_file"] = _browser_times(driver, (projected / "report.html").as_uri())
        if args.screenshots:
            result["screenshots"] = [str(p) for p in _screenshots(driver, report / "report.html", args.screenshots)]
    (args.work / "bench_report_html.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
