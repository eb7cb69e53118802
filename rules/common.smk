# Helpers shared by the stage files. No rules here.
import os
import re
from pathlib import Path

from micml import catalog, layout, weights

# Environment of every job. Jobs import the `micml` package from this checkout, also inside
# `--sdm conda` envs, which hold only its dependencies. OpenMP threads sleep instead of
# spinning while they wait: two jobs sharing few cores otherwise slow each other ~2-10x. The
# train and test jobs, which have their `threads` to themselves, spin briefly instead
# (micml.openmp.own_cores: 1.4-1.6x faster). None of these is required from the user.
os.environ.update(
    PYTHONPATH=os.pathsep.join([workflow.basedir, *os.environ.copy().get("PYTHONPATH", "").split(os.pathsep)]).rstrip(
        os.pathsep
    ),
    OMP_WAIT_POLICY=os.environ.copy().get("OMP_WAIT_POLICY", "PASSIVE"),
)

RAW = config["paths"]["raw"]
RESULTS = "results"
DATASETS = config["datasets"]
SYNTHETIC_DATASETS = [name for name, entry in DATASETS.items() if entry["source"] == "synthetic"]
PLACED_DATASETS = [name for name, entry in DATASETS.items() if entry["source"] != "synthetic"]
MODELS = config["models"]
SEEDS = config["seeds"]
SPLIT = config["testing"]["split"]
PROTOCOLS = catalog.PROTOCOLS  # also written into meta.json by the converters
# Datasets with annotations on which the models are trained, tested and evaluated.
BENCHMARK_DATASETS = [
    name
    for name, entry in DATASETS.items()
    if entry.get("benchmark", True) and entry["format"] != catalog.UNANNOTATED_FORMAT
]
MODEL_VARIANTS = list(catalog.VARIANTS)


def alternatives(names):
    """A wildcard constraint matching exactly these names (and nothing when empty)."""
    return "|".join(re.escape(name) for name in names) or "(?!x)x"


wildcard_constraints:
    dataset=alternatives(DATASETS),
    model=alternatives(MODEL_VARIANTS),
    seed=r"\d+",


def run_pattern(path_of, *args, file=None):
    """A path of micml.layout for one run (and `file` in it), with the wildcards {dataset},
    {model}, {seed} in place of the names."""
    folder = path_of(RESULTS, "{dataset}", "{model}", "{seed}", *args)
    return str(folder / file if file else folder)


def results_root(wildcards, input):
    """The folder the tables and figures find runs in through micml.layout (the rule declares each
    file they read there as an input)."""
    return RESULTS


def training_overrides(wildcards):
    """Command-line training keys, then the run's seed (both win over per_model)."""
    return {**TRAINING_OVERRIDES, "seed": int(wildcards.seed)}


def backbone_weights_input(wildcards):
    """The file a run's backbone starts from (training.pretrained): the ImageNet weights made by
    rule backbone_weights for `imagenet`, the named file for a path, nothing for null."""
    choice = weights.pretrained_choice(config["training"], wildcards.model, TRAINING_OVERRIDES)
    if choice is None:
        return []
    return weights.IMAGENET_WEIGHTS if choice == weights.IMAGENET else choice


def dataset_entry(wildcards):
    return DATASETS[wildcards.dataset]


def native_tree(wildcards):
    """Where the native tree of a dataset lives (or the user's own tree/video file)."""
    entry = DATASETS[wildcards.dataset]
    if entry["source"] == "path":
        return entry["path"]
    return f"{RAW}/{wildcards.dataset}"


def sources_catalogue():
    """config/datasets.yaml, looked up in the working directory first, then beside the Snakefile."""
    path = Path(config["paths"]["sources"])
    if path.is_absolute() or path.exists():
        return str(path)
    return str(Path(workflow.basedir) / path)


def gpus_available():
    """GPUs granted to this run with `--resources gpu=N` (0 when not given)."""
    return int(workflow.global_resources.get("gpu").value or 0)


def gpus_for_check(wildcards):
    """The DCN check runs on the device training will use: a GPU when the run has one."""
    return min(1, gpus_available())


def train_dir(wildcards):
    """Resumable training state of one run (outside the declared outputs)."""
    return str(layout.train_dir(RESULTS, wildcards.dataset, wildcards.model, wildcards.seed))


def gpus_for_training(wildcards):
    """Every GPU the run was granted: training runs under torchrun with one process per GPU."""
    return gpus_available()


def gpus_for_testing(wildcards):
    return min(1, gpus_available())


def dataset_protocols(wildcards):
    return PROTOCOLS[DATASETS[wildcards.dataset]["format"]]


def every_run(path_of, *args, file=None, **fixed):
    """`file` in the folder `path_of` (micml.layout) of every model x seed, and of every benchmark
    dataset unless `dataset` is fixed (given, or left as the wildcard {dataset})."""
    names = {"dataset": BENCHMARK_DATASETS, "model": MODELS, "seed": SEEDS, **fixed}
    return expand(run_pattern(path_of, *args, file=file), **names)


def paper_tracking_inputs(wildcards):
    """Tracking metrics of every benchmark dataset x model x seed."""
    return expand(
        run_pattern(layout.tracking_metrics_path, "csv"), dataset=BENCHMARK_DATASETS, model=MODELS, seed=SEEDS
    )


def track_trails_inputs(wildcards):
    """Tracks of every model's first-seed run on the dataset (one panel each)."""
    return expand(run_pattern(layout.tracks_dir, SPLIT), dataset=wildcards.dataset, model=MODELS, seed=SEEDS[0])


def all_targets():
    targets = [
        "results/ops/dcn_check.json",
        "results/tables/models.csv",
    ]
    targets += expand("results/{dataset}/dataset_summary.{ext}", dataset=DATASETS, ext=["csv", "md", "png"])
    targets += expand(
        run_pattern(layout.run_plots_dir, file="qualitative.png"), dataset=BENCHMARK_DATASETS, model=MODELS, seed=SEEDS
    )
    targets += expand("results/{dataset}/plots/pr_curves.png", dataset=BENCHMARK_DATASETS)
    targets.append("results/tables/paper_main.html")
    targets += [str(layout.paper_tracking_table(RESULTS, ext)) for ext in ("csv", "md")]
    targets += [str(layout.track_trails_figure(RESULTS, dataset)) for dataset in BENCHMARK_DATASETS]
    return targets
