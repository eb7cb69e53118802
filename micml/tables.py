"""Tables the workflow writes: CSV for machines, Markdown for people, HTML for the report.

One renderer for all of them: `write_table` writes a frame as CSV and/or Markdown;
`TableDocument` writes a titled document of one or more sections with notes as .csv (the full
frame, full precision), .md and .html (the formatted sections; the Snakemake report shows HTML
and images but only offers CSV/Markdown as downloads). Cells read the same in Markdown and HTML:
numbers by `format_cell`, a dash for missing values.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from micml.io import write_text

TABLE_SUFFIXES = (".csv", ".md", ".html")


def format_cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame, *, index: bool = False) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned, missing values as a dash."""
    if index:
        frame = frame.reset_index()
    header = [format_cell(str(column)) for column in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[column]) for column in frame.columns]
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if is_number else "---" for is_number in numeric) + " |"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(format_cell(value) for value in row) + " |")
    return "\n".join(lines) + "\n"


def html_table(frame: pd.DataFrame) -> str:
    """An HTML table with the same cell text as `markdown_table` (dash for missing)."""
    numeric = [pd.api.types.is_numeric_dtype(frame[column]) for column in frame.columns]
    header = "".join(f"<th>{html.escape(str(column))}</th>" for column in frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        cells = []
        for value, is_number in zip(values, numeric):
            text = str(value) if isinstance(value, str) else format_cell(value)
            css = ' class="number"' if is_number else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def write_table(frame: pd.DataFrame, csv_path: Path | str | None, md_path: Path | str | None, *,
                title: str = "", index: bool = False) -> None:
    """Write `frame` as CSV and/or Markdown, each atomically."""
    if csv_path is not None:
        write_text(csv_path, frame.to_csv(index=index))
    if md_path is not None:
        heading = f"### {title}\n\n" if title else ""
        write_text(md_path, heading + markdown_table(frame, index=index))


@dataclass
class TableSection:
    """One table of a document, shown under its own heading in Markdown and HTML."""

    heading: str
    frame: pd.DataFrame


@dataclass
class TableDocument:
    """A table written three ways: `csv` (machine-readable, full precision), and the `sections`
    (formatted for reading) as Markdown and as self-contained HTML for the Snakemake report."""

    title: str
    csv: pd.DataFrame
    sections: list[TableSection]
    notes: list[str] = field(default_factory=list)

    def write(self, stem: Path | str) -> list[Path]:
        """`<stem>.csv`, `.md` and `.html`, each atomically; returns their paths."""
        stem = Path(stem)
        paths = [stem.with_name(stem.name + suffix) for suffix in TABLE_SUFFIXES]
        write_table(self.csv, paths[0], None)
        write_text(paths[1], self.markdown())
        write_text(paths[2], self.html())
        return paths

    def markdown(self) -> str:
        parts = [f"# {self.title}\n"]
        for section in self.sections:
            heading = f"## {section.heading}\n\n" if section.heading else ""
            parts.append(heading + markdown_table(section.frame))
        if self.notes:
            parts.append("Notes:\n\n" + "".join(f"- {note}\n" for note in self.notes))
        return "\n".join(parts)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for section in self.sections:
            if section.heading:
                body.append(f"<h2>{html.escape(section.heading)}</h2>")
            body.append(html_table(section.frame))
        if self.notes:
            items = "".join(f"<li>{html.escape(note)}</li>" for note in self.notes)
            body.append(f"<p>Notes:</p><ul>{items}</ul>")
        return HTML_PAGE.format(title=html.escape(self.title), body="\n".join(body))


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; font-size: 14px; margin: 1.5em; color: #1e293b; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border-bottom: 1px solid #cbd5e1; padding: 0.25em 0.7em; }}
th {{ background: #e2e8f0; text-align: left; }}
td.number {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr:nth-child(even) td {{ background: #f8fafc; }}
</style></head>
<body>
{body}
</body></html>
"""
