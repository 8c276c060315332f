"""Every table file of a report folder, in the page's order, read back as blocks of text and rows.

The page shows the tables the report wrote, not a second rendering of the numbers: a stem with a Markdown
file (``table2.md``: cells as the report formats them, best in bold, marks and footnotes) is shown from it; a
stem with only a CSV file (``runs.csv``) from the CSV. The known tables come first, in a fixed order; any other
table file a report page writes follows, so a new table appears on the page without changing this module.
"""

from __future__ import annotations

import csv
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

#: Stems shown first, in this order (a pattern may match several: sorted), then the others, then these last.
FIRST = ("table2", "table3", "categories_mean", "per_category_*", "published", "bootstrap", "per_class", "per_size")
LAST = ("runs", "failed_runs")
#: Titles of stems that report.md does not name in a section of its own.
TITLES = {"runs": "All runs, one row per (run, metric)", "failed_runs": "Failed runs"}
#: Markdown / CSV files of a report folder that are not tables.
NOT_TABLES = {"report"}
MAX_CSV_ROWS = 2000  # a longer CSV is shown in part, with a link to the whole file


@dataclass
class Block:
    """A paragraph (``text``) or a table (``header`` + ``rows``), as raw strings: the page escapes them."""

    text: str | None = None
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class TableFile:
    """One stem of the report folder: its title, its caption, what it shows and its files."""

    stem: str
    title: str
    caption: str
    blocks: list[Block]
    files: list[str]


def report_sections(report_md: str) -> dict[str, tuple[str, str]]:
    """``stem → (title, caption)`` from report.md: a section that links ``stem.csv`` / ``.md`` names it; the
    caption is the section's first paragraph without its file links."""
    out: dict[str, tuple[str, str]] = {}
    for section in re.split(r"^## ", report_md, flags=re.M)[1:]:
        title, _, body = section.partition("\n")
        paragraph = body.strip().split("\n\n", 1)[0] if body.strip() else ""
        paragraph = "" if paragraph.startswith(("|", "!", "**")) else paragraph
        caption = re.sub(r"\s*Files?:.*$", "", paragraph, flags=re.S).strip()
        for stem in re.findall(r"\]\(([\w.-]+)\.(?:csv|md|tex)\)", section):
            out.setdefault(stem, (title.strip(), caption))
    return out


def split_row(line: str) -> list[str]:
    """The cells of a Markdown table row (``\\|`` is a literal bar)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", body)]


def markdown_blocks(text: str) -> list[Block]:
    """Paragraphs and tables of a Markdown file as the report writes them (GitHub tables, text lines).

    Read by hand rather than with a Markdown library (markdown-it-py is installed with rich): the files are the
    fixed subset ``scrapbench.report.render.to_markdown`` writes, and the page needs each cell's raw text, to
    escape it itself and to sort by it, not a library's HTML."""
    blocks: list[Block] = []
    paragraph: list[str] = []
    table: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(Block(text=" ".join(paragraph)))
            paragraph.clear()
        if table:
            rows = [split_row(line) for line in table if not re.fullmatch(r"\|?[\s:|-]+\|?", line.strip())]
            if rows:
                blocks.append(Block(header=rows[0], rows=rows[1:]))
            table.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            if paragraph:
                flush()
            table.append(line)
        elif not line.strip():
            flush()
        else:
            if table:
                flush()
            paragraph.append(line.strip())
    flush()
    return blocks


_LONG_FLOAT = re.compile(r"-?\d+\.\d{5,}")


def csv_blocks(path: Path, max_rows: int = MAX_CSV_ROWS) -> list[Block]:
    """A CSV file as one table (long decimals shortened to 4 places), or a line saying it is empty."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        rows = []
        total = 0
        for row in reader:
            total += 1
            if len(rows) < max_rows:
                rows.append([f"{float(c):.4f}" if _LONG_FLOAT.fullmatch(c) else c for c in row])
    if header is None:
        return [Block(text="(empty file)")]
    if not rows:
        return [Block(text="(none)")]
    blocks = [Block(header=header, rows=rows)]
    if total > max_rows:
        blocks.append(Block(text=f"The first {max_rows} of {total} rows; all of them in [{path.name}]({path.name})."))
    return blocks


def _rank(stem: str) -> tuple[int, int, str]:
    for i, pattern in enumerate(FIRST):
        if fnmatch.fnmatchcase(stem, pattern):
            return (0, i, stem)
    if stem in LAST:
        return (2, LAST.index(stem), stem)
    return (1, 0, stem)


def table_files(out_dir: Path) -> list[TableFile]:
    """Every table of ``out_dir`` (its ``*.md`` and ``*.csv`` files but report.md), in the page's order."""
    report_md = out_dir / "report.md"
    sections = report_sections(report_md.read_text(encoding="utf-8")) if report_md.is_file() else {}
    stems = sorted({p.stem for p in out_dir.glob("*.md")} | {p.stem for p in out_dir.glob("*.csv")})
    out = []
    for stem in sorted((s for s in stems if s not in NOT_TABLES and not s.startswith(".")), key=_rank):
        md, csv_path = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
        blocks = markdown_blocks(md.read_text(encoding="utf-8")) if md.is_file() else csv_blocks(csv_path)
        title, caption = sections.get(stem, (TITLES.get(stem, stem.replace("_", " ").capitalize()), ""))
        files = [f"{stem}.{ext}" for ext in ("csv", "md", "tex") if (out_dir / f"{stem}.{ext}").is_file()]
        out.append(TableFile(stem, title, caption, blocks, files))
    return out
