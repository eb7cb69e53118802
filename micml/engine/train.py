"""Train one model on one unified dataset, resumable, in this process or under torchrun.

    train(config, dataset_root, out_dir, *, fresh=False, validate=None, progress=None) -> best.pt

The run folder (`micml.engine.records`): `last.pt` (every epoch, and every `checkpoint_every`
iterations), `best.pt` (best validation F1; the test split is never read), `log.csv`,
`provenance.json` and `run.json` (the run's identity, `micml.engine.resume`).

Where things are: settings `micml.engine.config`, sample order `.sampling`, validation
`.validation`, log.csv and provenance `.records`, identity and resume `.resume`, the loop
`.loop`, DDP `.distributed`, the workflow's entry `.launch`; checkpoints `micml.checkpoint`.

Command line (what torchrun runs for more than one process; see `launch_command`):
    python -m micml.engine.train --config train.yaml --data results/data/rscar --out results/rscar/<model>/train
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import random
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from micml.allocator import keep_freed_memory
from micml.checkpoint import CheckpointError, build_model
from micml.data.clips import ClipDataset
from micml.engine.config import TrainingConfig, effective_settings, read_config_file, training_config
from micml.engine.distributed import DistContext, init_distributed, shutdown, wrap_model
from micml.engine.errors import TrainingError
from micml.engine.loop import Loop
from micml.engine.records import BEST, LAST, LOG_CSV, CsvLog, run_record, write_provenance
from micml.engine.resume import TrainState, identity_fingerprint, restore, resumable, run_identity, write_identity
from micml.engine.validation import Validator, make_f1_validator, make_val_set
from micml.precision import channels_last_weights, compiled, tune_cudnn

log = logging.getLogger("micml.engine")


def train(config: TrainingConfig | Mapping, dataset_root: Path | str, out_dir: Path | str, *, fresh: bool = False,
          supersede_other: bool = False, validate: Validator | None = None, progress: bool | None = None) -> Path:
    """Train `config.model` on the train split of `dataset_root`; return `out_dir/best.pt`.

    `config`: a TrainingConfig, or a mapping of settings (checked here). A run of the same
    identity in `out_dir` is continued from its `last.pt` (epoch, iteration, optimizer, lr, RNG and
    best metric continue); a run of another identity is a StaleRunError. `fresh`: start again, the
    earlier run's files moved to `out_dir/superseded/`. `supersede_other`: resume a run of the same
    identity, but move one of another identity aside instead of refusing (the workflow: its config
    is the truth, and Snakemake reruns the job because a setting changed). `validate(model, val
    dataset, device) -> {'f1': ..., ...}` replaces the built-in F1 validation. `progress`
    overrides the config's progress setting.
    """
    config = training_config(config)
    if progress is not None:
        config = config.replace(progress=bool(progress))
    context = init_distributed(config.device)
    try:
        best = _train(config, Path(dataset_root), Path(out_dir), fresh, supersede_other, validate, context)
    except BaseException:
        shutdown(context, wait=False)
        raise
    shutdown(context)
    return best


def _train(config: TrainingConfig, dataset_root: Path, out_dir: Path, fresh: bool, supersede_other: bool,
           validate: Validator | None, context: DistContext) -> Path:
    if config.batch_size % context.world_size:
        raise ValueError(f"training config: batch_size {config.batch_size} (global) is not divisible by "
                         f"the {context.world_size} processes; pick a multiple of {context.world_size}")
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    effective = effective_settings(config, context.device)
    tune_cudnn(context.device)
    if torch.device(context.device).type == "cpu":
        keep_freed_memory()  # every step allocates and frees the same large activations: reuse them

    train_set = ClipDataset(dataset_root, "train", train=True, crop_size=config.crop_size, seed=config.seed,
                            augment=config.augment, object_crop_prob=config.object_crop_prob,
                            max_objects=config.max_objects, normalisation=config.normalisation)
    if len(train_set) == 0:
        raise TrainingError(f"{dataset_root}: the train split has no frames; check the conversion")
    val_set = make_val_set(config, dataset_root)

    import_plugins(config.plugins)
    model = build_model(config.model, config.model_options).to(context.device)
    if effective["channels_last"]:
        model = channels_last_weights(model)  # .to(memory_format=...) refuses the 5-D Conv3d weights
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=effective["amp"] == "fp16")

    state, resumed_from = TrainState(), None
    identity = run_identity(config.as_dict(), dataset_root)
    fingerprint = identity_fingerprint(identity)
    last_path = out_dir / LAST
    if resumable(out_dir, identity, fresh=fresh, supersede_other=supersede_other, context=context):
        state = restore(last_path, fingerprint, model, optimizer, scaler, context.device)
        resumed_from = {"epoch": state.epoch, "iteration": state.iteration, "step": state.global_step}
        log.info("resuming %s at epoch %d, iteration %d (step %d)", last_path, state.epoch + 1,
                 state.iteration, state.global_step)
    csv_log = None
    if context.is_main:
        write_identity(out_dir, identity)
        csv_log = CsvLog(out_dir / LOG_CSV, keep_up_to_step=state.global_step if resumed_from else None)
        write_provenance(out_dir, config.as_dict(), dataset_root,
                         run_record(context, effective, resumed_from), fresh=resumed_from is None)

    network = wrap_model(model, context, sync_batchnorm=config.sync_batchnorm,
                         find_unused_parameters=config.find_unused_parameters)
    network = compiled(network, config.compile)
    loop = Loop(config, context, effective, model, network, optimizer, scaler, train_set, val_set,
                validate or make_f1_validator(config), out_dir, csv_log, state, fingerprint)
    loop.run()
    return out_dir / BEST


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def import_plugins(names: Sequence[str]) -> None:
    """Import the modules a training config names; they register custom models. (The training
    config is code its author chose; a checkpoint never imports anything.)"""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ValueError(f"training config: plugin module {name!r} cannot be imported ({error}); "
                             "put it on PYTHONPATH or remove it from plugins") from None


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m micml.engine.train",
        description="Train one micml model on one unified dataset (resumes from OUT/last.pt). "
                    "For several GPUs run it under torchrun (micml.engine.distributed.launch_command).")
    parser.add_argument("--config", required=True,
                        help="YAML/JSON file of training settings (keys and defaults: config/schema.yaml)")
    parser.add_argument("--data", required=True, help="unified dataset folder (results/data/<dataset>)")
    parser.add_argument("--out", required=True, help="output folder for last.pt, best.pt, log.csv, provenance.json")
    parser.add_argument("--fresh", action="store_true",
                        help="start again; an earlier run in OUT is moved to OUT/superseded/ (never deleted)")
    parser.add_argument("--supersede-other", action="store_true",
                        help="resume a run of the same settings, move one of other settings to OUT/superseded/")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", stream=sys.stderr)
    try:
        best = train(read_config_file(args.config), args.data, args.out, fresh=args.fresh,
                     supersede_other=args.supersede_other, progress=False if args.no_progress else None)
    except (ValueError, OSError, CheckpointError, TrainingError) as error:  # ours name the file and the fix
        # One line, not a traceback: `micml train` and the workflow's log show it as the error.
        # (Other errors, torch's included, keep their traceback: they are bugs to report.)
        print(f"micml train [rank {rank}]: {error}", file=sys.stderr)
        return 1
    if rank == 0:
        print(best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
