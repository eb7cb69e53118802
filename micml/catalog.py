"""What micml knows by name, each named once: model variants, dataset formats, protocols, splits.

Importable without torch, so that the workflow (rules/common.smk), the config schema's check,
the paper tables and anything that only reads results can use these names.
`micml.models.registry` builds each variant from its `Variant` below; config/schema.yaml
repeats the variant and format names as enums, and a test checks that they agree in order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """A model variant: one line about it, and which parts of the same network it uses.

    `motion` holds the MotionModule switches (`mining`, `adapter`), or None for no motion
    module; `motion_at_test` keeps that module at inference (the reference drops it).
    """

    summary: str
    static: bool
    temporal: bool
    fusion: bool
    motion: dict | None = None
    motion_at_test: bool = False


_FULL_MOTION = {"mining": True, "adapter": True}

#: Every built-in variant, in the order tables list them.
VARIANT_SPECS: dict[str, Variant] = {
    "centernet": Variant("DLA-34 + DLAUp + heads on the key frame", True, False, False),
    "dsfnet_static": Variant("DSFNet, static (2-D) branch only", True, False, True),
    "dsfnet_dynamic": Variant("DSFNet, temporal (3-D) branch only", False, True, True),
    "dsfnet": Variant("DSFNet: static + temporal branches summed", True, True, True),
    "micml": Variant("DSFNet + motion module in training only (the reference)", True, True, True, _FULL_MOTION),
    "micml_motion_at_test": Variant("MICML with the motion module also at inference", True, True, True,
                                    _FULL_MOTION, motion_at_test=True),
    "micml_no_adapter": Variant("MICML without the motion-vision adapter", True, True, True,
                                {"mining": True, "adapter": False}),
    "micml_no_mining": Variant("MICML without motion pattern mining", True, True, True,
                               {"mining": False, "adapter": True}),
}

#: The variant names, in order.
VARIANTS: tuple[str, ...] = tuple(VARIANT_SPECS)

#: The method the project is named after, and the comparisons the paired table reports first:
#: (method, its baseline).
METHOD = "micml"
HEADLINE_PAIRS: tuple[tuple[str, str], ...] = ((METHOD, "dsfnet"), ("dsfnet", "centernet"))

#: The splits of every unified dataset, in order.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Scoring protocols, by name.
DSFNET_F1, CENTRE_DISTANCE, COCO_AP50, DRONECROWD_LMAP = "dsfnet_f1", "centre_distance", "coco_ap50", "dronecrowd_lmap"
KNOWN_PROTOCOLS: tuple[str, ...] = (DSFNET_F1, CENTRE_DISTANCE, COCO_AP50, DRONECROWD_LMAP)
#: Protocols that also write a precision-recall curve.
CURVE_PROTOCOLS: tuple[str, ...] = (DSFNET_F1, CENTRE_DISTANCE, DRONECROWD_LMAP)
#: Protocols scored against annotated points rather than boxes.
POINT_PROTOCOLS: tuple[str, ...] = (DRONECROWD_LMAP,)

#: The native formats micml converts, and the protocols each annotated one is scored with (the
#: converters write this list into meta.json; the workflow plans evaluation from it). `video` is
#: a plain video without annotations: it can be detected on, not scored.
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "rscar": (DSFNET_F1, COCO_AP50, CENTRE_DISTANCE),
    "viso": (DSFNET_F1, COCO_AP50, CENTRE_DISTANCE),
    "dronecrowd": (DRONECROWD_LMAP, DSFNET_F1),
}
UNANNOTATED_FORMAT = "video"
FORMATS: tuple[str, ...] = (*PROTOCOLS, UNANNOTATED_FORMAT)


def describe(name: str) -> str:
    """One line about the variant `name`; ValueError naming the variants otherwise."""
    if name not in VARIANT_SPECS:
        raise ValueError(f"unknown model variant {str(name)[:80]!r}; variants: {', '.join(VARIANTS)}")
    return VARIANT_SPECS[name].summary
