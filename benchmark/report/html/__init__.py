"""The report folder as one HTML page (``report.html``) with a per-image viewer; see :mod:`.page`."""

from scrapbench.report.html.page import render_page, script_json, text, write_html
from scrapbench.report.html.viewer import write_viewer

__all__ = ["render_page", "script_json", "text", "write_html", "write_viewer"]
