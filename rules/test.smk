# Testing: tiled large-size inference over the test split; detections as .mat files (one per
# frame, readable by the reference evaluator), COCO-results json and CSV.


rule test:
    input:
        model="results/{dataset}/{model}/model.pt",
        meta="results/data/{dataset}/meta.json",
    output:
        summary=f"results/{{dataset}}/{{model}}/predictions/{SPLIT}/predict.json",
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
