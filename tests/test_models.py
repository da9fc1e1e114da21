import pytest
import torch

from tinymnist.models import (PARAM_BUDGET, UnknownModelError, count_parameters, create_model,
                              list_models, model_info)


@pytest.mark.parametrize("name", list_models())
def test_every_model_shape_backward_and_budget(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    logits = model(x)
    assert logits.shape == (4, 10)
    logits.logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())
    params = count_parameters(model)
    assert params < model_info(name).budget, f"{name}: {params} >= budget {model_info(name).budget}"


@pytest.mark.parametrize("name", list_models())
def test_every_model_in_channels_last_matches(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(3, 1, 28, 28)
    reference = model(x)
    model = model.to(memory_format=torch.channels_last)
    assert torch.allclose(model(x.contiguous(memory_format=torch.channels_last)), reference, atol=1e-5)


def test_project_budget_holds_for_the_default_and_seednet():
    assert model_info("cnn20k").budget <= PARAM_BUDGET
    assert count_parameters(create_model("cnn20k")) < 20_000
    assert count_parameters(create_model("seednet")) == 11_058  # the job's original net, exactly


def test_models_use_batchnorm_and_dropout():
    modules = {type(m).__name__ for m in create_model("cnn20k").modules()}
    assert {"BatchNorm2d", "Dropout"} <= modules


def test_unknown_model_names_the_choices():
    with pytest.raises(UnknownModelError, match="unknown model 'nope'.*cnn20k"):
        create_model("nope")


def test_speednet_stem_whitens_training_patches(small_mnist):
    from tinymnist.data.augment import normalize

    model = create_model("speednet")
    images = normalize(small_mnist.train_images[:1000])
    model.init_from_data(images)
    conv = model[0][0]
    half = conv.out_channels // 2
    assert torch.equal(conv.weight[:half], -conv.weight[half:])  # both signs of each filter
    responses = torch.nn.functional.conv2d(images, conv.weight, stride=2, padding=1)
    variances = responses[:, :half].transpose(0, 1).flatten(1).var(1)
    assert variances.min() > 0.3 and variances.max() < 1.1  # whitened: about unit variance
    flat = responses[:, :half].transpose(0, 1).flatten(1)
    correlation = torch.corrcoef(flat) - torch.eye(half)
    assert correlation.abs().max() < 0.1  # and decorrelated


def test_max_blur_pool_halves_even_sizes_and_is_steadier_under_one_pixel_shifts():
    from tinymnist.models import MaxBlurPool

    pool = MaxBlurPool(3)
    assert list(pool.parameters()) == [] and "blur" not in pool.state_dict()  # a constant, not a weight
    for side in (28, 14):
        assert pool(torch.randn(2, 3, side, side)).shape == (2, 3, side // 2, side // 2)
    assert torch.allclose(pool(torch.full((1, 3, 14, 14), 2.5)), torch.full((1, 3, 7, 7), 2.5))
    # what it is for: moving the input by one pixel moves the pooled map less than a plain max-pool's
    torch.manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.randn(64, 3, 30, 30), 3, 1)  # smooth-ish 28x28 maps
    moved = torch.roll(x, 1, dims=3)
    plain = torch.nn.MaxPool2d(2)
    change = lambda f: (f(moved)[..., 2:-2, 2:-2] - f(x)[..., 2:-2, 2:-2]).abs().mean()  # noqa: E731
    assert change(pool) < 0.8 * change(plain)


@pytest.mark.parametrize("name", list_models())
def test_every_model_exports_to_onnx_with_the_same_answers(name, tmp_path):
    import numpy as np

    from tinymnist.inference.export import export_onnx, onnx_runner

    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(5, 1, 28, 28)
    path = export_onnx(model, {"model": name}, tmp_path / f"{name}.onnx")
    assert np.allclose(onnx_runner(path)(x.numpy()), model(x).detach().numpy(), atol=1e-4)
