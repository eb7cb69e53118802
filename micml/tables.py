"""Tables the workflow writes: CSV for machines, Markdown for people."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd


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


def write_table(frame: pd.DataFrame, csv_path: Path | str | None, md_path: Path | str | None, *,
                title: str = "", index: bool = False) -> None:
    """Write `frame` as CSV and/or Markdown, each atomically (temp file, then rename)."""
    if csv_path is not None:
        _atomic_write(Path(csv_path), frame.to_csv(index=index))
    if md_path is not None:
        heading = f"### {title}\n\n" if title else ""
        _atomic_write(Path(md_path), heading + markdown_table(frame, index=index))


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
