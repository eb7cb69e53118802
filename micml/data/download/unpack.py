"""Safe unpacking: a dataset's verified files become its native tree, whole or not at all.

Archives are unpacked into ``<dest>.partial`` and moved to ``<dest>`` only when complete and
when the native layout markers exist, so ``<dest>`` is never half there. Members that would land
outside the tree (absolute paths, ``..``, links pointing out) and device files are refused.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Mapping, Sequence

from micml.data.download.errors import SourceError, UnsafeArchiveError
from micml.data.download.verify import CHUNK_BYTES, archive_kind, folder_listing, wrapper_holding
from micml.data.unified import partial_path
from micml.io import PARTIAL_SUFFIX, replace_folder


def unpack_dataset(entry: Mapping, files: Sequence[tuple[Mapping, Path]], dest: Path) -> None:
    """Unpack verified files into ``<dest>.partial`` and rename it to `dest` once complete."""
    work = partial_path(dest)
    if work.exists():
        shutil.rmtree(work)  # left by a killed run: never trusted
    work.mkdir(parents=True)
    try:
        for spec, path in files:
            target = work.joinpath(*relative_parts(str(spec["extract_to"]), what=f"{path.name}: extract_to"))
            target.mkdir(parents=True, exist_ok=True)
            unpack_file(path, target)
        root = _native_root(work, entry)
        replace_folder(root, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)  # only wrapper leftovers remain when the root was a sub-folder


def _native_root(work: Path, entry: Mapping) -> Path:
    if all((work / marker).exists() for marker in entry["layout"]):
        return work
    wrapper = wrapper_holding(work, entry["layout"])
    if wrapper is not None:
        return wrapper
    missing = [marker for marker in entry["layout"] if not (work / marker).exists()]
    dest = work.with_name(work.name.removesuffix(PARTIAL_SUFFIX))
    raise SourceError(
        f"after unpacking, the {entry['format']} tree lacks {', '.join(missing)} "
        f"(top level holds: {folder_listing(work)}). The archives may use other folder names: unpack them "
        f"yourself, arrange the tree as {', '.join(entry['layout'])} and place it at {dest.resolve()}")


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
        return relative_parts(name, what=f"{archive}: {what or f'member {name!r}'}")
    except SourceError as error:
        raise UnsafeArchiveError(f"{error}; the archive would write outside its folder, so nothing was unpacked") from None


def relative_parts(name: str, *, what: str) -> tuple[str, ...]:
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
