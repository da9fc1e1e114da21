"""``train(config) -> TrainResult``: the training loop, read top to bottom.

One loop serves the CLI, the tests and the benchmarks, on CPU, CUDA and MPS alike: all of
MNIST sits on the device as uint8, each batch is a slice of a per-epoch permutation,
augmented there in one call. Building the run is in ``setup``, one optimizer step in
``step``, the run directory in ``rundir``, the resumable state in ``state``.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..config import NO_AUGMENT, AugmentSpec, ConfigError, TrainConfig
from ..data import MNIST, augment_batch, load_mnist
from ..device import resolve_device, synchronize
from ..inference.evaluate import EvalResult, evaluate
from ..models import reference_of
from . import distributed
from .errors import Interrupted, TrainingError
from .rundir import discard_unstarted, prepare_out_dir, save_run, write_metrics, writing
from .setup import Run, build_run, check_model_fits
from .state import RESUME_FILE, load_resume_state, restore_resume_state, save_resume_state
from .step import train_step

log = logging.getLogger(__name__)
FINITE_CHECK_STEPS = 50  # how often the loss is checked for NaN/inf inside an epoch (a device sync)


@dataclass
class TrainResult:
    test_acc: float  # percent, final epoch, full test set
    params: int
    model: str
    preset: str
    epochs: float
    seed: int
    train_seconds: float  # first batch to last optimizer step; evaluation and data loading excluded
    checkpoint: str | None
    passed: bool  # test_acc >= target_acc
    target_acc: float
    device: str
    steps: int
    images_per_second: float
    compile_seconds: float
    out_dir: str | None
    history: list[dict] = field(default_factory=list)
    evaluation: dict = field(default_factory=dict)
    world_size: int = 1  # processes under torchrun (1: a plain run)
    rank: int = 0
    val_acc: float | None = None  # percent, final epoch, on the held-out training images (--val-images)
    test_acc_tta: float | None = None  # with --tta: the final model with test-time augmentation
    val_acc_tta: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StepBatch:
    """What ``on_step`` sees before each step: the batch as stored (uint8, before augmentation)."""

    step: int  # steps done before this one
    epoch: int
    images: torch.Tensor  # (B, 28, 28) uint8
    labels: torch.Tensor  # (B,)
    augment: AugmentSpec  # what this step's augmentation draws from (NO_AUGMENT in clean epochs)


@dataclass
class LoopState:
    """The loop's progress: what a resumable state saves beside the weights."""

    step: int = 0
    first_epoch: int = 1
    history: list[dict] = field(default_factory=list)  # one row per finished epoch
    train_seconds: float = 0.0
    compile_seconds: float = 0.0
    partial: dict | None = None  # a mid-epoch stop: that epoch's permutation and running sums


def train(config: TrainConfig, *, model: torch.nn.Module | None = None, data: MNIST | None = None,
          data_dir: str | Path | None = None, out_dir: str | Path | None = None, progress: bool = True,
          resume: bool = False, on_step: Callable[[StepBatch], None] | None = None,
          on_epoch: Callable[[dict], None] | None = None, test_set: bool = True) -> TrainResult:
    """Train ``config`` from scratch, or with ``resume`` from ``out_dir``'s saved state.

    ``model``: train this module (from the weights it has) instead of building ``config.model``;
    the run records it as ``module:Class``, the reference that loads it back. ``on_step`` sees each
    step's batch, ``on_epoch`` each finished epoch's history row (it may raise to stop the run).
    ``test_set=False`` never reads the test images (a search: choices on validation only); the
    result's test figures are then NaN, and nothing may be written (no ``out_dir``).

    With ``out_dir``, every epoch ends with a resumable state written atomically, and Ctrl-C
    or SIGTERM stop the run after the current step with that state saved (``Interrupted``).
    A resumed run on the CPU gives the same weights, bit for bit, as one never stopped.
    Under torchrun each process is one data-parallel rank; rank 0 alone evaluates and writes.
    """
    config = (replace(config, model=reference_of(model)) if model is not None else config).validate()
    ctx = distributed.context_from_env()
    check_launch(config, ctx, resume, writes=out_dir is not None, test_set=test_set)
    check_model_fits(config, model)
    device = distributed.setup(ctx, resolve_device(config.device))
    if not ctx.is_main:
        out_dir, progress = None, False
    created = out_dir is not None and not Path(out_dir).exists()
    # what rank 0 alone does before the first collective: should it fail, the others stop cleanly
    out = distributed.on_main(ctx, lambda: None if out_dir is None else prepare_out_dir(out_dir, config, resume),
                              device)
    try:
        saved = load_resume_state(out) if resume and out is not None else None
        data = data or distributed.main_first(ctx, lambda fetch: load_mnist(data_dir, fetch=fetch), device)
        run = build_run(config, data.to(device), ctx, device, fresh=saved is None, module=model, test_set=test_set)
        state = LoopState(train_seconds=run.init_seconds) if saved is None else resume_state(run, saved, out)
        log.info(f"training {config.model} ({run.params:,} parameters) on {device}, preset {config.preset}, "
                 f"{run.plan.total_steps} steps of {config.batch_size} "
                 f"({run.plan.total_steps / run.plan.steps_per_epoch:.2f} epochs)")
        result = run_epochs(run, state, out, progress, on_step, on_epoch)
    except BaseException:  # nothing resumable saved yet: leave --out as it was, for the corrected retry
        if out is not None and not resume and not (out / RESUME_FILE).exists():
            discard_unstarted(out, created)
        raise
    final = distributed.on_main(ctx, lambda: final_evaluation(run, result), device)
    checkpoint = distributed.on_main(ctx, lambda: save(run, state, final, out), device)
    distributed.teardown(ctx)
    return summarize(run, state, final, checkpoint, out)


def run_epochs(run: Run, state: LoopState, out: Path | None, progress: bool, on_step, on_epoch) -> EvalResult | None:
    """The epochs from where ``state`` stands to the end; the last epoch's test evaluation."""
    ctx, result = run.ctx, None
    # a signal-time save in one rank would leave the others waiting in a collective: ranks just stop
    with stop_requests(enabled=out is not None and not ctx.enabled) as stop:
        for epoch in range(state.first_epoch, run.plan.epochs + 1):
            sums = train_epoch(run, state, epoch, stop, out, progress, on_step)
            # rank 0 alone evaluates on all 10,000 test images and writes; the others wait for it
            result = distributed.on_main(ctx, lambda: end_epoch(run, state, epoch, sums, out), run.device)
            if on_epoch is not None and ctx.is_main:
                on_epoch(state.history[-1])
    return result


def check_launch(config: TrainConfig, ctx: distributed.Context, resume: bool, writes: bool, test_set: bool) -> None:
    if writes and not test_set:
        raise ConfigError("a run that does not read the test set writes no run directory (its model would "
                          "have no test figures)")
    if ctx.enabled and resume:
        raise ConfigError("--resume runs in a single process; start it without torchrun")
    if ctx.enabled and config.batch_size < ctx.world_size:
        raise ConfigError(f"batch size {config.batch_size} is smaller than the {ctx.world_size} processes")


def resume_state(run: Run, saved: dict, out: Path) -> LoopState:
    """Put the saved weights, optimizer, schedule, EMA and generators back; the loop's progress."""
    restore_resume_state(saved, run.net, run.optimizer, run.schedule, run.ema, run.generator, run.device)
    state = LoopState(step=saved["step"], first_epoch=saved["epoch"], history=saved["history"],
                      train_seconds=saved["train_seconds"], partial=saved.get("partial"))
    log.info(f"resuming {run.config.model} from {out / RESUME_FILE}: epoch {state.first_epoch}, "
             f"step {state.step}/{run.plan.total_steps}")
    return state


def train_epoch(run: Run, state: LoopState, epoch: int, stop: "stop_requests", out: Path | None, progress: bool,
                on_step: Callable[[StepBatch], None] | None) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The epoch's steps (from where a resumed state left off); returns (steps, loss sum, correct),
    summed over all ranks."""
    config, plan, ctx = run.config, run.plan, run.ctx
    run.model.train()
    epoch_start, epoch_steps = plan.epoch_span(epoch)
    order, loss_sum, correct = epoch_sums(state.partial, run.train_x.shape[0], run.generator, run.device)
    state.partial = None
    spec = config.augment_spec()
    # the bar goes to stderr, and only for a person watching: silent when stdout is piped
    bar = tqdm(total=epoch_steps, initial=state.step - epoch_start, desc=f"epoch {epoch}/{plan.epochs}",
               leave=False, file=sys.stderr, disable=not (progress and sys.stdout.isatty()))
    synchronize(run.device)
    started = time.perf_counter()
    for i in range(state.step - epoch_start, epoch_steps):
        if stop.requested:
            synchronize(run.device)
            state.train_seconds += time.perf_counter() - started
            state.partial = {"order": order, "loss_sum": loss_sum, "correct": correct}
            snapshot(run, state, out, epoch)
            bar.close()
            raise Interrupted(f"stopped by {stop.requested} at step {state.step}/{plan.total_steps}; resume with "
                              f"`tinymnist train --resume {out}`", out / RESUME_FILE)
        idx = order[i * config.batch_size:(i + 1) * config.batch_size]
        if ctx.enabled:
            idx = distributed.shard(idx, ctx.rank, ctx.world_size)
        batch = StepBatch(state.step, epoch, run.train_x[idx], run.train_y[idx],
                          spec if state.step < plan.augment_steps else NO_AUGMENT)
        if on_step is not None:
            on_step(batch)
        x = augment_batch(batch.images, batch.augment, run.augment_generator).contiguous(
            memory_format=run.memory_format)
        loss, logits = train_step(run, x, batch.labels)
        loss_sum += loss.detach() / ctx.world_size if ctx.enabled else loss.detach()
        correct += (logits.argmax(1) == batch.labels).sum()
        state.step += 1
        bar.update()
        if state.step % FINITE_CHECK_STEPS == 0:
            check_finite(loss_sum, epoch, state.step, out)
        if config.compile and state.step == 1:  # the first step pays the one-time compilation
            synchronize(run.device)
            state.compile_seconds = time.perf_counter() - started
            started = time.perf_counter()
    synchronize(run.device)
    state.train_seconds += time.perf_counter() - started
    bar.close()
    distributed.all_reduce_sum(ctx, loss_sum)  # the epoch's figures over the whole global batch
    distributed.all_reduce_sum(ctx, correct)
    check_finite(loss_sum, epoch, state.step, out)
    return epoch_steps, loss_sum, correct


def end_epoch(run: Run, state: LoopState, epoch: int, sums: tuple, out: Path | None) -> EvalResult | None:
    """Evaluate, append the epoch's row to the history, log it, write metrics and the resumable state."""
    config = run.config
    epoch_steps, loss_sum, correct = sums
    train_loss = loss_sum.item() / epoch_steps
    result = evaluate(run.final_model, run.data.test_images, run.data.test_labels, config.eval_batch_size,
                      config.channels_last) if run.test_set else None
    row = {"epoch": round(state.step / run.plan.steps_per_epoch, 4), "step": state.step, "train_loss": train_loss,
           "train_acc": 100.0 * correct.item() / (epoch_steps * config.batch_size)}
    if result is not None:
        row.update(test_loss=result.loss, test_acc=result.accuracy)
    row.update(lr=run.schedule.get_last_lr()[0], seconds=state.train_seconds)
    if run.val_x is not None:
        val = evaluate(run.final_model, run.val_x, run.val_y, config.eval_batch_size, config.channels_last)
        row.update(val_loss=val.loss, val_acc=val.accuracy)
    state.history.append(row)
    scored = f"test {result.accuracy:.2f}%" if result else f"validation {row.get('val_acc', math.nan):.2f}%"
    log.info(f"epoch {epoch}/{run.plan.epochs}  loss {train_loss:.4f}  train {row['train_acc']:.2f}%  "
             f"{scored}  {state.train_seconds:.1f}s")
    if out is not None:
        with writing(out / "metrics.json"):
            write_metrics(state.history, out)
        snapshot(run, state, out, epoch + 1)
    return result


def snapshot(run: Run, state: LoopState, out: Path | None, epoch: int) -> None:
    """The resumable state, to start again at ``epoch`` (mid-epoch when ``state.partial`` is set)."""
    if out is None:
        return
    with writing(out / RESUME_FILE):
        save_resume_state(out, run.net, run.optimizer, run.schedule, run.ema, run.generator, run.config, epoch,
                          state.step, state.history, state.train_seconds, state.partial)


@dataclass
class FinalEvaluation:
    result: EvalResult
    passed: bool
    test_acc_tta: float | None = None
    val_acc_tta: float | None = None


def final_evaluation(run: Run, result: EvalResult | None) -> FinalEvaluation | None:
    """The last epoch's test figures, held to the target; with --tta, the TTA figures beside them.
    None for a run that does not read the test set."""
    config, model = run.config, run.final_model
    if not run.test_set:
        return None
    if result is None:  # resumed a run that had already finished its last epoch
        result = evaluate(model, run.data.test_images, run.data.test_labels, config.eval_batch_size,
                          config.channels_last)
    final = FinalEvaluation(result, result.accuracy >= config.target_acc and not config.dry_run)
    if config.tta:
        final.test_acc_tta = evaluate(model, run.data.test_images, run.data.test_labels, config.eval_batch_size,
                                      config.channels_last, tta=True).accuracy
        if run.val_x is not None:
            final.val_acc_tta = evaluate(model, run.val_x, run.val_y, config.eval_batch_size,
                                         config.channels_last, tta=True).accuracy
        log.info(f"with test-time augmentation (the image and 4 one-pixel shifts): test {final.test_acc_tta:.2f}%"
                 + ("" if final.val_acc_tta is None else f", validation {final.val_acc_tta:.2f}%"))
    return final


def save(run: Run, state: LoopState, final: FinalEvaluation, out: Path | None) -> str | None:
    if out is None:
        return None
    with writing(out):
        return str(save_run(run.final_model, run.config, final.result, state.history, final.passed,
                            state.train_seconds, out))


def summarize(run: Run, state: LoopState, final: FinalEvaluation | None, checkpoint: str | None,
              out: Path | None) -> TrainResult:
    """The result; ranks other than 0 have no evaluation of their own and report NaN."""
    config, result = run.config, final.result if final else None
    return TrainResult(
        test_acc=result.accuracy if result else float("nan"), params=run.params, model=config.model,
        preset=config.preset, epochs=round(state.step / run.plan.steps_per_epoch, 4), seed=config.seed,
        train_seconds=state.train_seconds, checkpoint=checkpoint, passed=final.passed if final else run.test_set,
        target_acc=config.target_acc, device=str(run.device), steps=state.step,
        images_per_second=state.step * config.batch_size / max(state.train_seconds, 1e-9),
        compile_seconds=state.compile_seconds, out_dir=str(out) if out else None, history=state.history,
        evaluation=result.to_dict() if result else {}, world_size=run.ctx.world_size, rank=run.ctx.rank,
        val_acc=state.history[-1].get("val_acc") if state.history else None,
        test_acc_tta=final.test_acc_tta if final else None, val_acc_tta=final.val_acc_tta if final else None)


def epoch_sums(partial: dict | None, n_train: int, generator: torch.Generator, device: torch.device):
    """(permutation, loss sum, correct count) to start an epoch with: fresh ones, or those of a
    resumed mid-epoch state."""
    if partial is not None:
        return partial["order"].to(device), partial["loss_sum"].to(device), partial["correct"].to(device)
    return (torch.randperm(n_train, device=device, generator=generator), torch.zeros((), device=device),
            torch.zeros((), device=device, dtype=torch.long))


def check_finite(loss_sum: torch.Tensor, epoch: int, step: int, out: Path | None) -> None:
    """Stop on a NaN or infinite loss; the last resumable state (written before) is left as it was."""
    value = loss_sum.item()
    if not math.isfinite(value):
        saved = out is not None and (out / RESUME_FILE).exists()
        kept = f"; the last good state is {out / RESUME_FILE}" if saved else ""
        raise TrainingError(f"loss became {value} in epoch {epoch} (step {step}); lower --lr or keep "
                            f"--grad-clip{kept}")


class stop_requests:
    """Turn Ctrl-C and SIGTERM into a flag the loop checks between steps, so that a stop
    never lands in the middle of an optimizer step or a file write. A second Ctrl-C while
    saving falls back to Python's default behaviour."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested: str | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame):
        if self.requested:  # asked twice: stop now
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self):
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
