# Tracking and counting: each run's test-split detections (the .mat tree of rule export_mat)
# tracked into MOTChallenge files, scored with TrackEval and counted against the ground truth;
# the paper's tracking table and a figure of track trails per dataset.


rule track:
    input:
        mat=run_pattern(layout.predictions_dir, SPLIT, file="mat"),
        meta="results/data/{dataset}/meta.json",
    output:
        tracks=directory(run_pattern(layout.tracks_dir, SPLIT)),
    log:
        "logs/track/{dataset}/{model}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/track/{dataset}/{model}/seed{seed}.tsv"
    conda:
        "../envs/evaluate.yaml"
    params:
        split=SPLIT,
        tracking=config["tracking"],
    script:
        "../workflow/scripts/track.py"


rule evaluate_tracking:
    input:
        tracks=run_pattern(layout.tracks_dir, SPLIT),
        meta="results/data/{dataset}/meta.json",
    output:
        csv=run_pattern(layout.tracking_metrics_path, "csv"),
        md=run_pattern(layout.tracking_metrics_path, "md"),
    log:
        "logs/evaluate_tracking/{dataset}/{model}/seed{seed}.log",
    conda:
        "../envs/evaluate.yaml"
    params:
        split=SPLIT,
        tracking=config["tracking"],
    script:
        "../workflow/scripts/evaluate_tracking.py"


rule track_trails:
    input:
        tracks=track_trails_inputs,
        meta="results/data/{dataset}/meta.json",
    output:
        png=report(
            str(layout.track_trails_figure(RESULTS, "{dataset}")),
            caption="../report/track_trails.rst",
            category="Tracking",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "track trails"},
        ),
    log:
        "logs/track_trails/{dataset}.log",
    conda:
        "../envs/evaluate.yaml"
    params:
        models=MODELS,
        seed=SEEDS[0],
        split=SPLIT,
        results=results_root,
    script:
        "../workflow/scripts/track_trails.py"


rule paper_tracking:
    input:
        metrics=paper_tracking_inputs,
    output:
        csv=report(
            str(layout.paper_tracking_table(RESULTS, "csv")),
            caption="../report/paper_tracking.rst",
            category="Paper tables",
            labels={"table": "tracking and counting"},
        ),
        md=str(layout.paper_tracking_table(RESULTS, "md")),
    log:
        "logs/paper_tracking/paper_tracking.log",
    conda:
        "../envs/evaluate.yaml"
    params:
        datasets=BENCHMARK_DATASETS,
        models=MODELS,
        seeds=SEEDS,
        results=results_root,
    script:
        "../workflow/scripts/paper_tracking.py"
