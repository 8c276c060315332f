"""``report.html``: the report folder as one self-contained page, beside its ``figures/``.

The page holds its CSS and JavaScript inline and requests nothing but the report folder's own PNG/JPEG files
(relative links): it opens from the file system and from any static web server. It shows report.md's header and
notes, every table of the folder (:mod:`scrapbench.report.html.tables`; columns sortable), every PNG under
``figures/`` and, when the report wrote thumbnails, the per-image viewer (:mod:`scrapbench.report.html.viewer`).

User text (dataset, class, method and file names, anything read from the folder) is escaped wherever it is
written: :func:`text` in HTML, :func:`script_json` in the viewer's embedded JSON. A Content-Security-Policy
allows only this page's own script (by its hash), so an injected element could not run script either.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from scrapbench.report.html.tables import Block, TableFile, table_files
from scrapbench.storage.atomic import atomic_write_text

#: Figures shown first, in this order; any other PNG under figures/ follows, sorted by path.
FIGURE_ORDER = ("table2_bars.png", "ablation.png", "curves.png", "qualitative.png")
_VIEWER_PREFIX = "viewer/"


def text(value: Any) -> str:
    """``value`` as HTML text or attribute value (``<``, ``>``, ``&``, quotes escaped)."""
    return html.escape(str(value), quote=True)


_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(payload: Any) -> str:
    """Compact JSON that is safe inside ``<script type="application/json">``: no ``</script>``, ``<!--``, ``&``
    or line separators can end the element or change how it is parsed (each becomes a ``\\u`` escape)."""
    encoded = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_ESCAPES[m.group(0)], encoded)


_LINK = re.compile(r"\[([^\]]+)\]\(([\w.#/-]+)\)")  # relative targets only: no scheme, no query


def inline(markdown: str) -> str:
    """One line of the report's Markdown as HTML: escaped, then ``**bold**``, ```code``` and relative links."""
    out = text(markdown)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return _LINK.sub(lambda m: m.group(1) if ".." in m.group(2) else f'<a href="{m.group(2)}">{m.group(1)}</a>', out)


def _href(path: str) -> str:
    return text(quote(path, safe="/"))


# -- parts of the page -------------------------------------------------------------------------------------------


def _header(report_md: str) -> tuple[str, str, list[str]]:
    """(title, header paragraphs as HTML, notes) from report.md."""
    lines = report_md.splitlines()
    title = next((line[2:].strip() for line in lines if line.startswith("# ")), "scrapbench report")
    intro: list[str] = []
    for line in lines:
        if line.startswith("## "):
            break
        if line.strip() and not line.startswith("# "):
            intro.append(f"<p>{inline(line)}</p>")
    notes_part = report_md.split("\n## Notes\n", 1)
    notes = [line[2:] for line in notes_part[1].splitlines() if line.startswith("- ")] if len(notes_part) > 1 else []
    return title, "\n".join(intro), notes


def _cell(value: str, tag: str = "td") -> str:
    return f"<{tag}>{inline(value)}</{tag}>"


def _table_html(block: Block) -> str:
    head = "".join(f'<th scope="col" tabindex="0">{inline(h)}<span class="arrow"></span></th>' for h in block.header)
    body = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in block.rows)
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n'
            f"</tbody></table></div>")


def _table_section(table: TableFile) -> str:
    parts = [f'<section class="table" id="table-{text(table.stem)}">', f"<h3>{inline(table.title)}</h3>"]
    if table.caption:
        parts.append(f'<p class="caption">{inline(table.caption)}</p>')
    rows = sum(len(b.rows) for b in table.blocks)
    body = "\n".join(_table_html(b) if b.header else f"<p>{inline(b.text or '')}</p>" for b in table.blocks)
    if rows > 25:  # long listings (every run) fold away; the headline tables stay open
        body = f"<details><summary>{rows} rows</summary>\n{body}\n</details>"
    parts.append(body)
    links = " · ".join(f'<a href="{_href(name)}">{text(name)}</a>' for name in table.files)
    parts.append(f'<p class="files">Files: {links}</p></section>')
    return "\n".join(parts)


def figure_paths(out_dir: Path) -> list[str]:
    """Every PNG under ``figures/`` (relative to it) but the viewer's thumbnails, the known ones first."""
    root = out_dir / "figures"
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) if root.is_dir() else []
    found = [p for p in found if not p.startswith(_VIEWER_PREFIX) and not any(s.startswith(".") for s in p.split("/"))]
    return [p for p in FIGURE_ORDER if p in found] + [p for p in found if p not in FIGURE_ORDER]


def _figure_captions(report_md: str) -> dict[str, str]:
    return {path: alt for alt, path in re.findall(r"!\[([^\]]*)\]\(figures/([^)]+)\)", report_md)}


def _figures_section(out_dir: Path, report_md: str) -> str:
    captions = _figure_captions(report_md)
    items = []
    for path in figure_paths(out_dir):
        caption = captions.get(path) or Path(path).stem.replace("_", " ")
        items.append(f'<figure><a href="{_href("figures/" + path)}"><img src="{_href("figures/" + path)}" '
                     f'alt="{text(caption)}" loading="lazy"></a><figcaption>{text(caption)}</figcaption></figure>')
    if not items:
        return '<section id="figures"><h2>Figures</h2><p>No figures (the report ran with --no-figures).</p></section>'
    return '<section id="figures"><h2>Figures</h2>\n' + "\n".join(items) + "\n</section>"


_VIEWER_CONTROLS = """
<div class="controls" id="viewer-controls">
  <label>Sort <select id="v-sort">
    <option value="index">test order</option>
    <option value="ap">worst AP first</option>
    <option value="auroc">worst AUROC first</option>
    <option value="max-normal">normal images, highest max score first</option>
    <option value="max">highest max score first</option>
  </select></label>
  <label>for <select id="v-sort-method"></select></label>
  <label>Class <select id="v-class"><option value="all">all images</option><option value="anomalous">anomalous</option>
    <option value="normal">normal</option></select></label>
  <label>Region size <select id="v-size"><option value="all">any</option></select></label>
  <label>Image # <input id="v-goto" type="number" min="0" step="1" placeholder="index"></label>
  <label>Per page <select id="v-per-page"><option>12</option><option selected>24</option><option>48</option>
    <option>96</option></select></label>
</div>
<div class="controls" id="viewer-display">
  <span>Show maps as</span>
  <label><input type="radio" name="v-mode" value="heat" checked> heat map</label>
  <label><input type="radio" name="v-mode" value="f1"> mask at each method's F1-max threshold</label>
  <label><input type="radio" name="v-mode" value="user"> mask at the threshold set per method below</label>
  <details id="v-methods"><summary>Methods and thresholds</summary><div id="v-method-list"></div></details>
</div>
<div class="pager"><button type="button" id="v-prev">‹ previous</button> <span id="v-status"></span>
  <button type="button" id="v-next">next ›</button></div>
<div id="viewer-grid" class="viewer-grid"></div>
<div class="pager"><button type="button" id="v-prev2">‹ previous</button>
  <button type="button" id="v-next2">next ›</button></div>
"""

_VIEWER_NOTE = (
    "Each row: a test image, its ground truth (each anomaly class in its colour) and each method's map (its lowest "
    "seed with saved maps), with that image's AP, AUROC and max score for the method (AP and AUROC only for images "
    "with anomalous pixels; computed on the evaluator's per-image histograms). Heat maps run from each method's low "
    "to high score (its 1st–99.9th percentile, jet colours). A mask is the pixels at or above the threshold, "
    "resolved to 1/255 of that range and on the thumbnail's pixels.")


def _svg_filters(n_methods: int) -> str:
    """The heat-map colours (jet through a lookup table on the grey code) and one mask filter per method (its
    threshold is set by the script: alpha = 255·code − k, clamped). sRGB: the codes are used as they are."""
    jet = {"R": "0 0 0 0 .5 1 1 1 .5", "G": "0 0 .5 1 1 1 .5 0 0", "B": ".5 1 1 1 .5 0 0 0 0"}
    funcs = "".join(f'<feFunc{c} type="table" tableValues="{v}"/>' for c, v in jet.items())
    heat = f'<filter id="heat" color-interpolation-filters="sRGB"><feComponentTransfer>{funcs}</feComponentTransfer>' \
           f"</filter>"
    masks = "".join(
        f'<filter id="mask-{k}" color-interpolation-filters="sRGB">'
        f'<feColorMatrix type="matrix" values="0 0 0 0 1  0 0 0 0 0.1  0 0 0 0 0.1  1 0 0 0 0"/>'
        f'<feComponentTransfer><feFuncA id="mask-{k}-a" type="linear" slope="255" intercept="0"/>'
        f"</feComponentTransfer></filter>" for k in range(n_methods))
    return f'<svg class="filters" aria-hidden="true" width="0" height="0">{heat}{masks}</svg>'


def _viewer_section(viewer: dict[str, Any] | None, note: str | None) -> str:
    if viewer is None:
        reason = note or "no run saved its maps (maps.npz)"
        return f'<section id="viewer"><h2>Per-image viewer</h2><p>Not built: {text(reason)}.</p></section>'
    return (f'<section id="viewer"><h2>Per-image viewer</h2><p class="caption">{text(_VIEWER_NOTE)}</p>'
            f"{_svg_filters(len(viewer['methods']))}{_VIEWER_CONTROLS}"
            f'<script type="application/json" id="viewer-data">{script_json(viewer)}</script></section>')


def _asset(name: str) -> str:
    return resources.files("scrapbench.report.html").joinpath("assets", name).read_text(encoding="utf-8")


def _csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    # Nothing from the network; images from the report folder (file: when opened from disk); only our script.
    return (f"default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; "
            f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'")


def render_page(out_dir: Path, viewer: dict[str, Any] | None, viewer_note: str | None = None) -> str:
    """The page's HTML for the report folder ``out_dir`` (its files as they are now)."""
    report_md_path = out_dir / "report.md"
    report_md = report_md_path.read_text(encoding="utf-8") if report_md_path.is_file() else ""
    title, intro, notes = _header(report_md)
    tables = table_files(out_dir)
    script = _asset("report.js")
    nav = ['<a href="#tables">Tables</a>', '<a href="#figures">Figures</a>', '<a href="#viewer">Viewer</a>']
    if notes:
        nav.append('<a href="#notes">Notes</a>')
    toc = "".join(f'<li><a href="#table-{text(t.stem)}">{inline(t.title)}</a></li>' for t in tables)
    notes_html = ('<section id="notes"><h2>Notes</h2><ul>' + "".join(f"<li>{inline(n)}</li>" for n in notes)
                  + "</ul></section>") if notes else ""
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{text(_csp(script))}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        '<link rel="icon" href="data:,">',  # no favicon.ico request to a web server
        f"<title>{text(title)}</title>",
        f"<style>{_asset('report.css')}</style></head><body>",
        f'<header><h1>{inline(title)}</h1><nav>{" · ".join(nav)}</nav></header><main>',
        f'<section id="summary">{intro}</section>',
        f'<section id="tables"><h2>Tables</h2><ul class="toc">{toc}</ul>',
        *(_table_section(t) for t in tables),
        "</section>",
        _figures_section(out_dir, report_md),
        _viewer_section(viewer, viewer_note),
        notes_html,
        '<footer>Written by <code>scrapbench report</code> from the files beside this page '
        '(<a href="report.md">report.md</a>).</footer></main>',
        f"<script>{script}</script>",
        "</body></html>",
    ]) + "\n"


def write_html(out_dir: str | Path, viewer: dict[str, Any] | None, viewer_note: str | None = None) -> Path:
    """Write ``out_dir/report.html`` (atomically) from the report folder; returns its path."""
    out_dir = Path(out_dir)
    path = out_dir / "report.html"
    atomic_write_text(path, render_page(out_dir, viewer, viewer_note))
    return path
