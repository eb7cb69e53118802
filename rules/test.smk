# Testing: tiled large-size inference over the test split (detections as COCO-results json and
# CSV), then their export as .mat files, one per frame, as the reference evaluator reads them.


rule test:
    input:
        model=run_pattern(layout.model_path),
        meta="results/data/{dataset}/meta.json",
    output:
        summary=run_pattern(layout.predictions_dir, SPLIT, file="predict.json"),
        csv=run_pattern(layout.predictions_dir, SPLIT, file="detections.csv"),
    log:
        "logs/test/{dataset}/{model}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/test/{dataset}/{model}/seed{seed}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpus_for_testing,
    params:
        testing=config["testing"],
    script:
        "../workflow/scripts/test.py"


# A CPU job: the GPU job above does not wait for thousands of small files to be written.
rule export_mat:
    input:
        csv=run_pattern(layout.predictions_dir, SPLIT, file="detections.csv"),
        meta="results/data/{dataset}/meta.json",
    output:
        mat=directory(run_pattern(layout.predictions_dir, SPLIT, file="mat")),
    log:
        "logs/export_mat/{dataset}/{model}/seed{seed}.log",
    conda:
        "../envs/evaluate.yaml"  # micml.detections needs no torch
    params:
        split=SPLIT,
    script:
        "../workflow/scripts/export_mat.py"
