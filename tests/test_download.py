"""Dataset sources: verification, safe unpacking, manual-download messages, resumable downloads.

Archives are built in tmp_path; downloads use file:// URLs or a fake opener (no network).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import pytest

from micml.data import download
from micml.data.download import (CorruptFileError, ManualDownloadRequired, SourceError, UnsafeArchiveError,
                                  fetch_dataset, load_sources)

REPO = Path(__file__).resolve().parents[1]
RSCAR_TREE = {
    "annotations/instances_train2017.json": b'{"images": []}',
    "annotations/instances_test2017_1024.json": b'{"images": [], "annotations": []}',
    "images/train/001/img1/000001.jpg": bytes(range(256)) * 40,
    "images/test1024/002/img1/000001.jpg": b"\xff\xd8 not really a jpeg \xff\xd9",
}
RSCAR_LAYOUT = ["annotations/instances_train2017.json", "annotations/instances_test2017_1024.json", "images"]


# ----------------------------------------------------------------------------- helpers

def write_zip(path: Path, members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def tar_member(name: str, data: bytes = b"", **fields) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, (io.BytesIO(data) if info.isreg() else None)


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, io.BytesIO | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for info, data in members:
            archive.addfile(info, data)
    return path


def files_of(tree: dict[str, bytes], prefix: str = "") -> list[tuple[tarfile.TarInfo, io.BytesIO | None]]:
    return [tar_member(prefix + name, data) for name, data in tree.items()]


def file_spec(name: str, *, sha256=None, size=None, url=None, extract_to=".") -> dict:
    return {"name": name, "url": url, "sha256": sha256, "size": size, "extract_to": extract_to,
            "drive": [{"service": "BaiduYun", "link": "https://pan.example/s/abc", "code": "4afk"}]}


def sources(*specs: dict, layout=RSCAR_LAYOUT, fmt="rscar") -> dict:
    return {"toy": {"name": "Toy data", "page": "https://example.org/toy", "licence": "not stated",
                    "format": fmt, "layout": list(layout), "files": list(specs)}}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    folder = tmp_path / "raw"
    folder.mkdir()
    return folder


def assert_nothing_unpacked(raw: Path) -> None:
    dest = raw / "toy"
    assert not dest.exists()
    assert not dest.with_name("toy.partial").exists()


# ----------------------------------------------------------------------------- happy paths

def test_zip_is_verified_unpacked_and_recorded(raw):
    archive = write_zip(raw / "RsCarData.zip", RSCAR_TREE)
    manifest = fetch_dataset("toy", sources(file_spec("RsCarData.zip")), raw, raw / "toy")

    assert tree_contents(raw / "toy") == RSCAR_TREE
    assert not (raw / "toy.partial").exists()
    (record,) = manifest["files"]
    assert record["sha256"] == sha256_of(archive)
    assert record["bytes"] == archive.stat().st_size
    assert record["members"] == len(RSCAR_TREE)
    assert (record["kind"], record["obtained"], record["sha256_pinned"]) == ("zip", "placed", False)
    assert manifest["placed_tree"] is False and manifest["tree"] == str(raw / "toy")


def test_tar_gz_with_a_wrapper_folder_becomes_the_tree_root(raw):
    archive = write_tar(raw / "RsCarData.tar.gz", files_of(RSCAR_TREE, prefix="RsCarData/"))
    spec = file_spec("RsCarData.tar.gz", sha256=sha256_of(archive), size=archive.stat().st_size)
    manifest = fetch_dataset("toy", sources(spec), raw, raw / "toy")

    assert tree_contents(raw / "toy") == RSCAR_TREE
    assert manifest["files"][0]["sha256_pinned"] is True
    assert manifest["files"][0]["kind"] == "tar"


def test_several_files_with_extract_to_and_a_plain_file(raw):
    # train_data.zip holds train_data/...; annotations.zip holds bare files: both land once.
    write_zip(raw / "train_data.zip", {"train_data/images/img001001.jpg": b"a", "train_data/images/img001002.jpg": b"b"})
    write_zip(raw / "annotations.zip", {"00001.mat": b"mat"})
    (raw / "trainlist.txt").write_text("00001\n")
    entry = sources(file_spec("train_data.zip", extract_to="train_data"),
                    file_spec("annotations.zip", extract_to="annotations"),
                    file_spec("trainlist.txt"),
                    layout=["annotations", "train_data/images"], fmt="dronecrowd")
    manifest = fetch_dataset("toy", entry, raw, raw / "toy")

    assert tree_contents(raw / "toy") == {
        "annotations/00001.mat": b"mat",
        "train_data/images/img001001.jpg": b"a",
        "train_data/images/img001002.jpg": b"b",
        "trainlist.txt": b"00001\n",
    }
    assert [r["kind"] for r in manifest["files"]] == ["zip", "zip", "file"]


def test_links_inside_the_tree_are_kept(raw):
    members = files_of(RSCAR_TREE) + [
        tar_member("images/latest", type=tarfile.SYMTYPE, linkname="train"),
        tar_member("images/copy.json", type=tarfile.LNKTYPE, linkname="annotations/instances_train2017.json"),
    ]
    write_tar(raw / "RsCarData.tar", members, mode="w")
    fetch_dataset("toy", sources(file_spec("RsCarData.tar")), raw, raw / "toy")
    assert (raw / "toy/images/latest").is_symlink()
    assert (raw / "toy/images/latest/001/img1/000001.jpg").read_bytes() == RSCAR_TREE["images/train/001/img1/000001.jpg"]
    assert (raw / "toy/images/copy.json").read_bytes() == RSCAR_TREE["annotations/instances_train2017.json"]


def test_a_stale_partial_folder_from_a_killed_run_is_discarded(raw):
    write_zip(raw / "RsCarData.zip", RSCAR_TREE)
    stale = raw / "toy.partial"
    (stale / "junk").mkdir(parents=True)
    fetch_dataset("toy", sources(file_spec("RsCarData.zip")), raw, raw / "toy")
    assert not stale.exists()
    assert not (raw / "toy/junk").exists()


# ----------------------------------------------------------------------------- placed tree

def test_a_tree_placed_by_hand_is_accepted_when_its_layout_exists(raw):
    for name, data in RSCAR_TREE.items():
        (raw / "toy" / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / "toy" / name).write_bytes(data)
    manifest = fetch_dataset("toy", sources(file_spec("RsCarData.zip")), raw, raw / "toy")
    assert manifest["placed_tree"] is True and manifest["files"] == []


def test_an_incomplete_placed_tree_names_what_is_missing(raw):
    (raw / "toy" / "images").mkdir(parents=True)
    with pytest.raises(SourceError, match="instances_train2017.json") as error:
        fetch_dataset("toy", sources(file_spec("RsCarData.zip")), raw, raw / "toy")
    assert str(raw / "toy") in str(error.value)


def test_a_placed_tree_one_level_too_deep_gets_a_hint(raw):
    for name, data in RSCAR_TREE.items():
        (raw / "toy/RsCarData" / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / "toy/RsCarData" / name).write_bytes(data)
    with pytest.raises(SourceError, match="one level down"):
        fetch_dataset("toy", sources(file_spec("RsCarData.zip")), raw, raw / "toy")


def test_unpacked_archives_without_the_layout_leave_no_tree(raw):
    write_zip(raw / "RsCarData.zip", {"something/else.txt": b"x"})
    with pytest.raises(SourceError, match="lacks annotations/instances_train2017.json"):
        fetch_dataset("toy", sources(file_spec("RsCarData.zip")), raw, raw / "toy")
    assert_nothing_unpacked(raw)


# ----------------------------------------------------------------------------- corrupt files

def test_checksum_mismatch_names_the_file_and_both_digests(raw):
    archive = write_zip(raw / "RsCarData.zip", RSCAR_TREE)
    with pytest.raises(CorruptFileError) as error:
        fetch_dataset("toy", sources(file_spec("RsCarData.zip", sha256="0" * 64)), raw, raw / "toy")
    message = str(error.value)
    assert str(archive) in message and "0" * 64 in message and sha256_of(archive) in message
    assert "corrupt or truncated" in message and "https://pan.example/s/abc" in message
    assert_nothing_unpacked(raw)


def test_size_mismatch_is_named(raw):
    archive = write_zip(raw / "RsCarData.zip", RSCAR_TREE)
    wrong = archive.stat().st_size + 1
    with pytest.raises(CorruptFileError, match=f"expected {wrong} bytes"):
        fetch_dataset("toy", sources(file_spec("RsCarData.zip", size=wrong)), raw, raw / "toy")
    assert_nothing_unpacked(raw)


def test_truncated_zip_is_detected_and_nothing_is_unpacked(raw):
    archive = write_zip(raw / "RsCarData.zip", RSCAR_TREE)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    with pytest.raises(CorruptFileError, match="truncated or corrupt") as error:
        fetch_dataset("toy", sources(file_spec("RsCarData.zip")), raw, raw / "toy")
    assert str(archive) in str(error.value)
    assert_nothing_unpacked(raw)


def test_truncated_tar_gz_is_detected_and_nothing_is_unpacked(raw):
    archive = write_tar(raw / "RsCarData.tar.gz", files_of(RSCAR_TREE))
    archive.write_bytes(archive.read_bytes()[:-40])  # loses part of the deflate stream and the trailer
    with pytest.raises(CorruptFileError, match="truncated or corrupt") as error:
        fetch_dataset("toy", sources(file_spec("RsCarData.tar.gz")), raw, raw / "toy")
    assert str(archive) in str(error.value)
    assert_nothing_unpacked(raw)


def test_plain_tar_cut_exactly_between_two_members_is_detected(raw):
    first, second = b"x" * 700, b"y" * 10
    archive = write_tar(raw / "RsCarData.tar", [tar_member("a.bin", first), tar_member("b.bin", second)], mode="w")
    boundary = 512 + 1024  # header + data padded to whole 512-byte blocks: a shorter but "valid" tar
    archive.write_bytes(archive.read_bytes()[:boundary])
    with pytest.raises(CorruptFileError, match="end-of-archive"):
        fetch_dataset("toy", sources(file_spec("RsCarData.tar")), raw, raw / "toy")
    assert_nothing_unpacked(raw)


def test_zip_member_with_a_bad_crc_is_named(raw):
    archive = write_zip(raw / "RsCarData.zip", {**RSCAR_TREE, "images/x.bin": b"A" * 64}, compression=zipfile.ZIP_STORED)
    data = archive.read_bytes()
    archive.write_bytes(data.replace(b"A" * 64, b"A" * 63 + b"B"))
    with pytest.raises(CorruptFileError, match="'images/x.bin' fails its CRC"):
        fetch_dataset("toy", sources(file_spec("RsCarData.zip")), raw, raw / "toy")
    assert_nothing_unpacked(raw)


# ----------------------------------------------------------------------------- unsafe archives

def test_zip_slip_member_is_refused_and_nothing_is_written_outside(raw, tmp_path):
    write_zip(raw / "RsCarData.zip", {**RSCAR_TREE, "../evil": b"pwned"})
    with pytest.raises(UnsafeArchiveError) as error:
        fetch_dataset("toy", sources(file_spec("RsCarData.zip")), raw, raw / "toy")
    assert "'../evil'" in str(error.value) and "RsCarData.zip" in str(error.value)
    assert not (raw / "evil").exists() and not (tmp_path / "evil").exists()
    assert_nothing_unpacked(raw)


def test_absolute_member_path_is_refused(raw, tmp_path):
    target = tmp_path / "absolute_evil"
    write_zip(raw / "RsCarData.zip", {**RSCAR_TREE, str(target): b"pwned"})
    with pytest.raises(UnsafeArchiveError, match="absolute path"):
        fetch_dataset("toy", sources(file_spec("RsCarData.zip")), raw, raw / "toy")
    assert not target.exists()
    assert_nothing_unpacked(raw)


def test_absolute_member_path_in_tar_is_refused(raw, tmp_path):
    target = tmp_path / "absolute_evil"
    write_tar(raw / "RsCarData.tar.gz", files_of(RSCAR_TREE) + [tar_member(str(target), b"pwned")])
    with pytest.raises(UnsafeArchiveError, match="absolute path"):
        fetch_dataset("toy", sources(file_spec("RsCarData.tar.gz")), raw, raw / "toy")
    assert not target.exists()


@pytest.mark.parametrize("link", ["../../outside", "/etc"])
def test_tar_symlink_escaping_the_tree_is_refused(raw, tmp_path, link):
    members = files_of(RSCAR_TREE) + [
        tar_member("images/escape", type=tarfile.SYMTYPE, linkname=link),
        tar_member("images/escape/evil", b"pwned"),
    ]
    write_tar(raw / "RsCarData.tar.gz", members)
    with pytest.raises(UnsafeArchiveError, match="'images/escape'"):
        fetch_dataset("toy", sources(file_spec("RsCarData.tar.gz")), raw, raw / "toy")
    assert not (tmp_path / "outside").exists()
    assert_nothing_unpacked(raw)


def test_chained_symlinks_that_end_outside_are_refused(raw, tmp_path):
    # Each link points inside when written; together p -> b/.. -> ./.. leaves the tree.
    members = files_of(RSCAR_TREE) + [
        tar_member("p", type=tarfile.SYMTYPE, linkname="b/.."),
        tar_member("b", type=tarfile.SYMTYPE, linkname="."),
    ]
    write_tar(raw / "RsCarData.tar.gz", members)
    with pytest.raises(UnsafeArchiveError, match="'p'"):
        fetch_dataset("toy", sources(file_spec("RsCarData.tar.gz")), raw, raw / "toy")
    assert_nothing_unpacked(raw)


def test_tar_hardlink_escaping_the_tree_is_refused(raw):
    members = files_of(RSCAR_TREE) + [tar_member("images/hard", type=tarfile.LNKTYPE, linkname="../../secret")]
    write_tar(raw / "RsCarData.tar.gz", members)
    with pytest.raises(UnsafeArchiveError, match="member 'images/hard' \\(a hard link to '../../secret'\\)"):
        fetch_dataset("toy", sources(file_spec("RsCarData.tar.gz")), raw, raw / "toy")
    assert_nothing_unpacked(raw)


def test_tar_device_file_is_refused(raw):
    members = files_of(RSCAR_TREE) + [tar_member("images/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)]
    write_tar(raw / "RsCarData.tar.gz", members)
    with pytest.raises(UnsafeArchiveError, match="'images/null' is a device"):
        fetch_dataset("toy", sources(file_spec("RsCarData.tar.gz")), raw, raw / "toy")
    assert_nothing_unpacked(raw)


# ----------------------------------------------------------------------------- manual downloads

def test_manual_download_message_says_what_where_and_next_step(raw):
    catalogue = load_sources(REPO / "config/datasets.yaml")
    with pytest.raises(ManualDownloadRequired) as error:
        fetch_dataset("rscar", catalogue, raw, raw / "rscar")
    message = str(error.value)
    assert "RsCarData.zip" in message
    assert "https://pan.baidu.com/s/1QuLXsZEUkZMoQ9JJW6Qz4w?pwd=4afk" in message
    assert "access code: 4afk" in message
    assert str((raw / "RsCarData.zip").resolve()) in message
    assert "re-run" in message and str((raw / "rscar").resolve()) in message
    assert not (raw / "rscar").exists()


def test_manual_download_lists_only_the_missing_files(raw):
    catalogue = load_sources(REPO / "config/datasets.yaml")
    write_zip(raw / "annotations.zip", {"00001.mat": b"m"})
    with pytest.raises(ManualDownloadRequired) as error:
        fetch_dataset("dronecrowd", catalogue, raw, raw / "dronecrowd")
    message = str(error.value)
    assert "fetch 5 files" in message
    assert "train_data.zip" in message and "testlist.txt" in message
    assert "1. annotations.zip" not in message and "code: ml1u" in message


# ----------------------------------------------------------------------------- downloads

def test_direct_url_is_downloaded_verified_and_unpacked(raw, tmp_path):
    source = write_zip(tmp_path / "upstream.zip", RSCAR_TREE)
    spec = file_spec("RsCarData.zip", url=source.as_uri(), sha256=sha256_of(source))
    manifest = fetch_dataset("toy", sources(spec), raw, raw / "toy", backoff_s=0)

    assert (raw / "RsCarData.zip").read_bytes() == source.read_bytes()
    assert not (raw / "RsCarData.zip.part").exists()
    assert manifest["files"][0]["obtained"] == "downloaded"
    assert tree_contents(raw / "toy") == RSCAR_TREE


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, status: int, fail_after: int | None = None):
        super().__init__(data)
        self.status = status
        self.headers = {"Content-Length": str(len(data))}
        self.fail_after = fail_after

    def read(self, size=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        limit = size if size >= 0 else len(self.getvalue())
        if self.fail_after is not None:
            limit = min(limit, self.fail_after - self.tell())
        return super().read(limit)

    def getcode(self):
        return self.status


def test_interrupted_download_is_resumed_with_a_range_request(tmp_path):
    payload = bytes(range(256)) * 50
    requests = []

    def opener(request, timeout):
        requests.append(request.get_header("Range"))
        if len(requests) == 1:
            return FakeResponse(payload, 200, fail_after=3000)  # dies mid-stream
        start = int(request.get_header("Range").removeprefix("bytes=").rstrip("-"))
        return FakeResponse(payload[start:], 206)

    target = tmp_path / "file.bin"
    digest = download.download_file("https://example.org/file.bin", target, size=len(payload),
                                    sha256=hashlib.sha256(payload).hexdigest(), opener=opener, backoff_s=0)
    assert requests == [None, "bytes=3000-"]
    assert target.read_bytes() == payload and digest == hashlib.sha256(payload).hexdigest()
    assert not (tmp_path / "file.bin.part").exists()


def test_a_server_ignoring_range_restarts_the_file_instead_of_appending(tmp_path):
    payload = b"0123456789" * 100
    (tmp_path / "file.bin.part").write_bytes(payload[:300])
    opener = lambda request, timeout: FakeResponse(payload, 200)  # noqa: E731 - whole file despite Range
    download.download_file("https://example.org/file.bin", tmp_path / "file.bin",
                           sha256=hashlib.sha256(payload).hexdigest(), opener=opener, backoff_s=0)
    assert (tmp_path / "file.bin").read_bytes() == payload


def test_downloaded_file_with_a_wrong_checksum_is_discarded(tmp_path):
    source = tmp_path / "upstream.bin"
    source.write_bytes(b"payload")
    target = tmp_path / "file.bin"
    with pytest.raises(CorruptFileError, match="corrupt or truncated"):
        download.download_file(source.as_uri(), target, sha256="f" * 64, backoff_s=0)
    assert not target.exists() and not (tmp_path / "file.bin.part").exists()


def test_http_404_is_not_retried(tmp_path):
    calls = []

    def opener(request, timeout):
        calls.append(request.full_url)
        raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, None)

    with pytest.raises(SourceError, match="HTTP 404"):
        download.download_file("https://example.org/gone.zip", tmp_path / "gone.zip", opener=opener, backoff_s=0)
    assert len(calls) == 1


def test_transient_failures_are_retried_then_reported(tmp_path):
    calls = []

    def opener(request, timeout):
        calls.append(1)
        raise urllib.error.URLError("temporary failure in name resolution")

    with pytest.raises(SourceError, match="after 3 attempts"):
        download.download_file("https://example.org/x.zip", tmp_path / "x.zip", opener=opener, retries=3, backoff_s=0)
    assert len(calls) == 3


# ----------------------------------------------------------------------------- catalogue

def test_datasets_yaml_lists_the_three_real_datasets_with_every_key():
    catalogue = load_sources(REPO / "config/datasets.yaml")
    assert set(catalogue) == {"rscar", "viso", "dronecrowd"}
    for name, entry in catalogue.items():
        assert entry["format"] == name
        for key in download.DATASET_KEYS:
            assert entry[key], f"{name}: {key} is empty"
        for spec in entry["files"]:
            assert set(download.FILE_KEYS) <= set(spec)
            assert spec["url"] or all(drive["link"].startswith("https://") for drive in spec["drive"])
    baidu = catalogue["rscar"]["files"][0]["drive"][0]
    assert (baidu["service"], baidu["code"]) == ("BaiduYun", "4afk")


def test_load_sources_names_a_missing_key(tmp_path):
    bad = tmp_path / "datasets.yaml"
    bad.write_text("datasets:\n  toy:\n    name: Toy\n    page: p\n    licence: l\n    format: viso\n"
                   "    layout: [mot/car]\n    files:\n      - {name: a.zip, url: null, drive: [], size: null,"
                   " extract_to: .}\n")
    with pytest.raises(SourceError, match="missing key\\(s\\) sha256"):
        load_sources(bad)


TOY_SOURCES = ("datasets:\n  toy:\n    name: Toy\n    page: p\n    licence: l\n    format: viso\n"
               "    layout: [mot/car]\n    files:\n      - {name: a.zip, url: null, size: null, sha256: null,"
               " extract_to: ., drive: [{service: BaiduYun, link: 'https://pan.baidu.com/s/x', code: ab}]}\n")


def test_toy_sources_pass_the_schema(tmp_path):
    good = tmp_path / "datasets.yaml"
    good.write_text(TOY_SOURCES)
    assert load_sources(good)["toy"]["files"][0]["name"] == "a.zip"


@pytest.mark.parametrize(("old", "new", "message"), [
    # wrong type: the key, the value and what the schema's description asks for
    ("size: null", "size: big", r"datasets\.yaml: invalid value at 'datasets\.toy\.files\.0\.size': 'big' is not of "
                                r"type 'integer', 'null'; expected a positive number of bytes, or null"),
    ("sha256: null", "sha256: abc", r"invalid value at 'datasets\.toy\.files\.0\.sha256': 'abc' has the wrong form; "
                                    r"expected 64 lower-case hex digits"),
    ("format: viso", "format: mp4", r"invalid value at 'datasets\.toy\.format': 'mp4' is not one of"),
    # unknown key, with the nearest valid name
    ("licence: l", "licence: l\n    licnce: l", r"datasets\.yaml: unknown key 'datasets\.toy\.licnce'; did you mean "
                                                r"'licence'\?"),
    # missing required field, named with where it belongs
    ("    layout: [mot/car]\n", "", r"datasets\.yaml: 'datasets\.toy': missing key\(s\) layout; expected one dataset"),
    ("link: 'https://pan.baidu.com/s/x', ", "", r"'datasets\.toy\.files\.0\.drive\.0': missing key\(s\) link"),
    # neither a URL nor a cloud drive
    ("drive: [{service: BaiduYun, link: 'https://pan.baidu.com/s/x', code: ab}]", "drive: []",
     r"'datasets\.toy\.files\.0\.drive': \[\] should be non-empty; expected at least one cloud-drive link"),
    # the two path rules kept in code
    ("name: a.zip", "name: ../a.zip", r"datasets\.toy\.files\.0\.name='\.\./a\.zip': .* plain file or folder name"),
    ("extract_to: .", "extract_to: /abs", r"datasets\.toy\.files\.0\.extract_to is an absolute path; give a folder "
                                          r"inside the tree"),
])
def test_a_schema_violation_is_one_line_naming_the_file_key_and_fix(tmp_path, old, new, message):
    assert old in TOY_SOURCES
    bad = tmp_path / "datasets.yaml"
    bad.write_text(TOY_SOURCES.replace(old, new))
    with pytest.raises(SourceError, match=message) as error:
        load_sources(bad)
    assert str(error.value).startswith(str(bad)) and "\n" not in str(error.value)


def test_sources_schema_formats_are_the_catalogue_formats_with_protocols():
    from micml.catalog import PROTOCOLS
    schema = download.sources.load_schema()
    assert schema["$defs"]["dataset"]["properties"]["format"]["enum"] == list(PROTOCOLS), (
        "config/datasets.schema.yaml `format.enum` differs from micml.catalog.PROTOCOLS: copy its keys there")
