# Training: one job per dataset x model x seed. Resumable state lives in .../train/ (not a
# declared output, so Snakemake never deletes it); the declared output is the best checkpoint.


rule train:
    input:
        meta="results/data/{dataset}/meta.json",
        weights=backbone_weights_input,
    output:
        model=run_pattern(layout.model_path),
    params:
        training=config["training"],
        overrides=training_overrides,
        out_dir=train_dir,
    threads: 2
    resources:
        gpu=gpus_for_training,
    benchmark:
        "benchmarks/train/{dataset}/{model}/seed{seed}.tsv"
    log:
        "logs/train/{dataset}/{model}/seed{seed}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/train.py"
