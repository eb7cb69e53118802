# Training: one job per dataset x model x seed. Resumable state lives in .../train/ (not a
# declared output, so Snakemake never deletes it); the declared outputs are the best checkpoint
# and the training log the plots read, flagged update: a resumed run keeps its rows.


rule train:
    input:
        meta="results/data/{dataset}/meta.json",
        weights=backbone_weights_input,
    output:
        model=run_pattern(layout.model_path),
        log=update(run_pattern(layout.training_log)),
    log:
        "logs/train/{dataset}/{model}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/train/{dataset}/{model}/seed{seed}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpus_for_training,
    params:
        training=config["training"],
        overrides=training_overrides,
        out_dir=train_dir,
    script:
        "../workflow/scripts/train.py"
