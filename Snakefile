# micml: reproducible benchmark of MICML and its baselines on small moving objects.
#
# Results path scheme (spelled by micml/layout.py; logs/ and logs/benchmarks/ mirror it):
#   resources/raw/{dataset}/                   native tree (downloaded, placed, or synthetic)
#   resources/raw/{dataset}.manifest.json      what was verified or generated
#   results/data/{dataset}/                    unified frames, annotations/{split}.json, meta.json
#   results/{dataset}/dataset_summary.{csv,md,png}
#   results/{dataset}/{model}/seed{seed}/      one training run and what is made from it:
#       train/                                 resumable state (last.pt, log.csv, provenance.json, run.json)
#       model.pt                               best checkpoint (chosen on val)
#       predictions/{split}/                   mat/{video}/{frame:06d}.mat, detections.json, .csv, predict.json
#       metrics/                               one table per protocol (csv, md, html), pr_curve.csv, summary.json
#       plots/                                 qualitative.png (TP/FP/FN)
#       tracks/{split}/{video}.txt             MOTChallenge tracks; metrics/tracking.{csv,md} scores them
#   results/{dataset}/plots/                   pr_curves.png, per_video_f1.png, training_curves.png (models x seeds),
#                                              track_trails.png
#   results/ops/dcn_check.{json,md}            deformable-convolution check on this machine
#   results/tables/                            models.*, paper_{main,paired,per_video_*,ablation,efficiency,tracking}.*
import sys

from snakemake.utils import min_version

min_version("9.0")
sys.path.insert(0, workflow.basedir)  # micml from this checkout, also where only Snakemake is installed
from micml.config import command_line_training, validate_workflow_config


configfile: "config/config.yaml"


# config/schema.yaml, defaults filled in; an error names the file (or --config) that set the key.
config.update(validate_workflow_config(config, workflow.configfiles, workflow.config_settings.config))
TRAINING_OVERRIDES = command_line_training(workflow.config_settings.config)


include: "rules/common.smk"
include: "rules/datasets.smk"
include: "rules/ops.smk"
include: "rules/weights.smk"
include: "rules/train.smk"
include: "rules/test.smk"
include: "rules/evaluate.smk"
include: "rules/track.smk"


report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        all_targets(),
