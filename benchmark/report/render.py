"""Writing tables: GitHub Markdown, booktabs LaTeX, the CSV/Markdown/LaTeX files of a summary table,
and the report page that links them.

LaTeX is written by hand (booktabs) because pandas' ``to_latex`` needs jinja2, not one of our
dependencies. Cells arrive formatted (:mod:`scrapbench.report.cells`); these functions only lay them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from scrapbench.report.collect import SummaryTable
from scrapbench.storage.atomic import atomic_write_text


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (numbers right-aligned, the first column left)."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    align = "|" + "|".join("---:" if i > 0 and _numeric_column(frame.iloc[:, i]) else ":---"
                           for i in range(len(frame.columns))) + "|"
    body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, align, *body]) + "\n"


def _numeric_column(values: pd.Series) -> bool:
    """Cells that start with a number (``85.40 ± 1.2``, ``**85.40**``, ``–``) are aligned right."""
    text = [str(v).strip("*+ ") for v in values]
    return all(t in ("–", "") or t[:1].isdigit() or t[:1] == "-" for t in text)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "×": r"$\times$", "±": r"$\pm$", "†": r"$^\dagger$", "–": "--", "Δ": r"$\Delta$",
                  "§": r"\S{}", "°": r"$^\circ$", "‡": r"$^\ddagger$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(frame: pd.DataFrame, caption: str, label: str, notes: Sequence[str] = ()) -> str:
    """A booktabs table; cells already holding ``\\textbf{...}`` keep their command."""
    def cell(value: Any) -> str:
        text = str(value)
        if text.startswith("\\textbf{") and text.endswith("}"):
            return "\\textbf{" + latex_escape(text[len("\\textbf{"):-1]) + "}"
        return latex_escape(text)

    spec = "l" + "r" * (len(frame.columns) - 1)
    lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{latex_escape(caption)}}}", f"\\label{{{label}}}",
             f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(cell(c) for c in frame.columns) + " \\\\",
             "\\midrule"]
    lines += [" & ".join(cell(v) for v in row) + " \\\\" for row in frame.itertuples(index=False)]
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += [f"\\par\\smallskip{{\\footnotesize {latex_escape(note)}}}" for note in notes]
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def write_summary(table: SummaryTable, out_dir: Path, stem: str, caption: str) -> dict[str, Path]:
    """``<stem>.csv`` (numbers), ``<stem>.md`` and ``<stem>.tex`` (formatted); returns the paths."""
    numbers = table.numbers.reset_index()
    numbers = numbers.rename(columns={c: c.replace("_mean", "_mean_pct").replace("_std", "_std_pct")
                                      for c in numbers.columns})
    notes = table.notes()
    paths = {"csv": out_dir / f"{stem}.csv", "md": out_dir / f"{stem}.md", "tex": out_dir / f"{stem}.tex"}
    atomic_write_text(paths["csv"], numbers.to_csv(index=False, float_format="%.6f"))
    markdown = to_markdown(table.formatted()) + "".join(f"\n{note}\n" for note in notes)
    atomic_write_text(paths["md"], markdown)
    latex = to_latex(table.formatted(bold=("\\textbf{", "}")), caption, f"tab:{stem}", notes)
    atomic_write_text(paths["tex"], latex)
    return paths


def markdown_page(header: Sequence[str], sections: Sequence[str], notes: Sequence[str] = ()) -> str:
    """A report page: header lines, then each section, then the notes as a list under "## Notes"."""
    body = "\n".join(header) + "\n" + "\n".join(section.rstrip() + "\n" for section in sections)
    if notes:
        body += "\n## Notes\n\n" + "".join(f"- {note}\n" for note in notes)
    return body
