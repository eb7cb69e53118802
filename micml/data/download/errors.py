"""The errors of the dataset sources; each message names the file and the fix."""

from __future__ import annotations

from micml.data.unified import DatasetError

# How every message says "run it again".
RERUN_HINT = "re-run the same command (e.g. `snakemake --cores 8`)"


class SourceError(DatasetError):
    """A dataset source that cannot be obtained or used; the message names the file and the fix."""


class ManualDownloadRequired(SourceError):
    """Files that only a person with a browser can fetch (cloud drives with access codes)."""


class CorruptFileError(SourceError):
    """A placed or downloaded file whose size, checksum or archive structure is wrong."""


class UnsafeArchiveError(SourceError):
    """An archive member that would be written outside the tree, or a device file."""
