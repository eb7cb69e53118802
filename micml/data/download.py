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
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import lzma
import os
import re
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable, Mapping, Sequence

import yaml

from micml.data.unified import PARTIAL_SUFFIX, DatasetError, partial_path
from micml.paths import check_output_apart

log = logging.getLogger(__name__)

FORMATS = ("rscar", "viso", "dronecrowd")
DATASET_KEYS = ("name", "page", "licence", "format", "layout", "files")
FILE_KEYS = ("name", "url", "drive", "sha256", "size", "extract_to")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CHUNK_BYTES = 1 << 20
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF_S = 5.0
DOWNLOAD_TIMEOUT_S = 60
# HTTP answers that a retry cannot change (not found, forbidden, ...).
RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
RERUN_HINT = "re-run the same command (e.g. `snakemake --cores 8`)"


class SourceError(DatasetError):
    """A dataset source that cannot be obtained or used; the message names the file and the fix."""


class ManualDownloadRequired(SourceError):
    """Files that only a person with a browser can fetch (cloud drives with access codes)."""


class CorruptFileError(SourceError):
    """A placed or downloaded file whose size, checksum or archive structure is wrong."""


class UnsafeArchiveError(SourceError):
    """An archive member that would be written outside the tree, or a device file."""


# ----------------------------------------------------------------------------- catalogue

def load_sources(path: Path | str) -> dict[str, dict]:
    """Read config/datasets.yaml and return {dataset: entry}, every entry checked."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SourceError(f"{path}: cannot read the dataset sources ({error}); restore the file from git") from None
    datasets = (document or {}).get("datasets") if isinstance(document, dict) else None
    if not isinstance(datasets, dict) or not datasets:
        raise SourceError(f"{path}: expected a top-level `datasets:` mapping of dataset entries")
    for name, entry in datasets.items():
        _check_entry(path, str(name), entry)
    return datasets


def _check_entry(path: Path, name: str, entry: Any) -> None:
    where = f"{path}: dataset {name!r}"
    if not isinstance(entry, dict):
        raise SourceError(f"{where}: expected a mapping with keys {', '.join(DATASET_KEYS)}")
    missing = [key for key in DATASET_KEYS if key not in entry]
    if missing:
        raise SourceError(f"{where}: missing key(s) {', '.join(missing)}")
    if entry["format"] not in FORMATS:
        raise SourceError(f"{where}: format {entry['format']!r} is not one of {', '.join(FORMATS)}")
    if not entry["layout"] or not all(isinstance(marker, str) for marker in entry["layout"]):
        raise SourceError(f"{where}: `layout` must list the paths that the native tree contains")
    if not isinstance(entry["files"], list) or not entry["files"]:
        raise SourceError(f"{where}: `files` must list at least one file")
    for spec in entry["files"]:
        _check_file_spec(f"{where}, file {spec.get('name') if isinstance(spec, dict) else spec!r}", spec)


def _check_file_spec(where: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        raise SourceError(f"{where}: expected a mapping with keys {', '.join(FILE_KEYS)}")
    missing = [key for key in FILE_KEYS if key not in spec]
    if missing:
        raise SourceError(f"{where}: missing key(s) {', '.join(missing)} (use null where unknown)")
    if not isinstance(spec["name"], str) or "/" in spec["name"] or "\\" in spec["name"] or spec["name"] in ("", ".", ".."):
        raise SourceError(f"{where}: `name` must be a plain file name (it is placed directly under the raw folder)")
    if spec["sha256"] is not None and not re.fullmatch(r"[0-9a-f]{64}", str(spec["sha256"])):
        raise SourceError(f"{where}: `sha256` must be 64 lower-case hex digits or null")
    if spec["size"] is not None and not (isinstance(spec["size"], int) and spec["size"] > 0):
        raise SourceError(f"{where}: `size` must be a positive number of bytes or null")
    if spec["url"] is not None and not re.match(r"^(https?|ftp|file)://", str(spec["url"])):
        raise SourceError(f"{where}: `url` must be a direct http(s)/ftp/file URL or null")
    if not isinstance(spec["drive"], list):
        raise SourceError(f"{where}: `drive` must be a list of {{service, link, code}} (empty when none)")
    if spec["url"] is None and not spec["drive"]:
        raise SourceError(f"{where}: neither `url` nor `drive` says where the file comes from")
    _relative_parts(str(spec["extract_to"]), what=f"{where}: extract_to")


# ----------------------------------------------------------------------------- fetch

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
    # unpacking clears <dest>.partial first: archives kept there would be deleted
    check_output_apart(dest, *(raw_dir / spec["name"] for spec in entry["files"]), what="unpacked tree",
                       scratch_suffixes=(PARTIAL_SUFFIX,))
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


# ----------------------------------------------------------------------------- download

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


# ----------------------------------------------------------------------------- verification

def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def archive_kind(file_name: str) -> str:
    """zip | tar | file (copied as is), from the file name."""
    lower = file_name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    return "file"


def verify_file(path: Path, *, size: int | None = None, sha256: str | None = None, digest: str | None = None,
                refetch: str = "delete it and fetch it again") -> dict:
    """Check size, sha256 and archive structure of `path`; return its manifest record."""
    found = path.stat().st_size
    if size is not None and found != size:
        raise CorruptFileError(f"{path}: {found} bytes, expected {size} bytes: the file is truncated or not the "
                               f"right file; {refetch}")
    digest = digest or file_sha256(path)
    if sha256 is not None and digest != sha256:
        raise CorruptFileError(f"{path}: sha256 is {digest}, expected {sha256}: the file is corrupt or truncated "
                               f"(an interrupted download?); {refetch}")
    kind = archive_kind(path.name)
    members = {"zip": check_zip, "tar": check_tar}.get(kind, lambda _path, _hint: None)(path, refetch)
    return {"name": path.name, "path": str(path), "bytes": found, "sha256": digest,
            "sha256_expected": sha256, "sha256_pinned": sha256 is not None, "kind": kind, "members": members}


def check_zip(path: Path, refetch: str) -> int:
    """Read every member and check its CRC; return the member count."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            count = len(archive.infolist())
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as error:
        raise CorruptFileError(f"{path}: not a complete zip archive ({error}): it is truncated or corrupt; "
                               f"{refetch}") from None
    if bad is not None:
        raise CorruptFileError(f"{path}: member {bad!r} fails its CRC check: the archive is corrupt; {refetch}")
    return count


def check_tar(path: Path, refetch: str) -> int:
    """Read every member to its end and the archive to its end-of-archive marker."""
    count = 0
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                count += 1
                if member.isreg():
                    _drain(archive.extractfile(member))
            _check_tar_end(archive)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as error:
        raise CorruptFileError(f"{path}: not a complete tar archive ({error}) after {count} members: it is "
                               f"truncated or corrupt; {refetch}") from None
    return count


def _check_tar_end(archive: tarfile.TarFile) -> None:
    """A tar cut exactly between two members reads like a shorter valid archive, except that
    the zero block that ends every archive is missing; a compressed stream also checks its own
    trailer (CRC and length) once read to the end."""
    stream = archive.fileobj
    stream.seek(archive.offset)
    end = stream.read(tarfile.BLOCKSIZE)
    if len(end) < tarfile.BLOCKSIZE or end.count(0) != tarfile.BLOCKSIZE:
        raise tarfile.ReadError(f"no end-of-archive block after the last member at byte {archive.offset}")
    _drain(stream)


def _drain(stream: BinaryIO | None) -> None:
    if stream is not None:
        while stream.read(CHUNK_BYTES):
            pass


def check_placed_tree(name: str, entry: Mapping, dest: Path) -> None:
    """A tree placed by hand (or left by an earlier run) must hold the layout markers."""
    if not dest.is_dir():
        raise SourceError(f"{dest}: expected the native {entry['format']} tree of {name!r} (a folder), found a file; "
                          "move it away and place the archive(s) or the unpacked folder as config/datasets.yaml says")
    missing = [marker for marker in entry["layout"] if not (dest / marker).exists()]
    if not missing:
        return
    wrapper = _wrapper_holding(dest, entry["layout"])
    hint = (f"the tree seems to be one level down, in {wrapper}: move its contents up into {dest}" if wrapper else
            f"complete it, or delete {dest} and place the archive(s) under {dest.parent} so that they are "
            "verified and unpacked again")
    raise SourceError(f"{dest}: not a complete {entry['format']} tree for dataset {name!r}: missing "
                      f"{', '.join(missing)} (found: {_listing(dest)}); {hint}")


def _listing(folder: Path, limit: int = 12) -> str:
    names = sorted(child.name + ("/" if child.is_dir() else "") for child in folder.iterdir())
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "") if names else "nothing"


def _wrapper_holding(folder: Path, layout: Sequence[str]) -> Path | None:
    """The one sub-folder that holds the whole layout, as when an archive wraps its tree."""
    holders = [child for child in folder.iterdir() if child.is_dir() and not child.is_symlink()
               and all((child / marker).exists() for marker in layout)]
    return holders[0] if len(holders) == 1 else None


# ----------------------------------------------------------------------------- unpacking

def unpack_dataset(entry: Mapping, files: Sequence[tuple[Mapping, Path]], dest: Path) -> None:
    """Unpack verified files into ``<dest>.partial`` and rename it to `dest` once complete."""
    work = partial_path(dest)
    if work.exists():
        shutil.rmtree(work)  # left by a killed run: never trusted
    work.mkdir(parents=True)
    try:
        for spec, path in files:
            target = work.joinpath(*_relative_parts(str(spec["extract_to"]), what=f"{path.name}: extract_to"))
            target.mkdir(parents=True, exist_ok=True)
            unpack_file(path, target)
        root = _native_root(work, entry)
        os.replace(root, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)  # only wrapper leftovers remain when the root was a sub-folder


def _native_root(work: Path, entry: Mapping) -> Path:
    if all((work / marker).exists() for marker in entry["layout"]):
        return work
    wrapper = _wrapper_holding(work, entry["layout"])
    if wrapper is not None:
        return wrapper
    missing = [marker for marker in entry["layout"] if not (work / marker).exists()]
    raise SourceError(
        f"after unpacking, the {entry['format']} tree lacks {', '.join(missing)} (top level holds: {_listing(work)}). "
        f"The archives may use other folder names: unpack them yourself, arrange the tree as "
        f"{', '.join(entry['layout'])} and place it at {work.with_name(work.name.removesuffix('.partial')).resolve()}")


def unpack_file(path: Path, target: Path) -> None:
    """Unpack one verified archive into the folder `target` (a plain file is copied there)."""
    kind = archive_kind(path.name)
    if kind == "zip":
        _unpack_zip(path, target)
    elif kind == "tar":
        _unpack_tar(path, target)
    else:
        shutil.copyfile(path, target / path.name)


def _unpack_zip(path: Path, target: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        names = [_member_parts(path, info.filename) for info in infos]  # refuse before writing anything
        strip = _shared_top_folder(names, target.name)
        writer = _TreeWriter(path, target)
        for info, parts in zip(infos, names):
            parts = parts[strip:]
            if not parts:
                continue
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.is_dir() or kind == stat.S_IFDIR:
                writer.directory(info.filename, parts)
            elif kind == stat.S_IFLNK:
                writer.symlink(info.filename, parts, archive.read(info).decode("utf-8"))
            elif kind in (0, stat.S_IFREG):  # 0: written by tools that store no Unix mode
                with archive.open(info) as stream:
                    writer.file(info.filename, parts, stream)
            else:
                raise UnsafeArchiveError(f"{path}: member {info.filename!r} is a device or special file; refused")
        writer.check_links()


def _unpack_tar(path: Path, target: Path) -> None:
    with tarfile.open(path, "r:*") as archive:
        members = archive.getmembers()
        names = [_member_parts(path, member.name) for member in members]  # refuse before writing anything
        for member in members:
            if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                raise UnsafeArchiveError(f"{path}: member {member.name!r} is a device, FIFO or special file; refused")
            if member.islnk():  # hard-link targets are archive paths: same rules as member names
                _member_parts(path, member.linkname, f"member {member.name!r} (a hard link to {member.linkname!r})")
        strip = _shared_top_folder(names, target.name)
        writer = _TreeWriter(path, target)
        for member, parts in zip(members, names):
            parts = parts[strip:]
            if not parts:
                continue
            if member.isdir():
                writer.directory(member.name, parts)
            elif member.issym():
                writer.symlink(member.name, parts, member.linkname)
            elif member.islnk():
                link_parts = _member_parts(path, member.linkname)[strip:]  # checked above
                writer.hardlink(member.name, parts, member.linkname, link_parts)
            else:
                writer.file(member.name, parts, archive.extractfile(member))
        writer.check_links()


def _member_parts(archive: Path, name: str, what: str | None = None) -> tuple[str, ...]:
    """The member's path as components; absolute paths and `..` are refused."""
    try:
        return _relative_parts(name, what=f"{archive}: {what or f'member {name!r}'}")
    except SourceError as error:
        raise UnsafeArchiveError(f"{error}; the archive would write outside its folder, so nothing was unpacked") from None


def _relative_parts(name: str, *, what: str) -> tuple[str, ...]:
    normalized = name.replace("\\", "/")  # Windows tools write backslashes; treat them as separators
    if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized):
        raise SourceError(f"{what} is an absolute path")
    parts = tuple(part for part in PurePosixPath(normalized).parts if part not in ("", "."))
    if ".." in parts:
        raise SourceError(f"{what} contains a '..' component")
    return parts


def _shared_top_folder(names: Sequence[tuple[str, ...]], folder: str) -> int:
    """1 when every member lies under one top folder named like the extraction folder
    (train_data.zip holding train_data/... unpacked into train_data/), else 0."""
    nonempty = [parts for parts in names if parts]
    if nonempty and all(parts[0] == folder for parts in nonempty) and any(len(parts) > 1 for parts in nonempty):
        return 1
    return 0


class _TreeWriter:
    """Writes members under `root`, re-checking on disk that no write or link leaves it.

    The name checks in `_member_parts` are lexical; a symlink unpacked earlier could still
    redirect a later member, so every write resolves its real parent folder first.
    """

    def __init__(self, archive: Path, root: Path):
        self.archive = archive
        self.root = Path(os.path.realpath(root))
        self.links: list[tuple[str, Path]] = []

    def _inside(self, path: str | Path) -> bool:
        return os.path.commonpath([self.root, os.path.realpath(path)]) == str(self.root)

    def _target(self, member: str, parts: Sequence[str]) -> Path:
        target = self.root.joinpath(*parts)
        if not self._inside(target.parent):
            raise UnsafeArchiveError(f"{self.archive}: member {member!r} would be written outside the target "
                                     "folder (through '..' or a link); refused")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            target.unlink()  # a later copy of a member replaces the earlier one (tar semantics)
        return target

    def directory(self, member: str, parts: Sequence[str]) -> None:
        target = self._target(member, parts)
        target.mkdir(exist_ok=True)

    def file(self, member: str, parts: Sequence[str], stream: BinaryIO | None) -> None:
        target = self._target(member, parts)
        with open(target, "wb") as out:
            if stream is not None:
                shutil.copyfileobj(stream, out, CHUNK_BYTES)

    def symlink(self, member: str, parts: Sequence[str], link: str) -> None:
        target = self._target(member, parts)
        if os.path.isabs(link) or link.startswith("\\") or re.match(r"^[A-Za-z]:", link):
            raise UnsafeArchiveError(f"{self.archive}: member {member!r} is a symlink to the absolute path "
                                     f"{link!r}; refused")
        if not self._inside(os.path.join(os.path.realpath(target.parent), link)):
            raise UnsafeArchiveError(f"{self.archive}: member {member!r} is a symlink to {link!r}, which points "
                                     "outside the target folder; refused")
        os.symlink(link, target)
        self.links.append((member, target))

    def hardlink(self, member: str, parts: Sequence[str], link: str, link_parts: Sequence[str]) -> None:
        source = self.root.joinpath(*link_parts)
        if not self._inside(source) or not source.is_file():
            raise UnsafeArchiveError(f"{self.archive}: member {member!r} is a hard link to {link!r}, which is not "
                                     "a file unpacked earlier inside the target folder; refused")
        target = self._target(member, parts)
        shutil.copyfile(os.path.realpath(source), target)  # a copy: no inode shared with anything

    def check_links(self) -> None:
        """Each link pointed inside when written, but a later link can move what an earlier one
        goes through (`a -> b/..` then `b -> .`): check them all once the tree is complete."""
        for member, link in self.links:
            if not self._inside(link):
                raise UnsafeArchiveError(f"{self.archive}: member {member!r} is a symlink that, with the links "
                                         "unpacked after it, points outside the target folder; refused")
