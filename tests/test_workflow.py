"""The Snakemake workflow: lint, plans, and a real run on the tiny CI config (.test/config.yaml)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import fnmatch
import itertools

import pandas as pd
import pytest
import yaml

from micml import catalog, layout
from micml.config import load_config

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
TEST_CONFIG = REPO / ".test" / "config.yaml"


def snakemake(*args, cwd, check=True):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def planned_jobs(output):
    """Job counts from the last job-stats table a dry run prints: {rule: count}."""
    lines = output.splitlines()
    start = max(i for i, line in enumerate(lines) if line.split() == ["job", "count"])
    counts = {}
    for line in lines[start + 2:]:
        name, count = line.split()
        if name == "total":
            return counts
        counts[name] = int(count)
    raise AssertionError("unterminated job table")


def test_lint_is_clean():
    result = snakemake("--lint", cwd=REPO)
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_snakefmt_check_is_clean():
    """The Snakefile and rules/ stay in snakefmt's layout (settings in pyproject.toml)."""
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "."], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, f"run `snakefmt .` to format:\n{result.stderr[-3000:]}"


def untracked_outputs(run_dir):
    """What a run in `run_dir` made that would show in `git status` had it run in the checkout.

    Matched against the repository's .gitignore rather than asked of git, which refuses to answer in
    a clone owned by another user (CI) and needs none of git's nesting rules for top-level names."""
    patterns = [line.strip().rstrip("/") for line in (REPO / ".gitignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    made = sorted(path.name for path in Path(run_dir).iterdir())
    return [name for name in made if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns)]


def test_dry_run_of_all_plans_every_stage(tmp_path):
    result = snakemake("-n", "--configfile", str(REPO / "config" / "config.yaml"), cwd=tmp_path)
    jobs = planned_jobs(result.stdout + result.stderr)
    datasets = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["datasets"]
    assert jobs["convert"] == len(datasets)
    assert jobs["dataset_summary"] == len(datasets)
    assert jobs["dcn_check"] == 1 and jobs["model_table"] == 1 and jobs["all"] == 1


def test_every_seed_is_a_run_of_its_own(tmp_path):
    default = REPO / "config" / "config.yaml"
    one = planned_jobs(snakemake("-n", "--forceall", "--configfile", str(default), cwd=tmp_path).stdout)
    two = snakemake("-n", "--forceall", "--configfile", str(default), "--config", "seeds=[0,1]", cwd=tmp_path)
    jobs = planned_jobs(two.stdout + two.stderr)
    for rule in ("train", "test", "export_mat", "evaluate", "qualitative", "track", "evaluate_tracking"):
        assert jobs[rule] == 2 * one[rule], rule
    assert "results/synthetic/micml/seed1/model.pt" in two.stdout


def test_dry_run_plans_tracking_for_every_benchmarked_run(tmp_path):
    config = load_config(REPO / "config" / "config.yaml")
    result = snakemake("-n", "--forceall", "--configfile", str(REPO / "config" / "config.yaml"), cwd=tmp_path)
    jobs = planned_jobs(result.stdout + result.stderr)
    benchmark = [name for name, entry in config["datasets"].items()
                 if entry.get("benchmark", True) and entry["format"] != catalog.UNANNOTATED_FORMAT]
    runs = [(dataset, model, seed) for dataset in benchmark for model in config["models"] for seed in config["seeds"]]
    assert jobs["track"] == jobs["evaluate_tracking"] == len(runs) > 0
    assert jobs["paper_tracking"] == 1 and jobs["track_trails"] == len(benchmark)
    for run in runs:
        assert str(layout.tracks_dir("results", *run, "test")) in result.stdout, run
        assert str(layout.tracking_metrics_path("results", *run, "csv")) in result.stdout, run


def test_gpu_resource_must_come_before_the_separator(tmp_path):
    """`--resources gpu=2 all` reads `all` as a resource; `-- all` (as README says) works."""
    result = snakemake("-n", "--configfile", str(TEST_CONFIG), "--resources", "gpu=2", "--", "all", cwd=tmp_path)
    assert "gpu=1" in result.stdout  # the DCN check takes one of the granted GPUs


def test_one_dataset_is_one_target(tmp_path):
    result = snakemake("results/data/synthetic_viso/meta.json", "-n", "--configfile", str(TEST_CONFIG), cwd=tmp_path)
    assert planned_jobs(result.stdout + result.stderr) == {"synthesize": 1, "convert": 1}


def test_bad_config_stops_with_the_schema_message(tmp_path):
    bad = yaml.safe_load(TEST_CONFIG.read_text())
    bad["synthetic"]["seed"] = "zero"
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(bad))
    result = snakemake("-n", "--configfile", str(config), cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "'zero' is not of type 'integer'" in result.stdout + result.stderr


def test_missing_manual_download_names_file_and_place(tmp_path):
    config = tmp_path / "real.yaml"
    config.write_text(yaml.safe_dump({"datasets": {"rscar": {"format": "rscar", "source": "archive"}}}))
    result = snakemake("results/data/rscar/meta.json", "--cores", "1", "--configfile", str(config),
                       cwd=tmp_path, check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "resources/raw" in message and "pan.baidu.com" in message


@pytest.mark.workflow
def test_tiny_workflow_runs_end_to_end(tmp_path):
    snakemake("--cores", "2", "--configfile", str(TEST_CONFIG), cwd=tmp_path)
    datasets = yaml.safe_load(TEST_CONFIG.read_text())["datasets"]
    for name, entry in datasets.items():
        meta = json.loads((tmp_path / "results" / "data" / name / "meta.json").read_text())
        summary = pd.read_csv(tmp_path / "results" / name / "dataset_summary.csv")
        assert summary["frames"].sum() > 0, name
        assert (tmp_path / "results" / name / "dataset_summary.png").stat().st_size > 10_000
        if entry["format"] != "video":
            assert meta["annotated"] and summary["objects"].sum() > 0, name
    check = json.loads((tmp_path / "results" / "ops" / "dcn_check.json").read_text())
    assert check["passed"] is True
    models = pd.read_csv(tmp_path / "results" / "tables" / "models.csv")
    assert set(models["variant"]) >= {"centernet", "dsfnet", "micml"}
    config = yaml.safe_load(TEST_CONFIG.read_text())
    benchmark = [name for name, entry in datasets.items() if entry.get("benchmark", True) and entry["format"] != "video"]
    for dataset in benchmark:
        meta = json.loads((tmp_path / "results" / "data" / dataset / "meta.json").read_text())
        for model, seed in itertools.product(config["models"], load_config(TEST_CONFIG)["seeds"]):
            run = layout.run_dir(tmp_path / "results", dataset, model, seed)
            assert (run / "train" / "last.pt").is_file() and (run / "model.pt").is_file()
            steps = [row for row in pd.read_csv(run / "train" / "log.csv").itertuples() if row.kind == "train"]
            budget = {**config["training"], **config["training"]["per_model"][model]}
            assert len(steps) == budget["epochs"] * budget["iters_per_epoch"], (dataset, model)
            predicted = json.loads((run / "predictions" / "test" / "predict.json").read_text())
            mats = list((run / "predictions" / "test" / "mat").rglob("*.mat"))
            assert predicted["frames"] == len(mats) > 0  # one .mat per test frame, empty ones included
            summary = json.loads((run / "metrics" / "summary.json").read_text())
            assert summary["protocols"] == meta["protocols"]
            assert (run / "plots" / "qualitative.png").is_file()
    paper = pd.read_csv(tmp_path / "results" / "tables" / "paper_main.csv")
    assert set(config["models"]) <= set(paper.astype(str).stack())
    tracking = pd.read_csv(layout.paper_tracking_table(tmp_path / "results", "csv"), keep_default_na=False)
    assert set(tracking["model"]) == set(config["models"]) and (tracking["seeds"] >= 1).all()
    for dataset in set(tracking["dataset"]):
        assert layout.track_trails_figure(tmp_path / "results", dataset).stat().st_size > 1_000
        seed = load_config(TEST_CONFIG)["seeds"][0]
        tracks_dir = layout.tracks_dir(tmp_path / "results", dataset, config["models"][0], seed, "test")
        assert sorted(tracks_dir.glob("*.txt")), tracks_dir
    report = snakemake("--report", "report.html", "--configfile", str(TEST_CONFIG), cwd=tmp_path)
    assert (tmp_path / "report.html").stat().st_size > 100_000, report.stderr
    # Everything the run and its report wrote is ignored by git: run in the checkout, it leaves
    # `git status` clean (rule timings go to logs/benchmarks/, not the tracked benchmarks/).
    assert untracked_outputs(tmp_path) == [], "add these to .gitignore or move them under results/ or logs/"
    # Nothing is left to do: a second run plans no job.
    again = snakemake("-n", "--configfile", str(TEST_CONFIG), cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
    # A seed more trains, tests and scores only the new runs; the finished ones are reused.
    more = snakemake("-n", "--configfile", str(TEST_CONFIG), "--config", "seeds=[0,1]", cwd=tmp_path)
    jobs = planned_jobs(more.stdout + more.stderr)
    new_runs = len(benchmark) * len(config["models"])
    assert jobs["train"] == jobs["test"] == jobs["evaluate"] == new_runs, jobs
    assert "seed0/model.pt" not in "".join(line for line in more.stdout.splitlines() if "output:" in line)
