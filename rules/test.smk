# Testing: tiled large-size inference over the test split (detections as COCO-results json and
# CSV), then their export as .mat files, one per frame, as the reference evaluator reads them.


rule test:
    input:
        model="results/{dataset}/{model}/model.pt",
        meta="results/data/{dataset}/meta.json",
    output:
        summary=f"results/{{dataset}}/{{model}}/predictions/{SPLIT}/predict.json",
        csv=f"results/{{dataset}}/{{model}}/predictions/{SPLIT}/detections.csv",
    params:
        testing=config["testing"],
    threads: 2
    resources:
        gpu=gpus_for_testing,
    benchmark:
        "benchmarks/test/{dataset}/{model}.tsv"
    log:
        "logs/test/{dataset}/{model}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/test.py"


# A CPU job: the GPU job above does not wait for thousands of small files to be written.
rule export_mat:
    input:
        csv=f"results/{{dataset}}/{{model}}/predictions/{SPLIT}/detections.csv",
        meta="results/data/{dataset}/meta.json",
    output:
        mat=directory(f"results/{{dataset}}/{{model}}/predictions/{SPLIT}/mat"),
    params:
        split=SPLIT,
    log:
        "logs/export_mat/{dataset}/{model}.log",
    conda:
        "../envs/torch.yaml"  # micml.inference imports torch
    script:
        "../workflow/scripts/export_mat.py"
