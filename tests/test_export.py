"""Export: the ONNX file and the torch.export program give PyTorch's answers on the whole test set."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from test_cli import run_cli
from tinymnist.data.augment import MNIST_MEAN, MNIST_STD
from tinymnist.inference.export import OPSET, export_onnx, export_pt2, onnx_runner, pt2_runner, verify_export


@pytest.fixture(scope="module")
def onnx_file(trained_model, tmp_path_factory):
    model, meta = trained_model
    return export_onnx(model, meta, tmp_path_factory.mktemp("export") / "model.onnx")


def test_onnx_file_is_self_contained_with_pinned_opset_and_metadata(onnx_file, trained_model):
    proto = onnx.load(str(onnx_file))
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    assert not [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    (images,) = proto.graph.input
    dims = [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [1, 28, 28]  # a named, dynamic batch axis
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["normalization"]) == {"mean": MNIST_MEAN, "std": MNIST_STD}
    assert json.loads(meta["labels"]) == [str(d) for d in range(10)]
    assert meta["tinymnist.model"] == trained_model[1]["model"]


def test_onnx_matches_pytorch_on_the_whole_test_set(onnx_file, trained_model, mnist):
    model, meta = trained_model
    report = verify_export(onnx_runner(onnx_file), model, mnist)
    assert report["ok"], report
    assert report["max_abs_logit_diff"] <= 1e-4
    assert report["test_acc_export"] == report["test_acc_torch"] == meta["test_acc"]
    assert report["test_images"] == 10_000


@pytest.mark.parametrize("batch", [1, 3, 257])
def test_onnx_batch_axis_is_dynamic(onnx_file, batch):
    logits = onnx_runner(onnx_file)(np.random.default_rng(0).standard_normal((batch, 1, 28, 28)))
    assert logits.shape == (batch, 10)


def test_pt2_program_matches_pytorch(trained_model, mnist, tmp_path):
    model, meta = trained_model
    path = export_pt2(model, meta, tmp_path / "model.pt2")
    report = verify_export(pt2_runner(path), model, mnist)
    assert report["ok"] and report["test_acc_export"] == meta["test_acc"]


def test_export_cli_reports_its_own_check_as_json(trained_checkpoint, tmp_path):
    out = tmp_path / "m.onnx"
    proc = run_cli("export", trained_checkpoint, "--format", "onnx", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # one JSON object: the exporter's chatter stays off stdout
    assert report["output"] == str(out) and out.is_file()
    assert report["verification"]["ok"] is True


def test_export_of_a_missing_checkpoint_is_a_one_line_error(tmp_path):
    from test_cli import assert_one_line_error

    assert_one_line_error(run_cli("export", str(tmp_path / "nope.safetensors")), "no checkpoint")
