# Deformable convolution: the reference compiles DCNv2; here the build step becomes a check
# that the operator used for training matches a slow reference on this machine's device.


rule dcn_check:
    output:
        json="results/ops/dcn_check.json",
        md=report("results/ops/dcn_check.md", caption="../report/dcn_check.rst", category="Machine"),
    log:
        "logs/ops/dcn_check.log",
    conda:
        "../envs/torch.yaml"
    resources:
        gpu=gpus_for_check,
    script:
        "../workflow/scripts/dcn_check.py"


rule model_table:
    output:
        csv=report("results/tables/models.csv", caption="../report/models.rst", category="Models"),
        md="results/tables/models.md",
    log:
        "logs/ops/model_table.log",
    conda:
        "../envs/torch.yaml"
    params:
        variants=MODEL_VARIANTS,
        sizes=[512, 1024],
    script:
        "../workflow/scripts/model_table.py"
