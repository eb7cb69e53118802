# Evaluation: each dataset's own protocols on the .mat files of rule export_mat, per-dataset
# comparison plots, and the paper tables across datasets and models. Every file a script reads
# is a declared input; the paths come from micml.layout, as in the scripts.


rule evaluate:
    input:
        predictions=run_pattern(layout.predictions_dir, SPLIT, file="predict.json"),
        mat=run_pattern(layout.predictions_dir, SPLIT, file="mat"),
        meta="results/data/{dataset}/meta.json",
    output:
        summary=run_pattern(layout.metrics_dir, file="summary.json"),
        curves=run_pattern(layout.metrics_dir, file="pr_curve.csv"),
        per_video=run_pattern(layout.metrics_dir, file="dsfnet_f1.csv"),
        f1=report(
            run_pattern(layout.metrics_dir, file="dsfnet_f1.html"),
            caption="../report/metrics_dsfnet_f1.rst",
            category="Metrics",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}", "seed": "{seed}", "table": "P/R/F1 (IoU)"},
        ),
    log:
        "logs/evaluate/{dataset}/{model}/seed{seed}.log",
    conda:
        "../envs/evaluate.yaml"
    params:
        split=SPLIT,
        protocols=dataset_protocols,
    script:
        "../workflow/scripts/evaluate.py"


rule qualitative:
    input:
        predictions=run_pattern(layout.predictions_dir, SPLIT, file="predict.json"),
        mat=run_pattern(layout.predictions_dir, SPLIT, file="mat"),
        meta="results/data/{dataset}/meta.json",
    output:
        png=report(
            run_pattern(layout.run_plots_dir, file="qualitative.png"),
            caption="../report/qualitative.rst",
            category="Detections",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}", "seed": "{seed}", "figure": "TP/FP/FN"},
        ),
    log:
        "logs/qualitative/{dataset}/{model}/seed{seed}.log",
    conda:
        "../envs/evaluate.yaml"
    params:
        split=SPLIT,
    script:
        "../workflow/scripts/qualitative.py"


rule dataset_plots:
    input:
        curves=every_run(layout.metrics_dir, file="pr_curve.csv", dataset="{dataset}"),
        per_video=every_run(layout.metrics_dir, file="dsfnet_f1.csv", dataset="{dataset}"),
        logs=every_run(layout.training_log, dataset="{dataset}"),
    output:
        pr=report(
            "results/{dataset}/plots/pr_curves.png",
            caption="../report/pr_curves.rst",
            category="Plots",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "precision-recall"},
        ),
        per_video=report(
            "results/{dataset}/plots/per_video_f1.png",
            caption="../report/per_video_f1.rst",
            category="Plots",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "per-video F1"},
        ),
        training=report(
            "results/{dataset}/plots/training_curves.png",
            caption="../report/training_curves.rst",
            category="Plots",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "training curves"},
        ),
    log:
        "logs/dataset_plots/{dataset}.log",
    conda:
        "../envs/evaluate.yaml"
    params:
        models=MODELS,
        seeds=SEEDS,
        results=results_root,
    script:
        "../workflow/scripts/dataset_plots.py"


rule paper_tables:
    input:
        summaries=every_run(layout.metrics_dir, file="summary.json"),
        per_video=every_run(layout.metrics_dir, file="dsfnet_f1.csv"),
        speeds=every_run(layout.predictions_dir, SPLIT, file="predict.json"),
        models="results/tables/models.csv",
    output:
        main=report(
            "results/tables/paper_main.html",
            caption="../report/paper_main.rst",
            category="Paper tables",
            labels={"table": "methods x datasets"},
        ),
        ablation=report(
            "results/tables/paper_ablation.html",
            caption="../report/paper_ablation.rst",
            category="Paper tables",
            labels={"table": "ablation"},
        ),
        efficiency=report(
            "results/tables/paper_efficiency.html",
            caption="../report/paper_efficiency.rst",
            category="Paper tables",
            labels={"table": "efficiency"},
        ),
        paired=report(
            "results/tables/paper_paired.html",
            caption="../report/paper_paired.rst",
            category="Paper tables",
            labels={"table": "paired differences"},
        ),
        f1_figure=report(
            "results/tables/paper_main_f1.png",
            caption="../report/paper_main_f1.rst",
            category="Paper tables",
            labels={"table": "F1 with 95 % intervals"},
        ),
        csv="results/tables/paper_main.csv",
    log:
        "logs/paper_tables/paper_tables.log",
    conda:
        "../envs/evaluate.yaml"
    params:
        datasets=BENCHMARK_DATASETS,
        models=MODELS,
        seeds=SEEDS,
        results=results_root,
        split=SPLIT,
    script:
        "../workflow/scripts/paper_tables.py"
