"""What every figure shares: the PNG writer, a colour per model, a dash pattern per seed, and
reading one CSV per run while naming the runs whose file is missing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure

from micml.catalog import VARIANTS
from micml.io import atomic_write

FIGURE_DPI = 100
SEED_LINESTYLES = ("-", "--", ":", "-.")  # one colour per model, one dash pattern per seed
# Per model: one path (one run) or {seed: path}.
RunPaths = Mapping[str, "str | os.PathLike | Mapping[int, str | os.PathLike]"]


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Write the figure as PNG atomically (a killed job never leaves a half-written image)."""
    path = Path(path)
    atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=FIGURE_DPI))
    return path


def with_missing(title: str, missing: Sequence[str], what: str) -> str:
    """The title, plus a second line naming the models left out because their input is missing."""
    return f"{title}\nnot available ({what}): {', '.join(missing)}" if missing else title


def model_colours(models: Iterable[str]) -> dict[str, tuple]:
    """A colour per model: the registry's variants always get the same one, so a model looks the
    same in every figure whatever else is plotted; other names take the remaining colours in order."""
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    others = [model for model in dict.fromkeys(models) if model not in VARIANTS]
    index = {**{variant: i for i, variant in enumerate(VARIANTS)},
             **{model: len(VARIANTS) + i for i, model in enumerate(others)}}
    return {model: palette(index[model] % palette.N) for model in models}


def per_seed(paths: RunPaths) -> dict[str, dict[int | None, Path | None]]:
    """{model: {seed: path}}; a model given a single path is one run without a seed (seed None)."""
    return {model: ({seed: Path(path) if path is not None else None for seed, path in runs.items()}
                    if isinstance(runs, Mapping) else {None: Path(runs) if runs is not None else None})
            for model, runs in paths.items()}


def read_runs(paths: RunPaths) -> tuple[dict[str, dict[int | None, pd.DataFrame]], list[str]]:
    """The CSV of every run that exists, per model and seed, and the missing ones by name:
    'model' when none of its seeds exists, 'model (seed 1, 2)' when some do not."""
    tables: dict[str, dict[int | None, pd.DataFrame]] = {}
    missing = []
    for model, runs in per_seed(paths).items():
        found = {seed: pd.read_csv(path, dtype={"video": str}) for seed, path in runs.items()
                 if path is not None and path.is_file()}
        absent = [seed for seed in runs if seed not in found]
        if found:
            tables[model] = found
        if absent:
            missing.append(model if not found else f"{model} (seed {', '.join(map(str, absent))})")
    return tables, missing


def run_label(model: str, seed: int | None) -> str:
    return model if seed is None else f"{model} seed {seed}"


def seed_style(index: int) -> str:
    return SEED_LINESTYLES[index % len(SEED_LINESTYLES)]
