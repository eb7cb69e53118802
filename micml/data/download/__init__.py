"""Dataset sources: get the files of a real dataset, verify them, and unpack them safely.

`config/datasets.yaml` lists, per dataset, the files that make up its native tree. For each
file, `fetch_dataset` uses ``<raw_dir>/<file name>`` when it is there (placed by the user or
downloaded earlier); otherwise it downloads the file when a direct ``url`` exists (streamed to
``<file>.part``, resumed after an interruption, checked, then renamed); otherwise it stops
with `ManualDownloadRequired`, whose message says which file to fetch, from which cloud drive
(link and access code), where to save it, and what to run next.

Every file is verified before anything is unpacked: its size and sha256 when known, and its
structure (every zip CRC; every tar member read to the end, so a truncated archive is named
here rather than half-unpacked). Archives are unpacked into ``<dest>.partial`` and renamed to
``<dest>`` only when complete and when the native layout markers exist, so ``<dest>`` is never
half there. Members that would land outside the tree (absolute paths, ``..``, links pointing
out) and device files are refused. A tree the user unpacked by hand at ``<dest>`` is accepted
once its layout markers exist.

Modules: `sources` (the catalogue and its schema check), `fetch` (the entry point),
`transfer` (resumable downloads), `verify` (checksums, archive structure, placed trees),
`unpack` (safe unpacking into the tree), `errors`. Importers use the names re-exported here.
"""

from micml.data.download.errors import (RERUN_HINT, CorruptFileError, ManualDownloadRequired, SourceError,
                                        UnsafeArchiveError)
from micml.data.download.fetch import fetch_dataset, manual_download_message, obtain_file
from micml.data.download.sources import DATASET_KEYS, FILE_KEYS, SCHEMA_PATH, load_sources
from micml.data.download.transfer import DEFAULT_BACKOFF_S, DEFAULT_RETRIES, download_file
from micml.data.download.unpack import unpack_dataset, unpack_file
from micml.data.download.verify import (CHUNK_BYTES, archive_kind, check_placed_tree, check_tar, check_zip,
                                        file_sha256, verify_file)

__all__ = [
    "CHUNK_BYTES", "DATASET_KEYS", "DEFAULT_BACKOFF_S", "DEFAULT_RETRIES", "FILE_KEYS", "RERUN_HINT", "SCHEMA_PATH",
    "CorruptFileError", "ManualDownloadRequired", "SourceError", "UnsafeArchiveError", "archive_kind",
    "check_placed_tree", "check_tar", "check_zip", "download_file", "fetch_dataset", "file_sha256", "load_sources",
    "manual_download_message", "obtain_file", "unpack_dataset", "unpack_file", "verify_file",
]
