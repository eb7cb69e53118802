"""Resumable downloads: a file appears under its name only once it is complete and verified."""

from __future__ import annotations

import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from micml.data.download.errors import RERUN_HINT, CorruptFileError, SourceError
from micml.data.download.verify import CHUNK_BYTES, file_sha256

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 4
DEFAULT_BACKOFF_S = 5.0
DOWNLOAD_TIMEOUT_S = 60
# HTTP answers that a retry cannot change (not found, forbidden, ...).
RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


def download_file(url: str, target: Path, *, size: int | None = None, sha256: str | None = None,
                  opener: Callable | None = None, retries: int = DEFAULT_RETRIES,
                  backoff_s: float = DEFAULT_BACKOFF_S, sleep: Callable[[float], None] = time.sleep) -> str:
    """Download `url` to `target` through ``<target>.part``; return the file's sha256.

    A ``.part`` left by an interrupted attempt (or an earlier run) is resumed with an HTTP
    Range request; a server that ignores Range sends the whole file again, which replaces
    the ``.part``. The file is renamed to `target` only after its size and sha256 match.
    """
    opener = opener or urllib.request.urlopen
    part = target.with_name(target.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            _stream_to_part(url, part, opener)
            break
        except urllib.error.HTTPError as error:
            if error.code not in RETRYABLE_HTTP or attempt == retries:
                raise SourceError(f"{url}: HTTP {error.code} {error.reason}; the source may have moved: check "
                                  f"config/datasets.yaml, or fetch the file by hand and save it as {target}") from None
            _wait_before_retry(url, error, attempt, retries, backoff_s, sleep)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            if attempt == retries:
                raise SourceError(f"{url}: download failed after {retries} attempts ({error}); {part} is kept "
                                  f"and will be resumed when you {RERUN_HINT}, or fetch the file by hand and "
                                  f"save it as {target}") from None
            _wait_before_retry(url, error, attempt, retries, backoff_s, sleep)
    found = part.stat().st_size
    if size is not None and found != size:
        part.unlink()
        raise CorruptFileError(f"{url}: downloaded {found} bytes but the source lists {size} bytes: the download "
                               f"is truncated or the file changed upstream; {RERUN_HINT} to download it again")
    digest = file_sha256(part)
    if sha256 is not None and digest != sha256:
        part.unlink()  # a wrong .part must not be resumed
        raise CorruptFileError(f"{url}: sha256 of the download is {digest}, expected {sha256}: the file is "
                               f"corrupt or truncated (or changed upstream); {RERUN_HINT} to download it again")
    # Renamed by hand, not written through micml.io.atomic_write: the .part must outlive a failed
    # attempt so that the next one resumes it. The name appears only after the checks above.
    os.replace(part, target)
    return digest


def _wait_before_retry(url: str, error: Exception, attempt: int, retries: int, backoff_s: float,
                       sleep: Callable[[float], None]) -> None:
    log.warning("%s: attempt %d/%d failed (%s); retrying", url, attempt, retries, error)
    sleep(backoff_s * attempt)


def _stream_to_part(url: str, part: Path, opener: Callable) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "micml-fetch"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = opener(urllib.request.Request(url, headers=headers), timeout=DOWNLOAD_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            return  # nothing left to send: the .part is complete; the checksum decides
        raise
    with response:
        status = getattr(response, "status", None) or response.getcode()
        resumed = bool(offset) and status == 206
        expected = response.headers.get("Content-Length") if response.headers else None
        written = 0
        with open(part, "ab" if resumed else "wb") as out:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                written += len(chunk)
    if expected is not None and written < int(expected):
        raise OSError(f"connection closed after {written} of {expected} bytes")
