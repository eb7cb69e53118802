"""Verification before anything is unpacked: size, sha256, archive structure, and placed trees.

Every zip CRC is checked and every tar member read to the end, so a truncated archive is named
here rather than half-unpacked. A tree the user unpacked by hand is accepted once its layout
markers exist.
"""

from __future__ import annotations

import hashlib
import lzma
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Mapping, Sequence

from micml.data.download.errors import CorruptFileError, SourceError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CHUNK_BYTES = 1 << 20


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
    wrapper = wrapper_holding(dest, entry["layout"])
    hint = (f"the tree seems to be one level down, in {wrapper}: move its contents up into {dest}" if wrapper else
            f"complete it, or delete {dest} and place the archive(s) under {dest.parent} so that they are "
            "verified and unpacked again")
    raise SourceError(f"{dest}: not a complete {entry['format']} tree for dataset {name!r}: missing "
                      f"{', '.join(missing)} (found: {folder_listing(dest)}); {hint}")


def folder_listing(folder: Path, limit: int = 12) -> str:
    names = sorted(child.name + ("/" if child.is_dir() else "") for child in folder.iterdir())
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "") if names else "nothing"


def wrapper_holding(folder: Path, layout: Sequence[str]) -> Path | None:
    """The one sub-folder that holds the whole layout, as when an archive wraps its tree."""
    holders = [child for child in folder.iterdir() if child.is_dir() and not child.is_symlink()
               and all((child / marker).exists() for marker in layout)]
    return holders[0] if len(holders) == 1 else None
