"""The `micml` command. Each subcommand calls the same function the workflow's rule calls."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from micml import __version__, catalog

SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}
# Named here, not imported from micml.data.synthetic and micml.precision, so that `micml --help`
# starts without cv2 and torch; tests/test_cli.py checks that they agree.
PRESETS = ("easy", "default", "moderate", "hard")
AMP_CHOICES = ("off", "bf16", "fp16")


def subcommand(name: str, summary: str):
    def register(add_arguments):
        SUBCOMMANDS[name] = (summary, add_arguments)
        return add_arguments
    return register


def parse_options(pairs: Sequence[str]) -> dict:
    """KEY=VALUE pairs, VALUE parsed as JSON when it is JSON (numbers, lists) else kept as text."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"micml: option {pair!r} is not KEY=VALUE (e.g. val_videos='[\"001\"]')")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@subcommand("synth", "render the synthetic dataset in a native format")
def _synth(parser):
    parser.description = ("Render the embedded synthetic dataset into a native format, so that the "
                          "real converters can run on it.")
    parser.add_argument("format", choices=catalog.FORMATS, help="native format to write")
    parser.add_argument("out", type=Path, help="folder to create (for `video`, the folder that gets video.mp4)")
    parser.add_argument("--preset", default="default", choices=PRESETS, help="difficulty preset")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a SyntheticSpec field, e.g. --set n_frames=20 (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")

    def run(args):
        from micml.data import synthetic
        from micml.data.synthetic import native

        spec = synthetic.spec_from_settings({"preset": args.preset, "seed": args.seed,
                                             "overrides": parse_options(args.overrides)})
        manifest = native.synthesize(args.format, args.out, spec, overwrite=args.overwrite)
        print(json.dumps(manifest, indent=2, default=str))
    parser.set_defaults(run=run)


@subcommand("convert", "native tree or video -> unified layout")
def _convert(parser):
    parser.description = ("Convert a native dataset tree (RsCarData, VISO MOT, DroneCrowd) or a video file "
                          "into the unified layout: frames/<video>/<000001>.jpg, annotations/<split>.json, meta.json.")
    parser.add_argument("format", choices=catalog.FORMATS, help="native format of SRC")
    parser.add_argument("src", type=Path, help="native tree root (or the .mp4/.avi file for `video`)")
    parser.add_argument("dst", type=Path, help="unified dataset folder to create (replaced atomically)")
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="converter option, e.g. -o 'test_videos=[\"002\",\"003\"]' (repeatable)")

    def run(args):
        from micml.data import converters

        print(converters.convert(args.format, args.src, args.dst, **parse_options(args.option)))
    parser.set_defaults(run=run)


@subcommand("fetch", "verify, download or unpack a real dataset")
def _fetch(parser):
    parser.description = ("Verify (and where a direct URL exists, download) a real dataset listed in "
                          "config/datasets.yaml, then unpack it safely. For cloud-drive sources it says "
                          "exactly which file to fetch and where to put it.")
    parser.add_argument("dataset", help="entry of the sources file, e.g. rscar, viso, dronecrowd")
    parser.add_argument("--sources", type=Path, default=Path("config/datasets.yaml"), help="sources catalogue")
    parser.add_argument("--raw", type=Path, default=Path("resources/raw"), help="folder holding the archives")
    parser.add_argument("--dest", type=Path, help="folder to unpack into (default RAW/DATASET)")

    def run(args):
        from micml.data import download

        catalogue = download.load_sources(args.sources)
        manifest = download.fetch_dataset(args.dataset, catalogue, args.raw, args.dest or args.raw / args.dataset)
        print(json.dumps(manifest, indent=2, default=str))
    parser.set_defaults(run=run)


@subcommand("summarize", "dataset summary table and figure")
def _summarize(parser):
    parser.description = "Write a dataset's summary table (CSV, Markdown) and figure (PNG)."
    parser.add_argument("dataset", type=Path, help="unified dataset folder (holds meta.json)")
    parser.add_argument("out", type=Path, help="output prefix; writes OUT.csv, OUT.md and OUT.png")

    def run(args):
        from micml.data.summary import summarize_dataset

        table = summarize_dataset(args.dataset, args.out.with_suffix(".csv"), args.out.with_suffix(".md"),
                                  args.out.with_suffix(".png"))
        print(table.to_string())
    parser.set_defaults(run=run)


@subcommand("dcn-check", "check the deformable convolution on this machine")
def _dcn_check(parser):
    parser.description = ("Check the deformable convolution against a slow reference on this machine "
                          "(CUDA when available) and report its speed.")
    parser.add_argument("out", type=Path, help="output prefix; writes OUT.json and OUT.md")
    parser.add_argument("--cpu", action="store_true", help="check on the CPU even when CUDA is available")

    def run(args):
        from micml.diagnostics import write_dcn_check

        result = write_dcn_check(args.out.with_suffix(".json"), args.out.with_suffix(".md"), use_gpu=not args.cpu)
        print(json.dumps(result, indent=2))
    parser.set_defaults(run=run)


@subcommand("models", "parameters and GFLOPs of every model variant")
def _models(parser):
    parser.description = "Write the table of model variants: parameters and GFLOPs at given input sizes."
    parser.add_argument("out", type=Path, help="output prefix; writes OUT.csv and OUT.md")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="square input sizes")

    def run(args):
        from micml.diagnostics import write_model_table
        from micml.models import VARIANTS

        table = write_model_table(VARIANTS, args.sizes, args.out.with_suffix(".csv"), args.out.with_suffix(".md"))
        print(table.to_string())
    parser.set_defaults(run=run)


def add_tiling_arguments(parser: argparse.ArgumentParser, *, tile_default: int | None) -> None:
    parser.add_argument("--tile", type=int, default=tile_default,
                        help="tile side in pixels (multiple of 16); 0 runs whole frames")
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels (>= largest object)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--top-k", type=int, default=100, help="detections kept per frame")
    parser.add_argument("--no-soft-nms", action="store_true", help="skip Gaussian soft-NMS")
    parser.add_argument("--variant", help="refuse a checkpoint of another model variant")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run")
    parser.add_argument("--amp", default="off", choices=AMP_CHOICES,
                        help="autocast dtype of the network (for GPUs; off = float32 as trained)")


def tiling_options(args: argparse.Namespace) -> dict:
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    return {"tile": args.tile or None, "overlap": args.overlap, "batch_size": args.batch_size,
            "top_k": args.top_k, "soft_nms": not args.no_soft_nms, "expected_variant": args.variant,
            "device": device, "amp": args.amp}


@subcommand("train", "train one model variant on a unified dataset")
def _train(parser):
    parser.description = ("Train a model variant on a unified dataset (resumable: re-running the same "
                          "command continues from OUT/last.pt; a run of other settings is refused, see "
                          "--fresh). Settings: defaults < CONFIG's training < its per_model entry < --set. "
                          "With --gpus N > 1 it starts torchrun.")
    parser.add_argument("dataset", type=Path, help="unified dataset folder (results/data/<dataset>)")
    parser.add_argument("out", type=Path, help="run folder: last.pt, best.pt, log.csv, provenance.json")
    parser.add_argument("--model", required=True, help="variant name (see `micml models`)")
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"),
                        help="workflow config whose `training` section is used")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training key, e.g. --set epochs=2 (repeatable)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs to train on (torchrun when > 1)")
    parser.add_argument("--seed", type=int, help="training seed (default: the first of CONFIG's seeds)")
    parser.add_argument("--fresh", action="store_true",
                        help="start again; an earlier run in OUT is moved to OUT/superseded/<fingerprint>/")

    def run(args):
        from micml.config import load_config
        from micml.engine.launch import run_training

        config = load_config(args.config)
        seed = {"seed": config["seeds"][0] if args.seed is None else args.seed}
        print(run_training(config["training"], args.model, args.dataset, args.out, args.out / "model.pt",
                           nproc=args.gpus, overrides={**seed, **parse_options(args.overrides)}, fresh=args.fresh))
    parser.set_defaults(run=run)


@subcommand("test", "run a trained checkpoint over a dataset split")
def _test(parser):
    parser.description = ("Run a checkpoint over one split of a unified dataset with tiled inference; "
                          "write mat/<video>/<frame:06d>.mat, detections.json, detections.csv, predict.json.")
    parser.add_argument("checkpoint", type=Path,
                        help="model.pt / best.pt written by training (a reference model_best.pth: convert-checkpoint first)")
    parser.add_argument("dataset", type=Path, help="unified dataset folder")
    parser.add_argument("out", type=Path, help="prediction folder to create (replaced atomically)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to run")
    add_tiling_arguments(parser, tile_default=0)

    def run(args):
        from micml.inference.predict import predict_split

        print(predict_split(args.checkpoint, args.dataset, args.split, args.out, **tiling_options(args)))
    parser.set_defaults(run=run)


@subcommand("detect", "detect moving objects in your own video or frame folder")
def _detect(parser):
    parser.description = ("Detect moving objects in a video file (.mp4, .avi) or a folder of frames of "
                          "any size, with tiling; write detections.csv, detections.json and an annotated video.")
    parser.add_argument("source", type=Path, help="video file or folder of frames (sorted by name)")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="trained model.pt (a reference model_best.pth: convert-checkpoint first)")
    parser.add_argument("--out", type=Path, default=Path("detections"), help="output folder")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="boxes drawn in the video above this")
    parser.add_argument("--no-video", action="store_true", help="skip the annotated video")
    parser.add_argument("--track", action="store_true",
                        help="also track and count the objects: detections.csv gains track_id, tracks.txt "
                             "(MOTChallenge) and counts.csv (objects per frame) are written, the video draws "
                             "ids and trails")
    parser.add_argument("--max-distance", type=float,
                        help="with --track: pixels from its predicted centre a detection may lie and still "
                             "continue a track (default: micml.tracking.TrackerSettings'; raise it for fast objects)")
    add_tiling_arguments(parser, tile_default=512)

    def run(args):
        from micml.inference.detect import detect

        from micml.tracking import TrackerSettings

        chosen = {"max_distance": args.max_distance} if args.max_distance is not None else {}
        track = TrackerSettings(min_score=args.score_threshold, **chosen) if args.track else None
        print(detect(args.source, args.checkpoint, args.out, score_threshold=args.score_threshold,
                     annotate=not args.no_video, track=track, **tiling_options(args)))
    parser.set_defaults(run=run)


@subcommand("tune-tracking", "choose the tracker's settings on a run's val-split detections")
def _tune_tracking(parser):
    parser.description = ("Track a run's val-split detections (the mat/ folder `micml test --split val` writes) "
                          "with every combination of a grid of tracker settings and rank them by HOTA against "
                          "the dataset's track ids; the test split is refused. Put the winner under `tracking:` "
                          "in config/config.yaml.")
    parser.add_argument("mat", type=Path, help="predictions/val/mat folder of a run")
    parser.add_argument("dataset", type=Path, help="unified dataset folder (results/data/<dataset>)")
    parser.add_argument("--split", default="val", help="split the detections are of (default val; never test)")
    parser.add_argument("--top", type=int, default=10, help="rows of the ranking to print")
    parser.add_argument("--out", type=Path, help="also write the whole ranking as CSV")

    def run(args):
        from micml.tracking.tune import tune

        ranking = tune(args.mat, args.dataset, args.split)
        if args.out:
            ranking.to_csv(args.out, index=False)
        print(ranking.head(args.top).to_string())
    parser.set_defaults(run=run)


@subcommand("convert-checkpoint", "reference MICML/DSFNet model_best.pth -> micml checkpoint")
def _convert_checkpoint(parser):
    parser.description = ("Write a checkpoint of the reference MICML/DSFNet code (model_best.pth) as a micml "
                          "checkpoint that `micml test` and `micml detect` load: the model rebuilt as --model, its "
                          "weights converted and loaded strictly, the reference's input normalisation (BGR, "
                          "one mean and std) and the source file's sha256 recorded.")
    parser.add_argument("src", type=Path, help="reference checkpoint (e.g. weights/rsdata/MICML/model_best.pth)")
    parser.add_argument("dst", type=Path, help="micml checkpoint to write (e.g. micml_rscar.pt)")
    parser.add_argument("--model", required=True,
                        help="variant it was trained as (see `micml models`); a MICML checkpoint also loads as "
                             "dsfnet, without the training-only motion module")
    parser.add_argument("--head-conv", type=int, default=128, help="hidden width of the heads (the reference's 128)")

    def run(args):
        from micml.checkpoint import convert_reference_checkpoint

        provenance = convert_reference_checkpoint(args.src, args.dst, args.model, head_conv=args.head_conv)
        print(json.dumps({"checkpoint": str(args.dst), **provenance}, indent=2))
    parser.set_defaults(run=run)


@subcommand("evaluate", "score predictions with the dataset's protocols")
def _evaluate(parser):
    parser.description = ("Score a prediction folder (mat/<video>/<frame:06d>.mat) against a split of a unified "
                          "dataset with the dataset's protocols (DSFNet P/R/F1 at IoU 0/0.05/0.1/0.2, centre "
                          "distance, COCO AP50, DroneCrowd L-mAP); write one table per protocol and pr_curve.csv.")
    parser.add_argument("dataset", type=Path, help="unified dataset folder")
    parser.add_argument("predictions", type=Path, help="prediction folder holding mat/")
    parser.add_argument("out", type=Path, help="metrics folder to write")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="split scored")
    parser.add_argument("--protocol", action="append", dest="protocols",
                        help="only this protocol (repeatable; default: those in the dataset's meta.json)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="score only the frames that have a .mat file; every output is marked partial")

    def run(args):
        from micml.evaluation.evaluate import evaluate_predictions

        tables = evaluate_predictions(args.dataset, args.predictions, args.split, args.out, protocols=args.protocols,
                                      allow_partial=args.allow_partial)
        for name, table in tables.items():
            if name != "pr_curve":
                print(f"{name}\n{table.to_string()}\n")
    parser.set_defaults(run=run)


@subcommand("paper-tables", "paper tables from whatever has been run")
def _paper_tables(parser):
    parser.description = ("Build the paper tables (methods x datasets, paired differences, per video, ablation, "
                          "efficiency) over the config's seeds from whatever exists under RESULTS without running "
                          "anything; runs not made yet are shown as missing.")
    parser.add_argument("--results", type=Path, default=Path("results"), help="the workflow's results folder")
    parser.add_argument("--out", type=Path, default=Path("results/tables"), help="where the tables go")
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"),
                        help="config naming the datasets, models and seeds to tabulate")

    def run(args):
        from micml.config import load_config
        from micml.evaluation.paper import write_paper_tables

        config = load_config(args.config)
        datasets = [name for name, entry in config["datasets"].items()
                    if entry["benchmark"] and entry["format"] != "video"]
        tables = write_paper_tables(args.results, datasets, config["models"], args.out, seeds=config["seeds"],
                                    split=config["testing"]["split"])
        print("\n".join(str(args.out / f"{stem}.md") for stem in tables))
    parser.set_defaults(run=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="micml", description=__doc__)
    parser.add_argument("--version", action="version", version=f"micml {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, add_arguments) in SUBCOMMANDS.items():
        add_arguments(commands.add_parser(name, help=summary, formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.run(args)
    except (ValueError, OSError, RuntimeError) as error:  # ours carry the file and the fix
        if args.verbose:
            raise
        print(f"micml {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
