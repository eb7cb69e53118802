# Data stage: native tree (synthetic, downloaded, or placed by the user) -> unified layout
# -> per-dataset summary.
#
# results/data/<dataset>/meta.json stands for the whole unified dataset (frames and annotations):
# the converter writes it last and swaps the finished tree in at once (micml.data.unified), so a
# rule that reads frames or annotations declares meta.json as its input.


rule synthesize:
    output:
        manifest=f"{RAW}/{{dataset}}.manifest.json",
    log:
        "logs/datasets/synthesize/{dataset}.log",
    wildcard_constraints:
        dataset=alternatives(SYNTHETIC_DATASETS),
    conda:
        "../envs/data.yaml"
    params:
        entry=dataset_entry,
        synthetic=config["synthetic"],
        tree=native_tree,
    script:
        "../workflow/scripts/synthesize.py"


rule fetch:
    output:
        manifest=f"{RAW}/{{dataset}}.manifest.json",
    log:
        "logs/datasets/fetch/{dataset}.log",
    wildcard_constraints:
        dataset=alternatives(PLACED_DATASETS),
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        entry=dataset_entry,
        sources=sources_catalogue(),
        tree=native_tree,
    script:
        "../workflow/scripts/fetch.py"


rule convert:
    input:
        manifest=f"{RAW}/{{dataset}}.manifest.json",
    output:
        meta="results/data/{dataset}/meta.json",
    log:
        "logs/datasets/convert/{dataset}.log",
    conda:
        "../envs/data.yaml"
    params:
        entry=dataset_entry,
    script:
        "../workflow/scripts/convert.py"


rule dataset_summary:
    input:
        meta="results/data/{dataset}/meta.json",
    output:
        csv="results/{dataset}/dataset_summary.csv",
        md="results/{dataset}/dataset_summary.md",
        png=report(
            "results/{dataset}/dataset_summary.png",
            caption="../report/dataset_summary.rst",
            category="Datasets",
            labels={"dataset": "{dataset}", "figure": "summary"},
        ),
    log:
        "logs/datasets/dataset_summary/{dataset}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../workflow/scripts/dataset_summary.py"
