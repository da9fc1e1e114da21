"""Evaluation, and test-time augmentation (TTA), which is only ever reported beside it."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tinymnist.data.augment import normalize
from tinymnist.inference.evaluate import TTA_SHIFTS, evaluate, predict_logits, shift_images


def test_shift_images_moves_ink_and_loses_what_leaves():
    images = torch.zeros(1, 4, 5, dtype=torch.uint8)
    images[0, 1, 0] = 7  # left edge
    images[0, 3, 4] = 9  # bottom-right corner
    down_right = shift_images(images, 1, 1)
    assert down_right[0, 2, 1] == 7 and down_right.sum() == 7  # the corner pixel left the frame, not wrapped
    up_left = shift_images(images, -1, -1)
    assert up_left[0, 2, 3] == 9 and up_left.sum() == 9
    assert torch.equal(shift_images(images, 0, 0), images)


def test_tta_is_the_log_of_the_mean_softmax_over_the_shifts():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))  # sees where the ink is, so shifts matter
    images = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        expected = torch.stack([model(normalize(shift_images(images, dy, dx))).softmax(1)
                                for dy, dx in TTA_SHIFTS]).mean(0).log()
    got = predict_logits(model, images, batch_size=4, tta=True)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got.softmax(1), predict_logits(model, images).softmax(1), atol=1e-3)
    labels = torch.randint(0, 10, (6,))
    result = evaluate(model, images, labels, tta=True)
    assert result.correct == int((expected.argmax(1) == labels).sum())
    assert result.loss == pytest.approx(nn.functional.nll_loss(expected, labels).item(), abs=1e-5)


class Certain(nn.Module):
    """Says 3 with a logit margin of 400, whatever the image: softmax gives the rest exactly 0."""

    def forward(self, x):
        logits = torch.full((x.shape[0], 10), -200.0)
        logits[:, 3] = 200.0
        return logits


def test_tta_loss_of_a_certain_wrong_answer_is_finite_as_without_tta():
    images, labels = torch.zeros(4, 28, 28, dtype=torch.uint8), torch.tensor([3, 3, 1, 1])
    plain, tta = evaluate(Certain(), images, labels), evaluate(Certain(), images, labels, tta=True)
    assert tta.loss == pytest.approx(plain.loss) and plain.loss == pytest.approx(200.0)  # not log(0)
    assert tta.correct == plain.correct == 2


def test_train_with_tta_reports_it_beside_an_unchanged_headline(small_mnist, caplog):
    from test_train import tiny
    from tinymnist.training import train

    plain = train(tiny(epochs=0.5), data=small_mnist, progress=False)
    with caplog.at_level("INFO", logger="tinymnist"):
        with_tta = train(tiny(epochs=0.5, tta=True, val_images=500), data=small_mnist, progress=False)
    logged = caplog.messages
    assert plain.test_acc_tta is None and plain.val_acc_tta is None
    assert 0 < with_tta.test_acc_tta <= 100 and 0 < with_tta.val_acc_tta <= 100
    assert any("test-time augmentation" in line for line in logged)
    # TTA only evaluates: the same run without held-out images trains and scores exactly as before
    again = train(tiny(epochs=0.5, tta=True), data=small_mnist, progress=False)
    assert again.test_acc == plain.test_acc and again.test_acc_tta is not None


def test_eval_cli_reports_tta_beside_the_plain_accuracy(trained_checkpoint, mnist_dir):
    from test_cli import run_cli

    plain = run_cli("eval", trained_checkpoint, "--data-dir", str(mnist_dir), "--json", "--device", "cpu")
    tta = run_cli("eval", trained_checkpoint, "--data-dir", str(mnist_dir), "--json", "--device", "cpu", "--tta")
    assert plain.returncode == 0 and tta.returncode == 0, plain.stderr + tta.stderr
    plain, tta = json.loads(plain.stdout), json.loads(tta.stdout)
    assert "tta" not in plain and tta["test_acc"] == plain["test_acc"]  # the headline is the plain figure
    assert tta["tta"]["total"] == 10_000 and tta["tta"]["test_acc"] > 98.5
