"""The registry of model variants: one name -> one configuration of the same parts.

| variant                | static DLA-34 + DLAUp | temporal 3-D branch | fusion IDAUp | motion module                 |
|------------------------|-----------------------|---------------------|--------------|-------------------------------|
| `centernet`            | yes (key frame)       | -                   | -            | -                             |
| `dsfnet_static`        | yes (key frame)       | -                   | yes          | -                             |
| `dsfnet_dynamic`       | -                     | yes                 | yes          | -                             |
| `dsfnet`               | yes                   | yes (summed)        | yes          | -                             |
| `micml`                | yes                   | yes                 | yes          | full, training only           |
| `micml_motion_at_test` | yes                   | yes                 | yes          | full, training and inference  |
| `micml_no_adapter`     | yes                   | yes                 | yes          | mining only, training only    |
| `micml_no_mining`      | yes                   | yes                 | yes          | adapter only, training only   |

* `centernet`: a single-frame CenterNet at output stride 1: DLA-34 levels 0-4 on the key frame,
  DLAUp, and the heads on DLAUp's finest output (16 ch, stride 1) — no fusion IDAUp, which is
  DSFNet's. It reads only `clip[:, :, 0]` but takes the same 5-frame clip as every variant.
* `dsfnet_static` / `dsfnet_dynamic`: DSFNet with one branch removed, the fusion IDAUp and heads
  unchanged (the other branch's term of the per-stride sum is simply absent).
* `micml`: exactly the reference: DSFNet plus the motion module on the deepest temporal
  features in training mode only; eval forward equals DSFNet's architecture.
* `micml_no_mining`: the motion module without motion pattern mining (its inner re-run of the
  ConvLSTM and conv1/se2/w0/w2 are removed; the adapter's map is w1 of the node features).
* `micml_no_adapter`: the motion module without the motion-vision adapter (se1/w0/w1/w2 are
  removed; the mined map goes straight to the gated residual `h + sigmoid(mapping(.))`).
  See `micml.models.motion` for the precise math.

Options of `build`: `pretrained` (None, or a local DLA-34 ImageNet file: timm's dla34 as
.safetensors or .pth, or the reference's dla34-ba72cf86.pth; see `load_imagenet_weights`; nothing
is downloaded) and `head_conv` (hidden width of the heads, 128). A built model
carries `model.variant` and `model.config` (`{'variant', 'head_conv', 'pretrained'}`);
`rebuild(model.config)` makes the same architecture without reading the pretrained file (a
checkpoint's weights replace it anyway).
"""

from __future__ import annotations

import os
from typing import Callable

from torch import nn

from micml.catalog import VARIANT_SPECS, VARIANTS, Variant

from .backbone import DLA34, load_imagenet_weights
from .detector import Detector
from .heads import centernet_heads
from .motion import MotionModule
from .necks import DLAUp, IDAUp
from .temporal import TemporalBranch


# The architecture of every variant is data in micml.catalog (importable without torch).
_SPECS: dict[str, Variant] = VARIANT_SPECS

#: Channels of the maps fused by the DSFNet IDAUp, and of the maps the heads read.
FUSED_CHANNELS = (16, 32, 64)
HEAD_IN_CHANNELS = 16


# Builders of models defined outside micml (a research prototype, a test stand-in), added by the
# program that defines them with `register`. A checkpoint's model name selects among these and
# the variants above only: loading a checkpoint never imports the code a file names.
_CUSTOM_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, builder: Callable[..., nn.Module]) -> None:
    """Make `builder(**options)` buildable (and its checkpoints loadable) as model `name`
    (registering a name again replaces its builder: a module may be imported twice)."""
    if not isinstance(name, str) or not name or ":" in name or name in _SPECS:
        raise ValueError(f"cannot register a model as {name!r}: the name must be non-empty, without ':' "
                         f"and not a built-in variant ({', '.join(VARIANTS)})")
    _CUSTOM_BUILDERS[name] = builder


def known_models() -> tuple[str, ...]:
    """Every name `builder_for` accepts: the variants, then the registered custom models."""
    return VARIANTS + tuple(_CUSTOM_BUILDERS)


def builder_for(name: str) -> Callable[..., nn.Module]:
    """The builder registered as `name`; ValueError naming the known models otherwise."""
    if name in _CUSTOM_BUILDERS:
        return _CUSTOM_BUILDERS[name]
    _spec(name)
    return lambda **options: build(name, **options)


def describe(name: str) -> str:
    """One line about a variant (micml.catalog.describe, with the registered models named in the error)."""
    return _spec(name).summary


def _spec(name: str) -> Variant:
    if name not in _SPECS:
        raise ValueError(f"unknown model {str(name)[:80]!r}; known models: {', '.join(known_models())}")
    return _SPECS[name]


#: Options of `build` and their defaults.
OPTIONS = {"pretrained": None, "head_conv": 128}


def build(name: str, **options) -> Detector:
    """Build the variant `name` (see the module docstring).

    Options: `pretrained` (None, or the path of a local DLA-34 ImageNet file, timm's or the
    reference's, loaded into the static backbone; weights are random otherwise) and `head_conv` (128).
    """
    spec = _spec(name)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for model {name!r}; valid options: "
                        + ", ".join(f"{k}={v!r}" for k, v in OPTIONS.items()))
    pretrained = options.get("pretrained", OPTIONS["pretrained"])
    head_conv = options.get("head_conv", OPTIONS["head_conv"])
    if not isinstance(head_conv, int) or isinstance(head_conv, bool) or head_conv < 0:
        raise ValueError(f"head_conv must be an int >= 0 (128 in the reference), got {head_conv!r}")
    if pretrained is not None and not spec.static:
        raise ValueError(f"{name!r} has no DLA-34 backbone, so pretrained={os.fspath(pretrained)!r} "
                         "cannot be used; pass pretrained=None (in a workflow config: "
                         f"training.per_model.{name}.pretrained: null)")

    backbone = static_neck = None
    if spec.static:
        backbone = DLA34()
        static_neck = DLAUp(backbone.channels, [2 ** i for i in range(len(backbone.channels))])
        if pretrained is not None:
            load_imagenet_weights(backbone, pretrained)
    temporal = TemporalBranch(3, FUSED_CHANNELS) if spec.temporal else None
    motion = MotionModule(channels=FUSED_CHANNELS[-1], **spec.motion) if spec.motion else None
    neck = IDAUp(HEAD_IN_CHANNELS, FUSED_CHANNELS, [1, 2, 4]) if spec.fusion else None
    model = Detector(static_backbone=backbone, static_neck=static_neck, temporal_branch=temporal,
                     motion=motion, neck=neck, head=centernet_heads(HEAD_IN_CHANNELS, head_conv),
                     motion_at_test=spec.motion_at_test)
    model.variant = name
    model.config = {"variant": name, "head_conv": head_conv,
                    "pretrained": None if pretrained is None else os.fspath(pretrained)}
    return model


def rebuild(config: dict) -> Detector:
    """Build the architecture described by `model.config` (the pretrained file is not read)."""
    if "variant" not in config:
        raise ValueError(f"a model config needs a 'variant' key (one of {', '.join(VARIANTS)}); "
                         f"found keys {sorted(config)}")
    model = build(config["variant"], head_conv=config.get("head_conv", 128))
    model.config = dict(model.config, pretrained=config.get("pretrained"))
    return model
