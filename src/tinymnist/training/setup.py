"""Building a run: the step plan, the model and its optimizer, the generators, the data split.

Everything here happens once, before the first step, in a fixed order: the random number
generators are seeded and consumed in the same sequence on every run, which is what makes a
run repeatable bit for bit and a resumed run identical to one never stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import ConfigError, TrainConfig
from ..data import MNIST, normalize
from ..device import autocast_dtype, synchronize
from ..models import check_model, count_parameters, create_model, model_info
from .distributed import Context
from .optim import build_optimizer

DRY_RUN_STEPS = 3
# images a model's data-dependent init (SpeedNet's whitened stem) looks at: 1,000 give 196,000
# patches, plenty for a 16x16 covariance, at a sixth of 5,000's cost (docs/experiments.md)
DATA_INIT_IMAGES = 1000


@dataclass(frozen=True)
class StepPlan:
    """How many steps a run takes, and which of them see augmented images."""

    steps_per_epoch: int  # full batches only: the ragged tail of each permutation is dropped
    total_steps: int  # what this run executes (a dry run: DRY_RUN_STEPS)
    epochs: int  # epochs started, the last possibly partial
    augment_steps: int  # steps before this index are augmented; the rest are --clean-epochs

    @classmethod
    def for_run(cls, config: TrainConfig, n_train: int) -> "StepPlan":
        steps_per_epoch = n_train // config.batch_size
        scheduled = math.ceil(config.epochs * steps_per_epoch)
        total = DRY_RUN_STEPS if config.dry_run else scheduled
        # the clean steps are the last of the *scheduled* run, so a dry run (its first few
        # steps) augments like the real run's start does
        augment = scheduled - round(config.clean_epochs * steps_per_epoch)
        return cls(steps_per_epoch, total, math.ceil(total / steps_per_epoch), augment)

    def epoch_span(self, epoch: int) -> tuple[int, int]:
        """(global index of the epoch's first step, steps in the epoch)."""
        start = (epoch - 1) * self.steps_per_epoch
        return start, min(self.steps_per_epoch, self.total_steps - start)


@dataclass
class Run:
    """What a run trains with, built once by ``build_run``."""

    config: TrainConfig
    ctx: Context
    device: torch.device
    data: MNIST  # on ``device``; the test set is only read by the per-epoch evaluation
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    model: nn.Module  # what the step runs: the net, or its DDP wrapper
    net: nn.Module  # the plain model: what is evaluated (without EMA) and saved
    step_fn: nn.Module  # ``model``, or its torch.compile'd form
    ema: torch.optim.swa_utils.AveragedModel | None
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    trainable: list[torch.Tensor]  # in model order: gradient clipping sums in it
    generator: torch.Generator  # the epoch permutations (and, in one process, augmentation)
    augment_generator: torch.Generator
    memory_format: torch.memory_format
    amp_dtype: torch.dtype | None
    plan: StepPlan
    params: int
    init_seconds: float  # a data-dependent init's time: it counts as training time
    test_set: bool = True  # False: the per-epoch and final evaluations never read the test images

    @property
    def final_model(self) -> nn.Module:
        """The model that is evaluated and saved: the EMA's average when there is one."""
        return self.ema.module if self.ema is not None else self.net


def split_validation(data: MNIST, n_val: int, batch_size: int):
    """(train images, train labels, validation images, validation labels): the last ``n_val``
    training images are held out (None, None when ``n_val`` is 0). The test set is untouched."""
    if n_val > data.train_images.shape[0] - batch_size:
        raise ConfigError(f"val_images {n_val} leaves fewer training images than one batch of {batch_size}")
    if data.train_images.shape[0] < batch_size:  # not one full batch: an epoch of no steps
        raise ConfigError(f"batch_size {batch_size} is more than the {data.train_images.shape[0]:,} training images")
    if n_val == 0:
        return data.train_images, data.train_labels, None, None
    return (data.train_images[:-n_val], data.train_labels[:-n_val], data.train_images[-n_val:],
            data.train_labels[-n_val:])


def check_model_fits(config: TrainConfig, module: nn.Module | None = None) -> None:
    """Before anything is written: the model builds, maps a dummy batch to (N, 10) logits, and
    fits --max-params. A user's model that fails names their file and line (``ModelError``)."""
    model = module if module is not None else create_model(config.model)
    user = None if module is not None else model_info(config.model).user
    check_model(model, config.model, user.path if user else None)
    params = count_parameters(model)
    if config.max_params and params > config.max_params:
        raise ConfigError(f"model {config.model} has {params:,} parameters, over --max-params "
                          f"{config.max_params:,}")


def build_model(name: str, device: torch.device, memory_format: torch.memory_format,
                train_images: torch.Tensor | None, module: nn.Module | None = None) -> tuple[nn.Module, float]:
    """The model (``module``, or ``name`` built from the registry) on ``device``; a model with a
    data-dependent init gets it from ``train_images`` (never test images). Returns the seconds
    that init took."""
    model = (module if module is not None else create_model(name)).to(device, memory_format=memory_format)
    if train_images is None or not hasattr(model, "init_from_data"):
        return model, 0.0
    started = time.perf_counter()
    model.init_from_data(normalize(train_images[:DATA_INIT_IMAGES]))
    synchronize(device)
    return model, time.perf_counter() - started


def build_run(config: TrainConfig, data: MNIST, ctx: Context, device: torch.device, fresh: bool = True,
              module: nn.Module | None = None, test_set: bool = True) -> Run:
    """Seed, split, build the model (initialized from data when ``fresh``), wrap it for DDP,
    and make the optimizer and schedule for the planned number of steps."""
    train_x, train_y, val_x, val_y = split_validation(data, config.val_images, config.batch_size)
    torch.manual_seed(config.seed)  # model init (the same on every rank) and dropout
    generator = torch.Generator(device=device).manual_seed(config.seed)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model, init_seconds = build_model(config.model, device, memory_format, train_x if fresh else None, module)
    params = count_parameters(model)
    ema = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema), use_buffers=True)
        if config.ema else None)
    augment_generator, net = generator, model
    if ctx.enabled:  # ranks share the permutation but not the augmentation or dropout draws
        rank_seed = config.seed * 1_000_003 + ctx.rank + 1
        augment_generator = torch.Generator(device=device).manual_seed(rank_seed)
        torch.manual_seed(rank_seed)
        model = DistributedDataParallel(net)
    plan = StepPlan.for_run(config, train_x.shape[0])
    optimizer, schedule = build_optimizer(net, config, plan.total_steps)
    return Run(config=config, ctx=ctx, device=device, data=data, train_x=train_x, train_y=train_y, val_x=val_x,
               val_y=val_y, model=model, net=net, step_fn=torch.compile(model) if config.compile else model,
               ema=ema, optimizer=optimizer, schedule=schedule,
               trainable=[p for p in net.parameters() if p.requires_grad], generator=generator,
               augment_generator=augment_generator, memory_format=memory_format,
               amp_dtype=autocast_dtype(config.amp, device), plan=plan, params=params, init_seconds=init_seconds,
               test_set=test_set)
