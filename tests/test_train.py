import json
import math

import pytest

from tinymnist.config import ConfigError, TrainConfig, list_presets, preset_config
from tinymnist.training import DRY_RUN_STEPS, OutputDirError, train
from tinymnist.device import resolve_device


def tiny(**overrides):
    base = dict(device="cpu", batch_size=64, epochs=1, eval_batch_size=500, target_acc=50.0)
    return preset_config("default", **{**base, **overrides})


def distinct_recipes(epochs: float) -> list[str]:
    """Presets whose settings differ once ``epochs`` is set (default, quick and cnn20k share one):
    each recipe is trained once."""
    seen: dict[str, str] = {}
    for name in list_presets():
        settings = {k: v for k, v in preset_config(name, epochs=epochs).to_dict().items() if k != "preset"}
        seen.setdefault(json.dumps(settings, sort_keys=True), name)
    return list(seen.values())


def record_steps():
    """A list of (images, spec) for every training step, and the ``on_step`` hook that fills it:
    the batch as the loop takes it from the data (uint8, before augmentation) and what its
    augmentation draws from.

    The loop hands each step a fresh tensor (``train_x[idx]``) that nothing writes to
    afterwards, so the images are kept as passed, without a copy."""
    calls = []
    return calls, lambda batch: calls.append((batch.images, batch.augment))


def test_same_seed_same_weights_on_cpu(tmp_path, small_mnist):
    a = train(tiny(seed=7), data=small_mnist, out_dir=tmp_path / "a", progress=False)
    b = train(tiny(seed=7), data=small_mnist, out_dir=tmp_path / "b", progress=False)
    c = train(tiny(seed=8), data=small_mnist, out_dir=tmp_path / "c", progress=False)
    sha = [json.loads(open(r.checkpoint.replace(".safetensors", ".json")).read())["weights_sha256"]
           for r in (a, b, c)]
    untimed = [[{k: v for k, v in h.items() if k != "seconds"} for h in r.history] for r in (a, b)]
    assert sha[0] == sha[1] and untimed[0] == untimed[1]
    assert sha[0] != sha[2]


def test_training_learns_and_writes_its_outputs(tmp_path, small_mnist):
    r = train(tiny(epochs=3), data=small_mnist, out_dir=tmp_path, progress=False)
    losses = [h["train_loss"] for h in r.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert r.test_acc > 80  # 2k images, 3 epochs: well above chance (10%)
    assert r.passed and r.checkpoint.endswith(f"mnist_model_acc{r.test_acc:.2f}.safetensors")
    for name in ("config.json", "metrics.csv", "metrics.json", "curves.png", "confusion.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert TrainConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == tiny(epochs=3)
    sidecar = json.loads((tmp_path / f"mnist_model_acc{r.test_acc:.2f}.json").read_text())
    assert sidecar["test_acc"] == r.test_acc and sidecar["config"]["epochs"] == 3


def test_missing_the_target_is_reported_and_not_named_as_passing(tmp_path, small_mnist):
    r = train(tiny(epochs=0.1, target_acc=99.9), data=small_mnist, out_dir=tmp_path, progress=False)
    assert not r.passed and r.checkpoint.endswith("mnist_model_final.safetensors")


def test_fractional_epochs_and_dry_run(small_mnist):
    steps_per_epoch = 2048 // 64
    r = train(tiny(epochs=0.5), data=small_mnist, progress=False)
    assert r.steps == math.ceil(0.5 * steps_per_epoch) and len(r.history) == 1
    d = train(tiny(dry_run=True, epochs=5), data=small_mnist, progress=False)
    assert d.steps == 3 and not d.passed


def test_ema_is_evaluated_when_enabled(small_mnist):
    r = train(tiny(ema=0.9, epochs=2), data=small_mnist, progress=False)
    plain = train(tiny(epochs=2), data=small_mnist, progress=False)
    assert r.test_acc > 50 and r.history[-1]["test_loss"] != plain.history[-1]["test_loss"]


@pytest.mark.parametrize("name", distinct_recipes(epochs=3))
def test_a_short_run_of_every_preset_lowers_the_training_loss(name, small_mnist):
    # each preset's own model, batch, schedule and augmentation, for 3 epochs of 2,048 images
    config = preset_config(name, device="cpu", epochs=3, target_acc=0.0)
    r = train(config, data=small_mnist, progress=False)
    losses = [h["train_loss"] for h in r.history]
    assert r.model == config.model and len(losses) == 3
    # the slowest learners here end near half their first epoch's loss (cnn2k 0.54x, seednet
    # 0.42x; 1 thread, seed 0)
    assert losses[-1] < 0.9 * losses[0], losses


def test_unwritable_output_directory_fails_before_training(unwritable_dir, small_mnist):
    with pytest.raises(OutputDirError, match="cannot write"):
        train(tiny(), data=small_mnist, out_dir=unwritable_dir, progress=False)


def test_presets_and_config_validation():
    assert {"default", "quick", "speedrun", "seednet"} <= set(list_presets())
    for name in list_presets():
        assert preset_config(name).preset == name
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_config("nope")
    with pytest.raises(ConfigError, match="lr must be > 0"):
        preset_config("default", lr=-1)
    with pytest.raises(ConfigError, match="unknown config field"):
        TrainConfig.from_dict({"nope": 1})
    cfg = preset_config("quick", seed=5)
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ConfigError):
        resolve_device("tpu")


def test_frozen_parameters_stay_out_of_the_optimizer_and_unchanged(small_mnist):
    import torch

    from tinymnist.models import create_model
    from tinymnist.training.optim import build_optimizer

    model = create_model("cnn20k")
    stem = model[0][0].weight
    stem.requires_grad_(False)
    optimizer, _ = build_optimizer(model, tiny(), total_steps=10)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(stem) not in optimized and len(optimized) == sum(1 for p in model.parameters()) - 1
    before = stem.clone()
    x = torch.randn(8, 1, 28, 28)
    model(x).sum().backward()
    optimizer.step()
    assert torch.equal(stem, before)


def test_data_dependent_init_sees_training_images_only(small_mnist, monkeypatch):
    from tinymnist.models import zoo as models

    seen = {}
    original = models.SpeedNet.init_from_data

    def spy(self, images, *args, **kwargs):
        seen["images"] = images.clone()
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(models.SpeedNet, "init_from_data", spy)
    train(tiny(model="speednet", epochs=0.1), data=small_mnist, progress=False)
    from tinymnist.data.augment import normalize
    from tinymnist.training.setup import DATA_INIT_IMAGES

    n = min(DATA_INIT_IMAGES, small_mnist.train_images.shape[0])
    assert seen["images"].shape[0] == n
    assert (seen["images"] == normalize(small_mnist.train_images[:n])).all()


def test_validation_images_are_held_out_of_training_and_reported(small_mnist):
    import torch

    calls, on_step = record_steps()
    config = preset_config("speedrun", device="cpu", epochs=1, batch_size=128, val_images=512)
    result = train(config, data=small_mnist, progress=False, on_step=on_step)
    held_out = small_mnist.train_images[-512:]
    trained_on = torch.cat([images for images, _ in calls])
    assert result.steps == (2048 - 512) // 128
    # no held-out image was trained on (compared as whole images)
    assert not (trained_on.flatten(1)[:, None, :] == held_out.flatten(1)[None, :, :]).all(-1).any()
    assert result.val_acc is not None and 0 < result.val_acc <= 100
    assert "val_acc" in result.history[-1] and result.history[-1]["val_acc"] == result.val_acc
    with pytest.raises(ConfigError, match="val_images"):
        train(preset_config("speedrun", device="cpu", val_images=2000, batch_size=128), data=small_mnist,
              progress=False)


def test_clean_epochs_end_training_without_augmentation(small_mnist):
    from tinymnist.data.augment import NO_AUGMENT

    calls, on_step = record_steps()
    config = tiny(epochs=2, clean_epochs=0.5)
    train(config, data=small_mnist, progress=False, on_step=on_step)
    specs = [spec for _, spec in calls]
    steps_per_epoch = 2048 // 64
    augmented = 2 * steps_per_epoch - steps_per_epoch // 2
    assert len(specs) == 2 * steps_per_epoch
    assert all(s == config.augment_spec() and s.geometric for s in specs[:augmented])
    assert all(s == NO_AUGMENT for s in specs[augmented:])
    with pytest.raises(ConfigError, match="clean_epochs"):
        tiny(clean_epochs=-1)
    # more clean epochs than epochs would train without any augmentation, unasked
    with pytest.raises(ConfigError, match=r"clean_epochs \(2\) must not exceed epochs \(1\)"):
        tiny(epochs=1, clean_epochs=2)
    assert tiny(epochs=2, clean_epochs=2).clean_epochs == 2  # all clean is allowed when asked for


def test_a_dry_run_augments_like_the_start_of_the_real_run(small_mnist):
    # the clean steps are the last of the scheduled run, not of the dry run's few steps
    calls, on_step = record_steps()
    config = tiny(epochs=2, clean_epochs=1, dry_run=True)
    train(config, data=small_mnist, progress=False, on_step=on_step)
    assert len(calls) == DRY_RUN_STEPS
    assert all(spec == config.augment_spec() and spec.geometric for _, spec in calls)
