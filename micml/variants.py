"""The model variants, named once: their order and one line about each.

Importable without torch, so that the workflow (rules/common.smk), the paper tables and anything
that only reads results can name the variants. `micml.models.registry` maps these names to
architectures (a `VariantSpec` each) and checks that it covers exactly these; config/schema.yaml
repeats the names as the `models` enum (a test checks that the two agree).
"""

from __future__ import annotations

#: Every built-in variant, in the order tables list them, with one line about it.
SUMMARIES: dict[str, str] = {
    "centernet": "DLA-34 + DLAUp + heads on the key frame",
    "dsfnet_static": "DSFNet, static (2-D) branch only",
    "dsfnet_dynamic": "DSFNet, temporal (3-D) branch only",
    "dsfnet": "DSFNet: static + temporal branches summed",
    "micml": "DSFNet + motion module in training only (the reference)",
    "micml_motion_at_test": "MICML with the motion module also at inference",
    "micml_no_adapter": "MICML without the motion-vision adapter",
    "micml_no_mining": "MICML without motion pattern mining",
}

#: The variant names, in order.
VARIANTS: tuple[str, ...] = tuple(SUMMARIES)


def describe(name: str) -> str:
    """One line about the variant `name`; ValueError naming the variants otherwise."""
    if name not in SUMMARIES:
        raise ValueError(f"unknown model variant {str(name)[:80]!r}; variants: {', '.join(VARIANTS)}")
    return SUMMARIES[name]
