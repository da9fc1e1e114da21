"""`tinymnist predict` and `tinymnist report` through the command line."""

from __future__ import annotations

import json

from PIL import Image

from helpers import on_canvas, render
from test_cli import assert_one_line_error, run_cli
from test_preprocess import BAD_IMAGES


def test_predict_answers_good_images_and_reports_bad_ones(trained_checkpoint, mnist_arrays, tmp_path):
    formats = ["png", "jpg", "bmp", "gif", "tiff"]
    images, labels = mnist_arrays["test_images"][:5], mnist_arrays["test_labels"][:5].tolist()
    paths = []
    for i, image in enumerate(images):
        path = tmp_path / f"digit{i}.{formats[i]}"
        on_canvas(render(image, 300), (500, 400), (40 * i, 50)).convert("RGB").save(path)
        paths.append(str(path))
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")
    bad = [str(tmp_path / "notes.png"), str(tmp_path / "blank.png"), str(tmp_path / "missing.png"), str(tmp_path)]
    for name, (make, _) in sorted(BAD_IMAGES.items()):  # bomb, truncated, zero bytes, 1x1, animated, ...
        (tmp_path / f"bad-{name}.png").write_bytes(make())
        bad.append(str(tmp_path / f"bad-{name}.png"))
    previews = tmp_path / "seen"
    proc = run_cli("predict", *paths, *bad, "--checkpoint", trained_checkpoint, "--json",
                   "--show-preprocessed", str(previews))
    assert proc.returncode == 2  # some images could not be read...
    result = json.loads(proc.stdout)  # ...and the others were still answered
    assert [p["label"] for p in result["predictions"]] == labels
    assert [p["path"] for p in result["predictions"]] == paths
    assert all(len(p["probabilities"]) == 10 for p in result["predictions"])
    assert [e["path"] for e in result["errors"]] == bad
    for error, (name, (_, fragment)) in zip(result["errors"][4:], sorted(BAD_IMAGES.items())):
        assert fragment.lower() in error["error"].lower(), (name, error)
    assert all(e["error"] for e in result["errors"])
    assert sorted(p.name for p in previews.iterdir()) == [f"digit{i}.png" for i in range(5)]
    assert Image.open(previews / "digit0.png").size == (28, 28)


def test_predict_text_output_shows_top_three(trained_checkpoint, mnist_arrays, tmp_path):
    path = tmp_path / "d.png"
    render(mnist_arrays["test_images"][0], 200).save(path)
    proc = run_cli("predict", str(path), "--checkpoint", trained_checkpoint)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith(f"{path}: {int(mnist_arrays['test_labels'][0])}") and line.count("%") == 3


def test_predict_without_any_saved_model_is_a_one_line_error(tmp_path):
    from test_cli import assert_one_line_error

    (tmp_path / "d.png").write_bytes(b"x")
    assert_one_line_error(run_cli("predict", "d.png", cwd=tmp_path), "no saved model")


def test_report_writes_the_three_figures(trained_checkpoint, tmp_path):
    proc = run_cli("report", trained_checkpoint, "--out", str(tmp_path / "r"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert set(summary["files"]) == {"confusion", "per_class", "misclassified"}
    for path in summary["files"].values():
        assert Image.open(path).format == "PNG"
    assert summary["errors"] == round((100 - summary["test_acc"]) * 100)
    assert summary["shown_misclassified"] == min(summary["errors"], 100)


def test_report_into_an_unwritable_place_is_one_line(trained_checkpoint, unwritable_dir):
    assert_one_line_error(run_cli("report", trained_checkpoint, "--out", str(unwritable_dir)),
                          "cannot write the report to")


def test_previews_into_an_unwritable_place_are_one_line(trained_checkpoint, tmp_path, unwritable_dir):
    digit = Image.new("L", (56, 56), 255)
    digit.paste(0, (24, 8, 32, 48))  # a stroke of ink: a "1"
    digit.save(tmp_path / "one.png")
    assert_one_line_error(run_cli("predict", str(tmp_path / "one.png"), "--checkpoint", trained_checkpoint,
                                  "--show-preprocessed", str(unwritable_dir)), "cannot write the previews to")
