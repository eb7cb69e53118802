# Testing: tiled large-size inference over the test split (detections as COCO-results json and
# CSV), then their export as .mat files, one per frame, as the reference evaluator reads them.


rule test:
    input:
        model=run_pattern(layout.model_path),
        meta="results/data/{dataset}/meta.json",
    output:
        summary=run_pattern(layout.predictions_dir, SPLIT, file="predict.json"),
        csv=run_pattern(layout.predictions_dir, SPLIT, file="detections.csv"),
    params:
        testing=config["testing"],
    threads: 2
    resources:
        gpu=gpus_for_testing,
    benchmark:
        "benchmarks/test/{dataset}/{model}/seed{seed}.tsv"
    log:
        "logs/test/{dataset}/{model}/seed{seed}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/test.py"


# A CPU job: the GPU job above does not wait for thousands of small files to be written.
rule export_mat:
    input:
        csv=run_pattern(layout.predictions_dir, SPLIT, file="detections.csv"),
        meta="results/data/{dataset}/meta.json",
    output:
        mat=directory(run_pattern(layout.predictions_dir, SPLIT, file="mat")),
    params:
        split=SPLIT,
    log:
        "logs/export_mat/{dataset}/{model}/seed{seed}.log",
    conda:
        "../envs/torch.yaml"  # micml.inference imports torch
    script:
        "../workflow/scripts/export_mat.py"
