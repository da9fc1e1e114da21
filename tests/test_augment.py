import math

import torch

from tinymnist.data.augment import (MNIST_MEAN, MNIST_STD, NO_AUGMENT, AugmentSpec, affine_matrices, augment_batch,
                                    erase_mask, normalize)

STRONG = AugmentSpec(rotate_deg=15, translate=0.1, scale=0.1, shear_deg=5, erase_prob=0.5)


def test_disabled_augmentation_is_normalization_only(small_mnist):
    images = small_mnist.train_images[:64]
    out = augment_batch(images, NO_AUGMENT, torch.Generator().manual_seed(0))
    assert torch.equal(out, normalize(images))
    expected = (images.float() / 255 - MNIST_MEAN) / MNIST_STD
    assert torch.allclose(out[:, 0], expected)


def test_shape_and_dtype_are_kept(small_mnist):
    images = small_mnist.train_images[:32]
    out = augment_batch(images, STRONG, torch.Generator().manual_seed(0))
    assert out.shape == (32, 1, 28, 28) and out.dtype == torch.float32
    assert augment_batch(images, STRONG, torch.Generator().manual_seed(0), dtype=torch.float64).dtype == torch.float64


def test_deterministic_under_a_seed_and_different_across_seeds(small_mnist):
    images = small_mnist.train_images[:32]
    a = augment_batch(images, STRONG, torch.Generator().manual_seed(1))
    b = augment_batch(images, STRONG, torch.Generator().manual_seed(1))
    c = augment_batch(images, STRONG, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_each_image_gets_its_own_parameters():
    theta = affine_matrices(256, STRONG, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert theta.shape == (256, 2, 3)
    assert len({tuple(t.flatten().tolist()) for t in theta}) == 256
    # the same digit repeated comes out differently in each slot
    digit = torch.zeros(8, 28, 28, dtype=torch.uint8)
    digit[:, 6:22, 12:16] = 255
    out = augment_batch(digit, STRONG, torch.Generator().manual_seed(0))
    assert len({out[i].sum().item() for i in range(8)}) == 8


def test_rotation_bound_is_respected():
    spec = AugmentSpec(rotate_deg=15, translate=0, scale=0, shear_deg=0)
    theta = affine_matrices(4096, spec, torch.Generator().manual_seed(0), torch.device("cpu"))
    angles = torch.atan2(theta[:, 1, 0], theta[:, 0, 0]).abs()
    assert angles.max() <= math.radians(15) + 1e-6
    assert angles.max() > math.radians(14)  # and the range is actually used


def test_order_is_kept_so_labels_stay_aligned(small_mnist):
    # light augmentation: every output is still closest to its own input image
    images = small_mnist.train_images[:64]
    out = augment_batch(images, AugmentSpec(rotate_deg=5, translate=0.0, scale=0.03, shear_deg=2),
                        torch.Generator().manual_seed(0)).flatten(1)
    reference = normalize(images).flatten(1)
    nearest = torch.cdist(out, reference).argmin(1)
    assert torch.equal(nearest, torch.arange(64))


def test_erase_mask_respects_probability_and_area():
    spec = AugmentSpec(erase_prob=0.5, erase_area=(0.05, 0.1))
    mask = erase_mask(2000, 28, spec, torch.Generator().manual_seed(0), torch.device("cpu"))
    erased = mask.flatten(1).float().mean(1)
    hit = erased > 0
    assert 0.4 < hit.float().mean() < 0.6
    assert erased[hit].max() <= 0.2 and erased[hit].min() >= 0.01


def test_erased_pixels_are_background(small_mnist):
    images = torch.full((16, 28, 28), 255, dtype=torch.uint8)
    out = augment_batch(images, AugmentSpec(0, 0, 0, 0, erase_prob=1.0), torch.Generator().manual_seed(0))
    background = (0 - MNIST_MEAN) / MNIST_STD
    assert ((out - background).abs() < 1e-6).flatten(1).any(1).all()


def test_affine_matrices_invert_the_forward_map():
    spec = AugmentSpec(rotate_deg=15, translate=0.1, scale=0.1, shear_deg=5)
    theta = affine_matrices(64, spec, torch.Generator().manual_seed(0), torch.device("cpu")).double()
    inv = theta[:, :, :2]
    forward = torch.linalg.inv(inv)  # the map the augmentation applies to the image
    scales = torch.linalg.det(forward).sqrt()
    assert ((scales > 0.9 - 1e-6) & (scales < 1.1 + 1e-6)).all()
    # a pure rotation (no shear, scale or shift) is orthonormal, and its inverse its transpose
    rot = affine_matrices(8, AugmentSpec(15, 0, 0, 0), torch.Generator().manual_seed(1), torch.device("cpu"))
    assert torch.allclose(rot[:, :, :2] @ rot[:, :, :2].transpose(1, 2), torch.eye(2).expand(8, 2, 2), atol=1e-6)
    assert torch.allclose(rot[:, :, 2], torch.zeros(8, 2))


def test_normalize_array_is_normalize_in_numpy():
    # the onnxruntime paths (serve, bench infer) normalize with numpy; the model was trained on `normalize`
    import numpy as np

    from tinymnist.data.augment import normalize, normalize_array

    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    ours = normalize_array(images.numpy())
    assert ours.dtype == np.float32 and ours.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(ours, normalize(images).numpy(), rtol=0, atol=1e-6)
    assert ours.min() < -0.4 and ours.max() > 2.8  # 0 and 255 map to -0.42 and 2.82
