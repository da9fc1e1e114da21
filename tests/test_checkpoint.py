import json

import pytest
import torch
from safetensors.torch import save_file

from tinymnist.models.checkpoint import (CheckpointError, find_latest_checkpoint, load_checkpoint, read_metadata,
                                         save_checkpoint, sidecar_path)
from tinymnist.inference.evaluate import predict_logits
from tinymnist.models import create_model, layer_signature


def edit_sidecar(path, edit) -> None:
    """Rewrite the sidecar of ``path`` with ``edit`` (which changes the dict in place)."""
    meta = json.loads(sidecar_path(path).read_text())
    edit(meta)
    sidecar_path(path).write_text(json.dumps(meta))


def trained_like(name="cnn20k"):
    torch.manual_seed(0)
    model = create_model(name)
    # perturb BatchNorm statistics so that buffers matter in the round trip
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_round_trip_gives_the_same_predictions(tmp_path, small_mnist):
    model = trained_like()
    path = save_checkpoint(model, tmp_path / "mnist_model_acc99.00.safetensors", model_name="cnn20k",
                           metadata={"test_acc": 99.0, "seed": 3})
    loaded, meta = load_checkpoint(path)
    assert meta["model"] == "cnn20k" and meta["seed"] == 3 and meta["params"] > 0
    assert meta["normalization"] == {"mean": 0.1307, "std": 0.3081}
    images = small_mnist.test_images[:200]
    assert torch.equal(predict_logits(model, images), predict_logits(loaded, images))
    # the sidecar, the run directory and the weights path all load the same model
    assert load_checkpoint(sidecar_path(path))[1] == meta
    assert load_checkpoint(tmp_path)[1] == meta


def test_compiled_wrapper_is_saved_without_prefix(tmp_path):
    model = trained_like()
    wrapper = torch.nn.Module()
    wrapper._orig_mod = model  # what torch.compile's OptimizedModule looks like
    path = save_checkpoint(wrapper, tmp_path / "m.safetensors", model_name="cnn20k", metadata={})
    loaded, _ = load_checkpoint(path)
    assert set(loaded.state_dict()) == set(model.state_dict())


def test_missing_checkpoint_and_missing_sidecar(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "bare.safetensors")
    with pytest.raises(CheckpointError, match="no sidecar"):
        load_checkpoint(tmp_path / "bare.safetensors")


def test_weights_that_do_not_fit_the_model_name_the_tensor(tmp_path):
    path = save_checkpoint(trained_like("seednet"), tmp_path / "m.safetensors", model_name="seednet", metadata={})
    edit_sidecar(path, lambda meta: (meta.update(model="cnn20k"), meta.pop("weights_sha256")))
    with pytest.raises(CheckpointError, match="another layout of model cnn20k"):
        load_checkpoint(path)
    edit_sidecar(path, lambda meta: meta.pop("layers"))  # as before the layer signature: the tensors decide
    with pytest.raises(CheckpointError, match="tensor '.*'"):
        load_checkpoint(path)


def test_tampered_weights_are_refused(tmp_path):
    path = save_checkpoint(trained_like(), tmp_path / "m.safetensors", model_name="cnn20k", metadata={})
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)


def test_bad_sidecar_json(tmp_path):
    path = save_checkpoint(trained_like(), tmp_path / "m.safetensors", model_name="cnn20k", metadata={})
    sidecar_path(path).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_metadata(path)


def test_find_latest_checkpoint(tmp_path):
    import os

    with pytest.raises(CheckpointError, match="no saved model"):
        find_latest_checkpoint(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    older = save_checkpoint(trained_like(), tmp_path / "a" / "mnist_model_acc99.10.safetensors",
                            model_name="cnn20k", metadata={})
    newer = save_checkpoint(trained_like(), tmp_path / "b" / "mnist_model_acc99.20.safetensors",
                            model_name="cnn20k", metadata={})
    os.utime(older, (1, 1))
    assert find_latest_checkpoint(tmp_path) == newer


def relu_layout(name):
    """cnn2k's and cnn8k's layouts before they moved to SiLU (same tensors, other activations)."""
    from tinymnist import models
    from tinymnist.models import zoo

    if name == "cnn2k":
        return lambda: torch.nn.Sequential(
            models.conv_bn(1, 8), models.separable_conv_bn(8, 16, pool=True),
            models.separable_conv_bn(16, 24, pool=True), models.separable_conv_bn(24, 24),
            models.Head(24, dropout=0.05))
    return lambda: zoo.pooled_cnn(8, 16, 16, 16)  # cnn8k, with dropout 0.05 before the head


@pytest.mark.parametrize("name", ["cnn2k", "cnn8k"])
def test_weights_from_an_older_layout_of_the_model_are_refused(tmp_path, monkeypatch, name):
    # the activation changed from ReLU to SiLU with the same tensors: without the saved layer
    # signature, old weights would load and silently predict through the new layout
    from tinymnist import models
    from tinymnist.models import registry

    old_info = models.ModelInfo(name, relu_layout(name), models.model_info(name).budget, "the old layout")
    with monkeypatch.context() as patch:
        patch.setitem(registry._REGISTRY, name, old_info)
        path = save_checkpoint(trained_like(name), tmp_path / "old.safetensors", model_name=name, metadata={})
        assert "ReLU" in read_metadata(path)["layers"]
        load_checkpoint(path)  # the layout it was saved from loads it
    with pytest.raises(CheckpointError, match=f"another layout of model {name}"):
        load_checkpoint(path)
    # a sidecar from before the signature existed is from the ReLU layout: refused too
    edit_sidecar(path, lambda meta: meta.pop("layers"))
    with pytest.raises(CheckpointError, match=f"older layout of model {name}"):
        load_checkpoint(path)
    fresh = save_checkpoint(trained_like(name), tmp_path / "new.safetensors", model_name=name, metadata={})
    assert "SiLU" in read_metadata(fresh)["layers"] and load_checkpoint(fresh)[1]["model"] == name


def test_sidecars_without_a_layer_signature_still_load_for_models_whose_layout_never_changed(tmp_path):
    # their tensors are checked by shape
    path = save_checkpoint(trained_like("cnn20k"), tmp_path / "c20.safetensors", model_name="cnn20k", metadata={})
    edit_sidecar(path, lambda meta: meta.pop("layers"))
    assert load_checkpoint(path)[1]["model"] == "cnn20k"


def test_layer_signature_records_dilation_and_eps_only_where_they_differ_from_the_defaults():
    from torch import nn

    plain = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4))
    dilated = nn.Sequential(nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4), nn.BatchNorm2d(4))
    loose = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4, eps=1e-3))
    assert layer_signature(plain) == "Conv2d(stride=(1, 1),padding=(1, 1),groups=4) BatchNorm2d"
    assert "dilation=(2, 2)" in layer_signature(dilated)
    assert "BatchNorm2d(eps=0.001)" in layer_signature(loose)


def test_dropout_is_not_part_of_the_layout_and_older_signatures_that_list_it_still_load(tmp_path):
    # cnn2k lost the dropout before its head: weights trained with it run the same without it
    path = save_checkpoint(trained_like("cnn2k"), tmp_path / "m.safetensors", model_name="cnn2k", metadata={})
    assert "Dropout" not in read_metadata(path)["layers"]
    # as saved before 2026-11-29
    edit_sidecar(path, lambda meta: meta.update(layers=meta["layers"].replace(" Linear", " Dropout Linear")))
    assert load_checkpoint(path)[1]["model"] == "cnn2k"
    # the rest is still compared
    edit_sidecar(path, lambda meta: meta.update(layers=meta["layers"].replace("SiLU", "ReLU", 1)))
    with pytest.raises(CheckpointError, match="another layout"):
        load_checkpoint(path)


def test_cnn8k_weights_from_before_its_anti_aliased_pools_are_refused(tmp_path, monkeypatch):
    # the same tensors as today's cnn8k: only the pools differ, which no weight shape shows
    from tinymnist import models
    from tinymnist.models import registry, zoo

    plain_pools = models.ModelInfo("cnn8k", lambda: zoo.pooled_cnn(8, 16, 16, 16, act=torch.nn.SiLU, dropout=0.0),
                                   models.model_info("cnn8k").budget, "SiLU, plain max-pools")
    with monkeypatch.context() as patch:
        patch.setitem(registry._REGISTRY, "cnn8k", plain_pools)
        path = save_checkpoint(trained_like("cnn8k"), tmp_path / "old.safetensors", model_name="cnn8k", metadata={})
        assert "MaxBlurPool" not in read_metadata(path)["layers"]
    with pytest.raises(CheckpointError, match="another layout of model cnn8k"):
        load_checkpoint(path)
    fresh = save_checkpoint(trained_like("cnn8k"), tmp_path / "new.safetensors", model_name="cnn8k", metadata={})
    assert "MaxBlurPool" in read_metadata(fresh)["layers"] and load_checkpoint(fresh)[1]["model"] == "cnn8k"
