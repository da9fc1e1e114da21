"""train(config) -> TrainResult: the training loop (the optimizer is built in ``optim``).

One loop serves the CLI, the tests and the benchmarks, on CPU, CUDA and MPS alike:
all of MNIST sits on the device as uint8, each batch is a slice of a per-epoch
permutation, augmented there in one call. The only device-specific choices are
``resolve_device`` and ``autocast_dtype``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import distributed
from .augment import NO_AUGMENT, augment_batch, normalize
from .checkpoint import (RESUME_FILE, load_resume_state, restore_resume_state, save_checkpoint,
                         save_resume_state)
from .config import ConfigError, TrainConfig
from .data import MNIST, load_mnist
from .evaluate import EvalResult, evaluate
from .fileio import atomic_write, os_errors_as
from .models import count_parameters, create_model
from .optim import build_optimizer

DRY_RUN_STEPS = 3
# images a model's data-dependent init may look at: 1,000 give 196,000 patches, plenty for a
# 16x16 covariance. With 5,000 the init took 0.40 s of the speedrun's ~5 s; with 1,000 it
# takes 0.07 s, and validation accuracy was 98.96/98.95/98.93% against 98.97/98.89/98.89%
# (speedrun, --val-images 10000, seeds 0-2)
DATA_INIT_IMAGES = 1000
FINITE_CHECK_STEPS = 50  # how often the loss is checked for NaN/inf inside an epoch (a device sync)


class TrainingError(RuntimeError):
    """Training cannot go on (the loss diverged)."""


class OutputDirError(TrainingError):
    """The run directory cannot be created or written."""


class Interrupted(TrainingError):
    """Stopped by Ctrl-C or SIGTERM after saving a resumable state."""

    def __init__(self, message: str, resume_path: Path | None):
        super().__init__(message)
        self.resume_path = resume_path


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


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but no CUDA GPU is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device mps requested but MPS is not available")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {name!r}")
    return device


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock timings mean finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def train(config: TrainConfig, *, data: MNIST | None = None, data_dir: str | Path | None = None,
          out_dir: str | Path | None = None, progress: bool = True, log=print, resume: bool = False) -> TrainResult:
    """Train ``config`` from scratch, or with ``resume`` from ``out_dir``'s saved state.

    With ``out_dir``, every epoch ends with a resumable state written atomically, and Ctrl-C
    or SIGTERM stop the run after the current step with that state saved (``Interrupted``).
    A resumed run on the CPU gives the same weights, bit for bit, as one never stopped.
    """
    config.validate()
    ctx = distributed.context_from_env()  # under torchrun: one data-parallel rank of several
    if ctx.enabled and resume:
        raise ConfigError("--resume runs in a single process; start it without torchrun")
    if ctx.enabled and config.batch_size < ctx.world_size:
        raise ConfigError(f"batch size {config.batch_size} is smaller than the {ctx.world_size} processes")
    device = distributed.setup(ctx, resolve_device(config.device))
    if not ctx.is_main:  # rank 0 alone prints and writes
        out_dir, log, progress = None, (lambda msg: None), False
    # what rank 0 alone does before the first collective: should it fail, the others stop cleanly
    out = distributed.on_main(ctx, lambda: None if out_dir is None else prepare_out_dir(out_dir, config, resume),
                              device)
    saved = load_resume_state(out) if resume and out is not None else None
    data = data or distributed.main_first(ctx, lambda fetch: load_mnist(data_dir, fetch=fetch), device)
    data = data.to(device)
    train_x, train_y, val_x, val_y = split_validation(data, config.val_images, config.batch_size)
    torch.manual_seed(config.seed)  # model init (the same on every rank) and dropout
    generator = torch.Generator(device=device).manual_seed(config.seed)  # permutation (and augmentation)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model, init_seconds = build_model(config.model, device, memory_format,
                                      train_x if saved is None else None)
    params = count_parameters(model)
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.
                                                get_ema_multi_avg_fn(config.ema), use_buffers=True)
           if config.ema else None)
    augment_generator = generator
    if ctx.enabled:  # ranks share the permutation but not the augmentation or dropout draws
        augment_generator = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + ctx.rank + 1)
        torch.manual_seed(config.seed * 1_000_003 + ctx.rank + 1)
        model = DistributedDataParallel(model)
    step_fn = torch.compile(model) if config.compile else model
    amp_dtype = autocast_dtype(config.amp, device)
    spec = config.augment_spec()

    n_train = train_x.shape[0]
    steps_per_epoch = n_train // config.batch_size  # drop the ragged tail: every step is full
    scheduled_steps = math.ceil(config.epochs * steps_per_epoch)
    total_steps = DRY_RUN_STEPS if config.dry_run else scheduled_steps
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    # --clean-epochs: the last steps of the *scheduled* run see the images as they are, so a
    # dry run (the first few steps) augments like the real run's start does
    augment_steps = scheduled_steps - round(config.clean_epochs * steps_per_epoch)
    net = model.module if ctx.enabled else model  # the plain model: what is evaluated and saved
    optimizer, schedule = build_optimizer(net, config, total_steps)
    trainable = [p for p in net.parameters() if p.requires_grad]  # model order: clipping sums in it

    history: list[dict] = []
    train_seconds, compile_seconds = init_seconds, 0.0
    step, first_epoch, partial = 0, 1, None
    if saved is not None:
        restore_resume_state(saved, net, optimizer, schedule, ema, generator, device)
        history, train_seconds, step = saved["history"], saved["train_seconds"], saved["step"]
        first_epoch, partial = saved["epoch"], saved.get("partial")
        log(f"resuming {config.model} from {out / RESUME_FILE}: epoch {first_epoch}, step {step}/{total_steps}")
    log(f"training {config.model} ({params:,} parameters) on {device}, preset {config.preset}, "
        f"{total_steps} steps of {config.batch_size} ({total_steps / steps_per_epoch:.2f} epochs)")

    def snapshot(epoch: int, partial_epoch: dict | None = None) -> None:
        if out is None:
            return
        with writing(out / RESUME_FILE):
            save_resume_state(out, net, optimizer, schedule, ema, generator, config, epoch, step,
                              history, train_seconds, partial_epoch)

    def end_epoch(epoch: int, epoch_steps: int, loss_sum: torch.Tensor, correct: torch.Tensor) -> EvalResult:
        train_loss = loss_sum.item() / epoch_steps
        result = evaluate(ema.module if ema else net, data.test_images, data.test_labels,
                          config.eval_batch_size, config.channels_last)
        history.append({"epoch": round(step / steps_per_epoch, 4), "step": step, "train_loss": train_loss,
                        "train_acc": 100.0 * correct.item() / (epoch_steps * config.batch_size),
                        "test_loss": result.loss, "test_acc": result.accuracy,
                        "lr": schedule.get_last_lr()[0], "seconds": train_seconds})
        if val_x is not None:
            val = evaluate(ema.module if ema else net, val_x, val_y, config.eval_batch_size, config.channels_last)
            history[-1].update(val_loss=val.loss, val_acc=val.accuracy)
        log(f"epoch {epoch}/{n_epochs}  loss {train_loss:.4f}  train {history[-1]['train_acc']:.2f}%  "
            f"test {result.accuracy:.2f}%  {train_seconds:.1f}s")
        if out is not None:
            with writing(out / "metrics.json"):
                write_metrics(history, out)
            snapshot(epoch + 1)
        return result

    result = None
    # a signal-time save in one rank would leave the others waiting in a collective: ranks just stop
    with stop_requests(enabled=out is not None and not ctx.enabled) as stop:
        for epoch in range(first_epoch, n_epochs + 1):
            model.train()
            epoch_start = (epoch - 1) * steps_per_epoch
            epoch_steps = min(steps_per_epoch, total_steps - epoch_start)
            order, loss_sum, correct = epoch_state(partial, n_train, generator, device)
            partial = None
            # the bar goes to stderr, and only for a person watching: silent when stdout is piped
            bar = tqdm(total=epoch_steps, initial=step - epoch_start, desc=f"epoch {epoch}/{n_epochs}",
                       leave=False, file=sys.stderr, disable=not (progress and sys.stdout.isatty()))
            synchronize(device)
            started = time.perf_counter()
            for i in range(step - epoch_start, epoch_steps):
                if stop.requested:
                    synchronize(device)
                    train_seconds += time.perf_counter() - started
                    snapshot(epoch, {"order": order, "loss_sum": loss_sum, "correct": correct})
                    bar.close()
                    raise Interrupted(f"stopped by {stop.requested} at step {step}/{total_steps}; resume with "
                                      f"`tinymnist train --resume {out}`", out / RESUME_FILE)
                idx = order[i * config.batch_size:(i + 1) * config.batch_size]
                if ctx.enabled:
                    idx = distributed.shard(idx, ctx.rank, ctx.world_size)
                x = augment_batch(train_x[idx], spec if step < augment_steps else NO_AUGMENT,
                                  augment_generator).contiguous(memory_format=memory_format)
                y = train_y[idx]
                with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                    logits = step_fn(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
                if ctx.enabled:  # DDP averages over ranks: weigh each rank's mean by its share of the batch
                    loss = loss * (len(idx) * ctx.world_size / config.batch_size)
                optimizer_step(loss, optimizer, schedule, trainable, config.grad_clip, ema, net)
                loss_sum += loss.detach() / ctx.world_size if ctx.enabled else loss.detach()
                correct += (logits.argmax(1) == y).sum()
                step += 1
                bar.update()
                if step % FINITE_CHECK_STEPS == 0:
                    check_finite(loss_sum, epoch, step, out)
                if config.compile and step == 1:  # the first step pays the one-time compilation
                    synchronize(device)
                    compile_seconds = time.perf_counter() - started
                    started = time.perf_counter()
            synchronize(device)
            train_seconds += time.perf_counter() - started
            bar.close()

            distributed.all_reduce_sum(ctx, loss_sum)  # the epoch's figures over the whole global batch
            distributed.all_reduce_sum(ctx, correct)
            check_finite(loss_sum, epoch, step, out)
            # rank 0 alone evaluates on all 10,000 test images and writes; the others wait for it
            result = distributed.on_main(ctx, lambda: end_epoch(epoch, epoch_steps, loss_sum, correct), device)

    final_model = ema.module if ema else net
    passed = True  # ranks other than 0 report nothing of their own
    test_tta = val_tta = None
    if ctx.is_main:
        if result is None:  # resumed a run that had already finished its last epoch
            result = evaluate(final_model, data.test_images, data.test_labels, config.eval_batch_size,
                              config.channels_last)
        passed = result.accuracy >= config.target_acc and not config.dry_run
        if config.tta:
            test_tta = evaluate(final_model, data.test_images, data.test_labels, config.eval_batch_size,
                                config.channels_last, tta=True).accuracy
            val_tta = None if val_x is None else evaluate(final_model, val_x, val_y, config.eval_batch_size,
                                                          config.channels_last, tta=True).accuracy
            log(f"with test-time augmentation (the image and 4 one-pixel shifts): test {test_tta:.2f}%"
                + ("" if val_tta is None else f", validation {val_tta:.2f}%"))

    def save() -> str | None:
        if out is None:
            return None
        with writing(out):
            return str(save_run(final_model, config, result, history, passed, params, train_seconds, out))

    checkpoint = distributed.on_main(ctx, save, device)  # should saving fail, the other ranks stop cleanly
    distributed.teardown(ctx)
    return TrainResult(
        test_acc=result.accuracy if result else float("nan"), params=params, model=config.model,
        preset=config.preset, epochs=round(step / steps_per_epoch, 4), seed=config.seed,
        train_seconds=train_seconds, checkpoint=checkpoint, passed=passed, target_acc=config.target_acc,
        device=str(device), steps=step, images_per_second=step * config.batch_size / max(train_seconds, 1e-9),
        compile_seconds=compile_seconds, out_dir=str(out) if out else None, history=history,
        evaluation=result.to_dict() if result else {}, world_size=ctx.world_size, rank=ctx.rank,
        val_acc=history[-1].get("val_acc") if history else None, test_acc_tta=test_tta, val_acc_tta=val_tta)


def split_validation(data: MNIST, n_val: int, batch_size: int):
    """(train images, train labels, validation images, validation labels): the last ``n_val``
    training images are held out (None, None when ``n_val`` is 0). The test set is untouched."""
    if n_val == 0:
        return data.train_images, data.train_labels, None, None
    if n_val > data.train_images.shape[0] - batch_size:
        raise ConfigError(f"val_images {n_val} leaves fewer training images than one batch of {batch_size}")
    return (data.train_images[:-n_val], data.train_labels[:-n_val], data.train_images[-n_val:],
            data.train_labels[-n_val:])


def epoch_state(partial: dict | None, n_train: int, generator: torch.Generator, device: torch.device):
    """(permutation, loss sum, correct count) to start an epoch with: fresh ones, or those of a
    resumed mid-epoch state."""
    if partial is not None:
        return partial["order"].to(device), partial["loss_sum"].to(device), partial["correct"].to(device)
    return (torch.randperm(n_train, device=device, generator=generator), torch.zeros((), device=device),
            torch.zeros((), device=device, dtype=torch.long))


def optimizer_step(loss: torch.Tensor, optimizer, schedule, trainable: list[torch.Tensor], grad_clip: float,
                   ema, net: nn.Module) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(trainable, grad_clip)
    optimizer.step()
    schedule.step()
    if ema is not None:
        ema.update_parameters(net)


def build_model(name: str, device: torch.device, memory_format: torch.memory_format,
                train_images: torch.Tensor | None) -> tuple[nn.Module, float]:
    """The registered model on ``device``; a model with a data-dependent init gets it from
    ``train_images`` (never test images). Returns the seconds that init took: they count as
    training time."""
    model = create_model(name).to(device, memory_format=memory_format)
    if train_images is None or not hasattr(model, "init_from_data"):
        return model, 0.0
    started = time.perf_counter()
    model.init_from_data(normalize(train_images[:DATA_INIT_IMAGES]))
    synchronize(device)
    return model, time.perf_counter() - started


def check_finite(loss_sum: torch.Tensor, epoch: int, step: int, out: Path | None) -> None:
    """Stop on a NaN or infinite loss; the last resumable state (written before) is left as it was."""
    value = loss_sum.item()
    if not math.isfinite(value):
        kept = f"; the last good state is {out / RESUME_FILE}" if out is not None and (out / RESUME_FILE).exists() else ""
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


# ---------------------------------------------------------------- run outputs

def writing(path: Path):
    """A failed write (a full disk, a vanished directory) as one clear error, not a traceback.
    Every file is written atomically, so what the run had saved before is still there."""
    return os_errors_as(OutputDirError, f"cannot write {path}", " (the previous state, if any, is intact)")


def holds_run(directory: Path) -> bool:
    """Whether ``directory`` holds (part of) a training run: its config, state, metrics or model."""
    return (any((directory / name).exists() for name in ("config.json", RESUME_FILE, "metrics.json"))
            or any(directory.glob("mnist_model_*")))


def prepare_out_dir(out_dir: str | Path, config: TrainConfig, resume: bool = False) -> Path:
    """Create the run directory and write config.json, or fail now rather than after training.

    A directory that already holds a run is refused unless resuming it: a new run would
    overwrite its config, metrics, state and model, which may be all that is left of it."""
    out = Path(out_dir)
    if not resume and out.is_dir() and holds_run(out):
        raise OutputDirError(f"{out} already holds a run; pass another --out (or `--resume {out}` to continue "
                             "a stopped one); nothing was written")
    with os_errors_as(OutputDirError, f"cannot write to output directory {out}"):
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.json", config.to_json() + "\n")
    return out


def write_metrics(history: list[dict], out: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write(out / "metrics.csv", buffer.getvalue())
    atomic_write(out / "metrics.json", json.dumps(history, indent=2) + "\n")


def save_run(model: nn.Module, config: TrainConfig, result: EvalResult, history: list[dict], passed: bool,
             params: int, train_seconds: float, out: Path) -> Path:
    """Plots and the final model; named with its accuracy only when it met the target."""
    from .plots import plot_confusion, plot_curves  # matplotlib is only needed here

    plot_curves(history, out / "curves.png")
    plot_confusion(result.confusion, out / "confusion.png",
                   title=f"{config.model}: {result.accuracy:.2f}% on the 10,000 test images")
    name = f"mnist_model_acc{result.accuracy:.2f}" if passed else "mnist_model_final"
    metadata = {"preset": config.preset, "seed": config.seed, "test_acc": result.accuracy,
                "target_acc": config.target_acc, "passed_target": passed,
                "per_class_acc": result.per_class, "train_seconds": train_seconds,
                "epochs": history[-1]["epoch"], "config": config.to_dict()}
    return save_checkpoint(model, out / f"{name}.safetensors", model_name=config.model, metadata=metadata)
