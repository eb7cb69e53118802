"""Glue between Snakemake `script:` jobs and the package: logging into the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def logged(log_path: str | Path) -> Iterator[None]:
    """Send stdout, stderr and `logging` of a job to its log file; a failure is logged in full
    and re-raised with its one-line message, which Snakemake prints."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield
        except Exception as error:
            traceback.print_exc(file=log)
            sys.__stderr__.write(f"\n{type(error).__name__}: {error}\n(full log: {log_path})\n")
            raise
        finally:
            root.removeHandler(handler)
