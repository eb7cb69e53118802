"""Faults: real processes killed at random points and at every write step, and a dataset that
fails inside the workflow. What must survive: a dataset folder holds a whole dataset or is
absent (never a half one with its meta.json), `.partial` folders are discarded, a re-run
completes with the very bytes of an uninterrupted run, and one dataset's failure leaves the
other datasets' results intact.

Runs are tiny (.test/config.yaml sizes) and every kill is bounded by the length of a clean run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from micml.cli import main as micml

REPO = Path(__file__).resolve().parent.parent
TEST_CONFIG = REPO / ".test" / "config.yaml"
TINY = yaml.safe_load(TEST_CONFIG.read_text())["synthetic"]["overrides"]
# Longer videos than the workflow's tiny ones, so that writing, not starting Python, fills
# most of a run and the random kills land in it.
LONGER = {**TINY, "train_frames": 24, "n_frames": 24, "width": 96, "height": 96}
LEFTOVER_SUFFIXES = (".partial", ".old", ".tmp")


def set_options(overrides: dict) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]


def micml_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "micml.cli", *map(str, args)]


def run(command: list[str], cwd: Path | None = None, timeout: float = 300) -> float:
    """Run to the end (it must succeed); return its wall time."""
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return time.monotonic() - started


def run_and_kill(command: list[str], delay: float, *, cwd: Path | None = None, sig=signal.SIGKILL) -> bool:
    """Start `command` in its own process group and send `sig` to the whole group (Snakemake's
    jobs included) after `delay` seconds; True when it had finished before that."""
    process = subprocess.Popen(command, cwd=cwd, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=delay)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=120)
        finally:
            if process.poll() is None:  # a SIGINT that was not obeyed: the test fails, nothing lingers
                os.killpg(process.pid, signal.SIGKILL)
        return False


def digest(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """{relative path: sha256} of every file under `root`."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name not in skip}


def leftovers(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(LEFTOVER_SUFFIXES)]


def kill_delays(seed: str, duration: float, count: int) -> list[float]:
    """Seeded random points spread over a clean run's length (reproducible per test)."""
    rng = random.Random(seed)
    return [rng.uniform(0.1, 1.0) * duration for _ in range(count)]


# --------------------------------------------------------------------------- micml synth / convert


def test_killed_synth_leaves_no_tree_or_a_whole_one_and_a_rerun_completes(tmp_path):
    settings = set_options(LONGER)
    reference = tmp_path / "reference"
    duration = run(micml_command("synth", "viso", reference, *settings))
    expected = digest(reference)
    out = tmp_path / "viso"
    for delay in kill_delays("synth", duration, 6):
        run_and_kill(micml_command("synth", "viso", out, "--overwrite", *settings), delay)
        assert not out.exists() or digest(out) == expected  # absent or whole, never half
    run(micml_command("synth", "viso", out, "--overwrite", *settings))
    assert digest(out) == expected and not leftovers(tmp_path)


@pytest.fixture(scope="module")
def viso_tree(tmp_path_factory) -> tuple[Path, list[str]]:
    """A synthetic VISO tree and the converter options that its manifest names."""
    root = tmp_path_factory.mktemp("native") / "viso"
    assert micml(["synth", "viso", str(root), *set_options(LONGER)]) == 0
    options = json.loads((root / "synthetic_manifest.json").read_text())["converter_options"]
    return root, [arg for key, value in options.items() for arg in ("-o", f"{key}={json.dumps(value)}")]


def test_killed_convert_leaves_the_old_dataset_or_the_new_one(tmp_path, viso_tree):
    src, options = viso_tree
    dst = tmp_path / "unified"
    duration = run(micml_command("convert", "viso", src, dst, *options))
    expected = digest(dst)
    for trial, delay in enumerate(kill_delays("convert", duration, 6)):
        if trial % 2 and dst.exists():
            shutil.rmtree(dst)  # half the kills convert afresh, half replace a whole dataset
        run_and_kill(micml_command("convert", "viso", src, dst, *options), delay)
        assert not dst.exists() or digest(dst) == expected
    (tmp_path / "unified.partial").mkdir(exist_ok=True)
    (tmp_path / "unified.partial" / "stale.jpg").write_bytes(b"from a killed run")
    run(micml_command("convert", "viso", src, dst, *options))
    assert digest(dst) == expected and not leftovers(tmp_path)  # the stale .partial was discarded


# Runs `micml` with its file-system writes numbered; write number KILL_AT kills the process just
# before it happens (SIGKILL: no cleanup code runs). With KILL_AT -1 it lists the writes instead.
KILL_AT_WRITE = """
import atexit, json, os, pathlib, shutil, signal, sys
kill_at, listing = int(sys.argv[1]), sys.argv[2]
writes = []
def numbered(function, name):
    def write(*args, **kwargs):
        if len(writes) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        writes.append([name, str(args[0])])
        return function(*args, **kwargs)
    return write
for owner, name in [(os, "replace"), (os, "rename"), (os, "unlink"), (os, "rmdir"), (os, "mkdir"),
                    (shutil, "copyfile"), (pathlib.Path, "write_text"), (pathlib.Path, "write_bytes")]:
    setattr(owner, name, numbered(getattr(owner, name), name))
if kill_at < 0:
    atexit.register(lambda: open(listing, "w").write(json.dumps(writes)))
from micml.cli import main
sys.exit(main(sys.argv[3:]))
"""
# Writes that are steps of the commit: each is a kill point. Of the others (folders made,
# frames copied, an old dataset deleted file by file) every 12th is.
STEP_WRITES = ("replace", "rename", "write_text", "write_bytes")


def convert_killed_at_write(kill_at: int, src: Path, dst: Path, options: list[str], listing: Path):
    command = [sys.executable, "-c", KILL_AT_WRITE, str(kill_at), str(listing), "convert", "viso", str(src),
               str(dst), *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_convert_killed_before_each_write_keeps_a_whole_dataset(tmp_path):
    """Deterministic kills of a conversion that replaces an existing dataset: before every
    rename and json write, and before every 12th folder creation, frame copy or deletion."""
    src = tmp_path / "viso"
    assert micml(["synth", "viso", str(src), *set_options(TINY)]) == 0
    manifest = json.loads((src / "synthetic_manifest.json").read_text())
    options = [arg for key, value in manifest["converter_options"].items()
               for arg in ("-o", f"{key}={json.dumps(value)}")]
    dst, listing, whole = tmp_path / "unified", tmp_path / "writes.json", tmp_path / "whole"
    assert convert_killed_at_write(-1, src, dst, options, listing).returncode == 0
    expected = digest(dst)
    shutil.copytree(dst, whole)
    assert convert_killed_at_write(-1, src, dst, options, listing).returncode == 0  # replacing a dataset
    writes = json.loads(listing.read_text())
    bulk = [i for i, (name, _) in enumerate(writes) if name not in STEP_WRITES]
    kill_points = sorted({i for i, (name, _) in enumerate(writes) if name in STEP_WRITES} | {*bulk[::12], bulk[-1]})
    for kill_at in kill_points:
        # the same start every time, so that write number `kill_at` is the listed one
        for leftover in (tmp_path / "unified.partial", tmp_path / "unified.old"):
            shutil.rmtree(leftover, ignore_errors=True)
        if not dst.exists():
            shutil.copytree(whole, dst)
        killed = convert_killed_at_write(kill_at, src, dst, options, listing)
        assert killed.returncode == -signal.SIGKILL, f"write {kill_at}: {killed.stderr[-2000:]}"
        assert not dst.exists() or digest(dst) == expected, f"killed before {writes[kill_at]}"
    assert convert_killed_at_write(-1, src, dst, options, listing).returncode == 0  # after the last kill
    assert digest(dst) == expected and not leftovers(tmp_path)


# --------------------------------------------------------------------------- the workflow


# Targets come before --configfile, which would read them as further config files.
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--cores", "2"]
DATA_TARGETS = ["results/synthetic/dataset_summary.csv", "results/data/synthetic_viso/meta.json"]
DATASETS = ("synthetic", "synthetic_viso")


def dataset_state(workdir: Path, dataset: str) -> dict:
    """A dataset's files by digest; meta.json holds absolute paths of the run folder, so only
    its counts are kept."""
    root = workdir / "results" / "data" / dataset
    state = digest(root, skip=("meta.json",))
    state["meta.json counts"] = json.loads((root / "meta.json").read_text())["counts"]
    return state


@pytest.fixture(scope="module")
def reference_data_stage(tmp_path_factory) -> tuple[float, dict]:
    """(duration, {dataset: state}) of an uninterrupted data stage of the tiny config."""
    workdir = tmp_path_factory.mktemp("reference")
    duration = run([*SNAKEMAKE, *DATA_TARGETS, "--configfile", str(TEST_CONFIG)], cwd=workdir)
    return duration, {name: dataset_state(workdir, name) for name in DATASETS}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_workflow_leaves_no_half_dataset_and_a_rerun_completes(tmp_path, reference_data_stage, sig):
    """SIGKILL: a crash or the out-of-memory killer; SIGINT: Ctrl-C, sent to the whole group."""
    duration, expected = reference_data_stage
    (delay,) = kill_delays(f"workflow-{sig.name}", duration, 1)
    command = [*SNAKEMAKE, *DATA_TARGETS, "--configfile", str(TEST_CONFIG)]
    run_and_kill(command, delay, cwd=tmp_path, sig=sig)
    for dataset in DATASETS:
        if (tmp_path / "results" / "data" / dataset / "meta.json").exists():
            assert dataset_state(tmp_path, dataset) == expected[dataset], f"{dataset}: half a dataset after {delay:.2f} s"
    if sig == signal.SIGKILL:  # the killed Snakemake could not release its lock (README: --unlock)
        run([*SNAKEMAKE, "--unlock", *DATA_TARGETS, "--configfile", str(TEST_CONFIG)], cwd=tmp_path)
    run(command, cwd=tmp_path)  # profiles/default re-runs the jobs marked incomplete
    for dataset in DATASETS:
        assert dataset_state(tmp_path, dataset) == expected[dataset], dataset
    assert not leftovers(tmp_path / "results") and not leftovers(tmp_path / "resources")


def test_a_dataset_that_fails_leaves_the_other_intact_with_keep_going(tmp_path, reference_data_stage):
    _, expected = reference_data_stage
    placed = tmp_path / "placed_viso"
    assert micml(["synth", "viso", str(placed), *set_options(TINY)]) == 0
    gt = placed / "mot" / "car" / "002" / "gt" / "gt.txt"
    lines = gt.read_text().splitlines()
    lines[2] = ",".join(["nan" if i == 2 else field for i, field in enumerate(lines[2].split(","))])
    gt.write_text("\n".join(lines) + "\n")  # a NaN coordinate on line 3
    options = json.loads((placed / "synthetic_manifest.json").read_text())["converter_options"]
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["datasets"] = {"synthetic": config["datasets"]["synthetic"],
                          "broken": {"format": "viso", "source": "path", "path": str(placed), "convert": options}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([*SNAKEMAKE, "--keep-going", "results/synthetic/dataset_summary.csv",
                             "results/broken/dataset_summary.csv", "--configfile", "config.yaml"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert f"{gt.resolve()}: line 3 has a NaN or infinite value" in result.stdout + result.stderr
    assert dataset_state(tmp_path, "synthetic") == expected["synthetic"]
    assert (tmp_path / "results" / "synthetic" / "dataset_summary.csv").is_file()
    assert not (tmp_path / "results" / "data" / "broken").exists()
    assert not (tmp_path / "results" / "broken").exists() and not leftovers(tmp_path / "results")
