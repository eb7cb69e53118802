from pathlib import Path

from micml.evaluation.plots import plot_per_video_f1, plot_pr_curves, plot_training_curves
from micml.workflow import logged

models = snakemake.params.models
dataset = snakemake.wildcards.dataset
metrics = {model: Path(summary).parent for model, summary in zip(models, snakemake.input.f1)}
with logged(snakemake.log[0]):
    plot_pr_curves(dataset, {m: metrics[m] / "pr_curve.csv" for m in models}, snakemake.output.pr)
    plot_per_video_f1(dataset, {m: metrics[m] / "dsfnet_f1.csv" for m in models}, snakemake.output.per_video)
    plot_training_curves({m: Path(checkpoint).parent / "train" / "log.csv"
                          for m, checkpoint in zip(models, snakemake.input.models)},
                         snakemake.output.training, title=f"{dataset}: training")
