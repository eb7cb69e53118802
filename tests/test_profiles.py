"""Profiles: profiles/slurm through snakemake-executor-plugin-slurm, profiles/default for one
machine (loaded by Snakemake on its own, with a GPU count taken from the visible GPUs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import yte

REPO = Path(__file__).resolve().parent.parent
SLURM = REPO / "profiles" / "slurm"
DEFAULT = REPO / "profiles" / "default"
TEST_CONFIG = REPO / ".test" / "config.yaml"
GPU_RULES = {"train", "test", "dcn_check"}


def dry_run(cwd: Path, *args: str, env: dict | None = None) -> str:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--configfile",
               str(TEST_CONFIG), "-n", *args]
    # what this machine's environment may hold must not decide which GPUs the profile sees
    clean = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SNAKEMAKE_PROFILE")}
    result = subprocess.run(command, cwd=cwd, env={**clean, **(env or {})}, capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"^rule ", output, flags=re.MULTILINE)[1:]:
        rule = block.split(":", 1)[0]
        found = re.search(r"^    resources: (.*)$", block, flags=re.MULTILINE)
        pairs = found.group(1).split(", ") if found else []
        jobs.append((rule, dict(pair.split("=", 1) for pair in pairs)))
    return jobs


def gpus_by_rule(jobs) -> dict[str, set]:
    table: dict[str, set] = {}
    for rule, resources in jobs:
        table.setdefault(rule, set()).add(resources.get("gpu"))
    return table


@pytest.fixture
def fake_gpus(tmp_path):
    """A folder holding an `nvidia-smi` that lists two GPUs; put it first on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    tool = folder / "nvidia-smi"
    tool.write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 2\n"
                    "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\necho 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'\n")
    tool.chmod(0o755)
    return folder


# --------------------------------------------------------------------------- SLURM


class PlannedJob:
    """What the plugin reads from a Snakemake job, rebuilt from a dry run's listing."""

    class Resources(dict):
        def __getattr__(self, name):
            return self[name]

    def __init__(self, rule: str, resources: dict[str, str], threads: int):
        self.name, self.threads = rule, threads
        self.resources = self.Resources({key: int(value) if value.isdigit() else value
                                         for key, value in resources.items()})


def sbatch_call(job: PlannedJob) -> str:
    """The sbatch command line snakemake-executor-plugin-slurm builds for `job`."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    params = {"run_uuid": "run", "slurm_logfile": "log", "comment_str": job.name, "account": "",
              "partition": "", "workdir": ""}
    return get_submit_command(job, params) + set_gres_string(job)


def test_slurm_dry_run_requests_a_gpu_for_each_gpu_job_and_the_profile_resources(tmp_path):
    output = dry_run(tmp_path, "--profile", str(SLURM))
    assert re.search(r"Using profiles? .*profiles/slurm", output)
    jobs = planned_jobs(output)
    profile = yaml.safe_load((SLURM / "config.yaml").read_text())
    assert {rule for rule, _ in jobs} - {"all"} <= set(profile["set-resources"]), "a rule without resources"
    for rule, resources in jobs:
        if rule == "all":
            continue
        wanted = profile["set-resources"][rule]
        assert resources.get("gpu") == (str(wanted["gpu"]) if rule in GPU_RULES else None), rule
        assert int(resources["mem_mb"]) == wanted["mem_mb"] and int(resources["runtime"]) == wanted["runtime"], rule
    config = yaml.safe_load(TEST_CONFIG.read_text())
    benchmarks = [name for name, entry in config["datasets"].items()
                  if entry.get("benchmark", True) and entry["format"] != "video"]
    assert len([rule for rule, _ in jobs if rule == "train"]) == len(benchmarks) * len(config["models"])

    threads = profile["set-threads"]
    train = next(PlannedJob(rule, res, threads[rule]) for rule, res in jobs if rule == "train")
    convert = next(PlannedJob(rule, res, threads[rule]) for rule, res in jobs if rule == "convert")
    train_call, convert_call = sbatch_call(train), sbatch_call(convert)
    assert "--gpus=1" in train_call and "--gpus" not in convert_call
    assert "--mem 32000" in train_call and "-t 2880" in train_call and "--cpus-per-task=8" in train_call
    assert "--mem 8000" in convert_call and "--cpus-per-task=2" in convert_call


# --------------------------------------------------------------------------- one machine


def processed_default_profile(monkeypatch, argv: list[str], path_dirs: list[Path], **env) -> dict:
    """profiles/default/config.yaml as Snakemake's profile parser (yte) turns it into options."""
    monkeypatch.setattr(sys, "argv", ["snakemake", *argv])
    monkeypatch.setenv("PATH", os.pathsep.join(map(str, path_dirs)))
    monkeypatch.delenv("SNAKEMAKE_PROFILE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with open(DEFAULT / "config.yaml") as handle:
        return yte.process_yaml(handle, require_use_yte=True)


def test_default_profile_counts_visible_gpus(monkeypatch, fake_gpus, tmp_path):
    options = processed_default_profile(monkeypatch, ["--cores", "2"], [fake_gpus])
    assert options["cores"] == "all" and options["resources"] == {"gpu": 2}
    assert options["rerun-incomplete"] is True and options["keep-going"] is True
    one = processed_default_profile(monkeypatch, [], [fake_gpus], CUDA_VISIBLE_DEVICES="1")
    assert one["resources"] == {"gpu": 1}
    hidden = processed_default_profile(monkeypatch, [], [fake_gpus], CUDA_VISIBLE_DEVICES="")
    assert "resources" not in hidden and hidden["cores"] == "all"
    no_tool = processed_default_profile(monkeypatch, [], [tmp_path])
    assert "resources" not in no_tool


def test_default_profile_leaves_the_machine_to_a_cluster_profile(monkeypatch, fake_gpus):
    """Snakemake loads profiles/default next to --profile profiles/slurm, and its keys win:
    it must then not cap the cluster jobs' threads by local cores nor set a global gpu=0."""
    for argv, env in ((["--profile", "profiles/slurm"], {}), (["--profile=slurm"], {}),
                      ([], {"SNAKEMAKE_PROFILE": "slurm"})):
        options = processed_default_profile(monkeypatch, argv, [fake_gpus], **env)
        assert "cores" not in options and "resources" not in options, argv or env
        assert options["rerun-incomplete"] is True


def test_default_profile_gives_training_every_visible_gpu(tmp_path, fake_gpus):
    path = os.pathsep.join([str(fake_gpus), os.environ.get("PATH", "")])
    jobs = planned_jobs(dry_run(tmp_path, env={"PATH": path}))
    gpus = gpus_by_rule(jobs)
    assert gpus["train"] == {"2"} and gpus["test"] == {"1"} and gpus["dcn_check"] == {"1"}
    assert gpus["convert"] <= {None, "0"} and gpus["evaluate"] <= {None, "0"}


def test_default_profile_without_gpus_runs_everything_on_the_cpu(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "nvidia-smi").write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")  # a driver, no GPU
    (folder / "nvidia-smi").chmod(0o755)
    jobs = planned_jobs(dry_run(tmp_path, env={"PATH": os.pathsep.join([str(folder), os.environ.get("PATH", "")])}))
    assert set().union(*gpus_by_rule(jobs).values()) <= {None, "0"}  # no job holds a GPU


def test_torchrun_processes_share_the_cpus_of_the_job(monkeypatch, tmp_path):
    """A job granted 8 CPUs (set-threads) and 4 GPUs runs 4 processes of 2 threads each; with one
    GPU or none it trains in its own process with all 8."""
    from micml.engine import launch

    launched, in_process = [], []
    monkeypatch.setattr(launch, "_run_logged", lambda command, log_path: launched.append(command))
    monkeypatch.setattr(launch, "train", lambda config, *args, **kwargs: in_process.append(config) or tmp_path / "x")
    for gpus, expected in ((4, 2), (16, 1)):
        with pytest.raises(RuntimeError, match="without a best checkpoint"):  # nothing was trained
            launch.run_training({"epochs": 1}, "dsfnet", tmp_path / "data", tmp_path / "run", tmp_path / "model.pt",
                                nproc=gpus, threads=8)
        assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["threads"] == expected, gpus
        assert "--nproc-per-node" in launched[-1]
    for gpus in (0, 1):
        with pytest.raises(FileNotFoundError):  # the stand-in trained nothing to copy
            launch.run_training({"epochs": 1}, "dsfnet", tmp_path / "data", tmp_path / "run", tmp_path / "model.pt",
                                nproc=gpus, threads=8)
        assert in_process[-1]["threads"] == 8
    assert len(launched) == 2