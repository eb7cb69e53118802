"""Where the workflow's results live: the one place that spells a result path.

```
results/data/<dataset>/                                  unified dataset (frames, annotations, meta.json)
results/<dataset>/<model>/seed<seed>/                    one training run and everything made from it:
    train/                                               resumable state: last.pt, best.pt, log.csv, run.json
    model.pt                                             best checkpoint (by val F1)
    predictions/<split>/                                 predict.json, detections.{csv,json}, mat/
    metrics/                                             summary.json, one table per protocol, tracking.{csv,md}
    plots/                                               qualitative.png
    tracks/<split>/<video>.txt                           MOTChallenge tracks of the split's detections
results/<dataset>/plots/                                 per-dataset figures over models and seeds (track_trails.png)
results/tables/                                          the paper tables (paper_tracking.{csv,md})
```

Every function takes the results folder and the names; given Snakemake wildcards as text
(`run_dir("results", "{dataset}", "{model}", "{seed}")`) it returns the rule's path pattern, so
the rules and the tables that read their outputs cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

SEED_PREFIX = "seed"
MODEL_FILE = "model.pt"
TRAINING_LOG_FILE = "log.csv"
TRACKING_METRICS = "tracking"  # metrics/tracking.{csv,md}: per video and COMBINED
TRACK_TRAILS_FIGURE = "track_trails.png"
PAPER_TRACKING = "paper_tracking"


def run_dir(results: Path | str, dataset: str, model: str, seed: int | str) -> Path:
    """One training run (a model trained with one seed on one dataset) and what was made from it."""
    return Path(results) / dataset / model / f"{SEED_PREFIX}{seed}"


def train_dir(results: Path | str, dataset: str, model: str, seed: int | str) -> Path:
    return run_dir(results, dataset, model, seed) / "train"


def training_log(results: Path | str, dataset: str, model: str, seed: int | str) -> Path:
    """The run's training log (one row per logged iteration and per validation), kept with its
    resumable state and declared as an output of the train rule, which the training curves read."""
    return train_dir(results, dataset, model, seed) / TRAINING_LOG_FILE


def model_path(results: Path | str, dataset: str, model: str, seed: int | str) -> Path:
    return run_dir(results, dataset, model, seed) / MODEL_FILE


def predictions_dir(results: Path | str, dataset: str, model: str, seed: int | str, split: str) -> Path:
    return run_dir(results, dataset, model, seed) / "predictions" / split


def metrics_dir(results: Path | str, dataset: str, model: str, seed: int | str) -> Path:
    return run_dir(results, dataset, model, seed) / "metrics"


def run_plots_dir(results: Path | str, dataset: str, model: str, seed: int | str) -> Path:
    return run_dir(results, dataset, model, seed) / "plots"


def dataset_plots_dir(results: Path | str, dataset: str) -> Path:
    return Path(results) / dataset / "plots"


def tables_dir(results: Path | str) -> Path:
    return Path(results) / "tables"


def tracks_dir(results: Path | str, dataset: str, model: str, seed: int | str, split: str) -> Path:
    """MOTChallenge files of one run's split, `<video>.txt` each."""
    return run_dir(results, dataset, model, seed) / "tracks" / split


def tracking_metrics_path(results: Path | str, dataset: str, model: str, seed: int | str, ext: str) -> Path:
    return metrics_dir(results, dataset, model, seed) / f"{TRACKING_METRICS}.{ext}"


def track_trails_figure(results: Path | str, dataset: str) -> Path:
    return dataset_plots_dir(results, dataset) / TRACK_TRAILS_FIGURE


def paper_tracking_table(results: Path | str, ext: str) -> Path:
    return tables_dir(results) / f"{PAPER_TRACKING}.{ext}"
