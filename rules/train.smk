# Training: one job per dataset x model. Resumable state lives in .../train/ (not a declared
# output, so Snakemake never deletes it); the declared output is the best checkpoint.


rule train:
    input:
        meta="results/data/{dataset}/meta.json",
    output:
        model="results/{dataset}/{model}/model.pt",
    params:
        training=config["training"],
        overrides=TRAINING_OVERRIDES,
        out_dir=train_dir,
    threads: 2
    resources:
        gpu=gpus_for_training,
    benchmark:
        "benchmarks/train/{dataset}/{model}.tsv"
    log:
        "logs/train/{dataset}/{model}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/train.py"
