"""The epoch/iteration loop of one run: steps, validation, checkpoints, log rows.

`micml.engine.train` builds everything it needs (datasets, model, optimizer, resumed state)
and runs `Loop.run`; only the main process writes files.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from micml.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from micml.data.clips import collate_clips
from micml.engine.distributed import barrier, sum_over_processes
from micml.engine.errors import NonFiniteLossError, TrainingError
from micml.engine.losses import CenterNetLoss
from micml.engine.records import BEST, LAST, LOSS_NAMES, device_name
from micml.engine.resume import capture_rng_state
from micml.engine.sampling import EpochSampler
from micml.precision import autocast

log = logging.getLogger("micml.engine")

TARGET_KEYS = ("hm", "wh", "reg", "ind", "reg_mask")


class Loop:
    """The epoch/iteration loop; its attributes are what a checkpoint saves."""

    def __init__(self, config, context, effective, model, network, optimizer, scaler, train_set, val_set,
                 validate, out_dir, csv_log, state, fingerprint):
        self.config, self.context, self.effective = config, context, effective
        self.model, self.network, self.optimizer, self.scaler = model, network, optimizer, scaler
        self.train_set, self.val_set, self.validate = train_set, val_set, validate
        self.out_dir, self.csv_log, self.state, self.fingerprint = out_dir, csv_log, state, fingerprint
        self.loss_fn = CenterNetLoss()
        self.amp = effective["amp"]
        self.iterations = config.iterations_per_epoch(len(train_set))
        self.per_process_batch = config.batch_size // context.world_size

    def run(self) -> None:
        log.info("training %s: %d epochs x %d iterations, batch %d, crop %s, on %s x%d",
                 self.config.model, self.config.epochs, self.iterations, self.config.batch_size,
                 self.config.crop_size, self.context.device, self.context.world_size)
        for epoch in range(self.state.epoch + 1, self.config.epochs + 1):
            self.train_epoch(epoch)
            self.state.epoch, self.state.iteration = epoch, 0
            if self.validation_due(epoch):
                self.run_validation(epoch)
            if self.context.is_main:
                save_checkpoint(self.out_dir / LAST, self.checkpoint(with_optimizer=True))
            barrier(self.context)
        if self.context.is_main and not (self.out_dir / BEST).exists():
            # No validation ever ran (val_interval 0): the last weights are the only candidate.
            log.warning("no validation ran; %s holds the last epoch's weights", BEST)
            save_checkpoint(self.out_dir / BEST, self.checkpoint(with_optimizer=False))
        if self.context.is_main:
            self.record_budget_in_best()

    def record_budget_in_best(self) -> None:
        """best.pt was written at its epoch, before the run spent its whole budget: it gets the
        run's totals (what models are compared at) and keeps the step of its own weights."""
        best = load_checkpoint(self.out_dir / BEST)
        weights_step = best["training"].get("best_step", best["training"]["steps"])
        best["training"] = {**self.budget(), "best_step": weights_step}
        save_checkpoint(self.out_dir / BEST, best)

    def validation_due(self, epoch: int) -> bool:
        interval = self.config.val_interval
        return bool(interval) and (epoch % interval == 0 or epoch == self.config.epochs)

    def train_epoch(self, epoch: int) -> None:
        lr = self.config.lr_at(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.train_set.set_epoch(epoch)
        start = self.state.iteration
        sampler = EpochSampler(len(self.train_set), batch_size=self.per_process_batch, iterations=self.iterations,
                               seed=self.config.seed, epoch=epoch, rank=self.context.rank,
                               world_size=self.context.world_size, start_iteration=start)
        loader = DataLoader(self.train_set, batch_size=self.per_process_batch, sampler=sampler,
                            num_workers=self.config.num_workers, collate_fn=collate_clips,
                            pin_memory=self.context.device.type == "cuda")
        bar = tqdm(total=self.iterations, initial=start, desc=f"epoch {epoch}/{self.config.epochs}",
                   file=sys.stderr, disable=not self.show_progress(), dynamic_ncols=True, leave=False)
        self.network.train()
        dropped_in_epoch = 0
        tick = time.perf_counter()
        for iteration, batch in enumerate(loader, start=start + 1):
            losses, dropped = self.step(batch, epoch, iteration)
            self.state.iteration, self.state.global_step = iteration, self.state.global_step + 1
            dropped_in_epoch += dropped
            seconds, tick = time.perf_counter() - tick, time.perf_counter()
            self.state.train_seconds += seconds
            bar.update(1)
            bar.set_postfix(loss=f"{losses['total']:.4f}", refresh=False)
            if self.csv_log and (iteration % self.config.log_interval == 0 or iteration == self.iterations):
                self.csv_log.write(kind="train", epoch=epoch, iteration=iteration, step=self.state.global_step,
                                   lr=lr, dropped_objects=dropped, seconds=seconds, **losses)
            every = self.config.checkpoint_every
            if every and self.context.is_main and self.state.global_step % every == 0 and iteration < self.iterations:
                save_checkpoint(self.out_dir / LAST, self.checkpoint(with_optimizer=True))
        bar.close()
        if dropped_in_epoch:
            log.warning("epoch %d: %d objects had no target slot because a frame held more than max_objects=%d "
                        "boxes (they stay on the heat map but get no size/offset loss); raise max_objects",
                        epoch, dropped_in_epoch, self.config.max_objects)

    def step(self, batch: dict, epoch: int, iteration: int) -> tuple[dict[str, float], int]:
        device = self.context.device
        inputs = batch["input"].to(device, non_blocking=True)
        targets = {key: batch[key].to(device, non_blocking=True) for key in TARGET_KEYS}
        with autocast(device, self.amp):
            output = self.network(inputs)
        losses = self.loss_fn(output, targets)
        values = self.agreed_values(losses, batch["n_dropped"])
        if not all(math.isfinite(values[name]) for name in LOSS_NAMES):
            raise self.non_finite_error(epoch, iteration, values)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.config.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        dropped = int(values.pop("dropped"))
        return values, dropped

    def agreed_values(self, losses: dict[str, torch.Tensor], dropped: int) -> dict[str, float]:
        """Loss parts averaged over processes (and dropped objects summed), identical on every rank,
        so that a non-finite loss on one process stops all of them together."""
        stacked = torch.stack([losses[name].detach().float() for name in LOSS_NAMES]
                              + [torch.tensor(float(dropped), device=losses["total"].device)])
        summed = sum_over_processes(stacked, self.context).tolist()
        values = {name: summed[i] / self.context.world_size for i, name in enumerate(LOSS_NAMES)}
        values["dropped"] = summed[-1]
        return values

    def non_finite_error(self, epoch: int, iteration: int, values: dict[str, float]) -> NonFiniteLossError:
        parts = ", ".join(f"{name}={values[name]:.6g}" for name in LOSS_NAMES)
        last = self.out_dir / LAST
        where = f"{last} (epoch {self.state.epoch}, iteration {self.state.iteration})" if last.exists() else "none yet"
        return NonFiniteLossError(
            f"non-finite loss at epoch {epoch}, iteration {iteration} (global step {self.state.global_step + 1}): "
            f"{parts}. The weights were not updated with it; last good checkpoint: {where}. "
            "Lower lr, set grad_clip, or check the frames and boxes of this dataset.")

    def run_validation(self, epoch: int) -> None:
        if self.context.is_main:
            tick = time.perf_counter()
            self.model.eval()
            result = self.validate(self.model, self.val_set, self.context.device)
            metrics = {key: float(value) for key, value in result.items()}
            self.model.train()
            if "f1" not in metrics:
                raise TrainingError(f"the validation function returned {sorted(metrics)}; it must return an 'f1' key")
            self.state.last_val = metrics
            log.info("epoch %d validation: %s", epoch, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            self.csv_log.write(kind="val", epoch=epoch, iteration=self.state.iteration, step=self.state.global_step,
                               lr=self.config.lr_at(epoch), seconds=time.perf_counter() - tick,
                               **{k: metrics.get(k) for k in ("precision", "recall", "f1")})
            if self.state.best_value is None or metrics["f1"] > self.state.best_value:
                self.state.best_value, self.state.best_epoch = metrics["f1"], epoch
                save_checkpoint(self.out_dir / BEST, self.checkpoint(with_optimizer=False))
        barrier(self.context)

    def checkpoint(self, *, with_optimizer: bool) -> dict:
        checkpoint = {
            "format": FORMAT,
            "model": {"name": self.config.model, "options": self.config.model_options,
                      "config": _plain_or_none(getattr(self.model, "config", None))},
            "state_dict": self.model.state_dict(),
            "normalisation": self.config.normalisation.as_dict(),  # what test and detect feed it
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch": self.state.epoch,
            "iteration": self.state.iteration,
            "global_step": self.state.global_step,
            "best": {"metric": "f1", "value": self.state.best_value, "epoch": self.state.best_epoch},
            "val": dict(self.state.last_val),
            "config": self.config.as_dict(),
            "run": self.fingerprint,
            "training": self.budget(),
        }
        if with_optimizer:
            checkpoint["optimizer"] = self.optimizer.state_dict()
            checkpoint["rng"] = capture_rng_state()
            if self.scaler.is_enabled():
                checkpoint["scaler"] = self.scaler.state_dict()
        return checkpoint

    def budget(self) -> dict:
        """What this run has spent so far and where: tables compare models at stated budgets, and
        a score is only reproducible on the same CPU kind and thread count. (best.pt gets the
        totals when the run ends, and `best_step`, the step of its own weights.)"""
        return {"seed": self.config.seed, "steps": self.state.global_step,
                "samples": self.state.global_step * self.config.batch_size,
                "seconds": round(self.state.train_seconds, 3), "device": device_name(self.context.device),
                "processes": self.context.world_size, "threads": torch.get_num_threads(), "torch": str(torch.__version__)}

    def show_progress(self) -> bool:
        setting = self.config.progress
        return self.context.is_main and (sys.stderr.isatty() if setting == "auto" else bool(setting))


def _plain_or_none(value):
    """Only JSON-like values go into a checkpoint (torch.load(weights_only=True) must read it)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return None
