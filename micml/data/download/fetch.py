"""The fetch entry: make a dataset's native tree from its files, or say what a person must fetch.

For each file of a dataset, `fetch_dataset` uses ``<raw_dir>/<file name>`` when it is there
(placed by the user or downloaded earlier); otherwise it downloads the file when a direct
``url`` exists (`transfer`); otherwise it stops with `ManualDownloadRequired`, whose message says
which file to fetch, from which cloud drive (link and access code), where to save it, and what to
run next. Every file is verified (`verify`) before anything is unpacked (`unpack`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping, Sequence

from micml.data.download.errors import RERUN_HINT, ManualDownloadRequired, SourceError
from micml.data.download.transfer import DEFAULT_BACKOFF_S, DEFAULT_RETRIES, download_file
from micml.data.download.unpack import unpack_dataset
from micml.data.download.verify import check_placed_tree, verify_file
from micml.io import PARTIAL_SUFFIX, RETIRED_SUFFIX
from micml.paths import check_output_apart

log = logging.getLogger(__name__)


def fetch_dataset(name: str, sources: Mapping[str, Mapping], raw_dir: Path | str, dest: Path | str, *,
                  opener: Callable | None = None, retries: int = DEFAULT_RETRIES,
                  backoff_s: float = DEFAULT_BACKOFF_S) -> dict:
    """Make ``dest`` the verified native tree of dataset `name`; return the manifest.

    ``dest`` already there (unpacked by the user or by an earlier run): only its layout is
    checked. Otherwise every file is obtained and verified first, then unpacked atomically.
    `opener` replaces ``urllib.request.urlopen`` (tests).
    """
    if name not in sources:
        raise SourceError(f"no dataset {name!r} in the sources; known: {', '.join(sorted(sources))}")
    entry = sources[name]
    raw_dir, dest = Path(raw_dir), Path(dest)
    base = {"dataset": name, "format": entry["format"], "tree": str(dest), "layout": list(entry["layout"])}
    if dest.exists():
        check_placed_tree(name, entry, dest)
        log.info("%s: using the native tree already at %s (layout checked; archives not re-read)", name, dest)
        return {**base, "placed_tree": True, "files": []}

    manual = [spec for spec in entry["files"] if spec["url"] is None and not (raw_dir / spec["name"]).is_file()]
    if manual:
        raise ManualDownloadRequired(manual_download_message(name, entry, manual, raw_dir, dest))
    # unpacking clears <dest>.partial first and <dest>.old on the swap: archives kept there would be deleted
    check_output_apart(dest, *(raw_dir / spec["name"] for spec in entry["files"]), what="unpacked tree",
                       scratch_suffixes=(PARTIAL_SUFFIX, RETIRED_SUFFIX))
    records = [obtain_file(spec, raw_dir, opener=opener, retries=retries, backoff_s=backoff_s)
               for spec in entry["files"]]
    unpack_dataset(entry, [(spec, raw_dir / spec["name"]) for spec in entry["files"]], dest)
    for record in records:
        if not record["sha256_pinned"]:
            log.info("%s: no published sha256; computed %s. To pin it, set `sha256: %s` for this file "
                     "in config/datasets.yaml", record["path"], record["sha256"], record["sha256"])
    return {**base, "placed_tree": False, "files": records}


def manual_download_message(name: str, entry: Mapping, specs: Sequence[Mapping], raw_dir: Path, dest: Path) -> str:
    """What a person must fetch by hand, from where, to which path, and what to run next."""
    count = f"{len(specs)} file{'s' if len(specs) > 1 else ''}"
    lines = [f"dataset {name!r} ({entry['name']}) is not downloadable automatically: fetch {count} by hand.", ""]
    for number, spec in enumerate(specs, 1):
        lines.append(f"  {number}. {spec['name']}")
        for drive in spec["drive"]:
            code = f" (access code: {drive['code']})" if drive.get("code") else ""
            note = f"  [{drive['note']}]" if drive.get("note") else ""
            lines.append(f"     from {drive['service']}: {drive['link']}{code}{note}")
        lines.append(f"     save it as: {(raw_dir / spec['name']).resolve()}")
        if spec["sha256"]:
            lines.append(f"     expected sha256: {spec['sha256']}")
    lines += [
        "",
        f"Then {RERUN_HINT}: the file is verified (size, sha256 when known, archive integrity), "
        f"unpacked into {dest.resolve()} and the workflow continues.",
        f"Alternatively unpack the data yourself and place the native tree at {dest.resolve()}; "
        f"it must contain: {', '.join(entry['layout'])}.",
        f"Project page: {entry['page']}  Licence: {entry['licence']}",
    ]
    return "\n".join(lines)


def obtain_file(spec: Mapping, raw_dir: Path, *, opener: Callable | None = None,
                retries: int = DEFAULT_RETRIES, backoff_s: float = DEFAULT_BACKOFF_S) -> dict:
    """Verify ``raw_dir/<name>``, downloading it first when it is absent and a URL exists."""
    path = raw_dir / spec["name"]
    digest = None
    obtained = "placed"
    if not path.is_file():
        raw_dir.mkdir(parents=True, exist_ok=True)
        digest = download_file(spec["url"], path, size=spec["size"], sha256=spec["sha256"],
                               opener=opener, retries=retries, backoff_s=backoff_s)
        obtained = "downloaded"
    record = verify_file(path, size=spec["size"], sha256=spec["sha256"], digest=digest,
                         refetch=_refetch_hint(spec, path))
    return {**record, "obtained": obtained}


def _refetch_hint(spec: Mapping, path: Path) -> str:
    if spec["url"]:
        return f"delete {path} and {RERUN_HINT} to download it again"
    links = "; ".join(f"{d['service']} {d['link']}" + (f" (code {d['code']})" if d.get("code") else "")
                      for d in spec["drive"])
    return f"delete it and fetch it again from {links}, saving it as {path.resolve()}"
