# Evaluation: each dataset's own protocols on the .mat files of rule export_mat, per-dataset
# comparison plots, and the paper tables across datasets and models.


rule evaluate:
    input:
        predictions=f"results/{{dataset}}/{{model}}/predictions/{SPLIT}/predict.json",
        mat=f"results/{{dataset}}/{{model}}/predictions/{SPLIT}/mat",
        meta="results/data/{dataset}/meta.json",
    output:
        summary="results/{dataset}/{model}/metrics/summary.json",
        curves="results/{dataset}/{model}/metrics/pr_curve.csv",
        f1=report(
            "results/{dataset}/{model}/metrics/dsfnet_f1.html",
            caption="../report/metrics_dsfnet_f1.rst",
            category="Metrics",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}", "table": "P/R/F1 (IoU)"},
        ),
    params:
        split=SPLIT,
        protocols=dataset_protocols,
    log:
        "logs/evaluate/{dataset}/{model}.log",
    conda:
        "../envs/evaluate.yaml"
    script:
        "../workflow/scripts/evaluate.py"


rule qualitative:
    input:
        predictions=f"results/{{dataset}}/{{model}}/predictions/{SPLIT}/predict.json",
        mat=f"results/{{dataset}}/{{model}}/predictions/{SPLIT}/mat",
        meta="results/data/{dataset}/meta.json",
    output:
        png=report(
            "results/{dataset}/{model}/plots/qualitative.png",
            caption="../report/qualitative.rst",
            category="Detections",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}", "figure": "TP/FP/FN"},
        ),
    params:
        split=SPLIT,
    log:
        "logs/qualitative/{dataset}/{model}.log",
    conda:
        "../envs/evaluate.yaml"
    script:
        "../workflow/scripts/qualitative.py"


rule dataset_plots:
    input:
        curves=expand("results/{{dataset}}/{model}/metrics/pr_curve.csv", model=MODELS),
        f1=expand("results/{{dataset}}/{model}/metrics/summary.json", model=MODELS),
        models=expand("results/{{dataset}}/{model}/model.pt", model=MODELS),
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
    params:
        models=MODELS,
    log:
        "logs/dataset_plots/{dataset}.log",
    conda:
        "../envs/evaluate.yaml"
    script:
        "../workflow/scripts/dataset_plots.py"


rule paper_tables:
    input:
        metrics=paper_table_inputs,
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
        csv="results/tables/paper_main.csv",
    params:
        datasets=BENCHMARK_DATASETS,
        models=MODELS,
        split=SPLIT,
    log:
        "logs/paper_tables/paper_tables.log",
    conda:
        "../envs/evaluate.yaml"
    script:
        "../workflow/scripts/paper_tables.py"
