# Pretrained weights: the ImageNet DLA-34 file that `training.pretrained: imagenet` starts from.
# Only runs that use it ask for it (backbone_weights_input in common.smk).


rule backbone_weights:
    output:
        weights=weights.IMAGENET_WEIGHTS,
    log:
        "logs/weights/backbone_weights.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    script:
        "../workflow/scripts/backbone_weights.py"
