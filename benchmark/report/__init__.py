"""From run folders to tables, figures and report pages (Markdown, CSV, LaTeX, PNG)."""
