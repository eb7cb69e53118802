from pathlib import Path

from micml.evaluation.evaluate import evaluate_predictions
from micml.workflow import logged

with logged(snakemake.log[0]):
    evaluate_predictions(Path(snakemake.input.meta).parent, Path(snakemake.input.predictions).parent,
                         snakemake.params.split, Path(snakemake.output.summary).parent,
                         protocols=snakemake.params.protocols)
