from micml.evaluation.plots import plot_dataset_figures
from micml.workflow import logged

with logged(snakemake.log[0]):
    plot_dataset_figures(snakemake.params.results, snakemake.wildcards.dataset, snakemake.params.models,
                         snakemake.params.seeds, pr_png=snakemake.output.pr, per_video_png=snakemake.output.per_video,
                         training_png=snakemake.output.training)
