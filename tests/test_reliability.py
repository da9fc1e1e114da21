"""Reliability: resumable training after SIGKILL, NaN stops, full disks, and loading that never runs code."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_cli import assert_one_line_error, run_cli
from tinymnist.training.state import RESUME_FILE, load_resume_state
from tinymnist.models.checkpoint import CheckpointError, load_checkpoint
from tinymnist.config import preset_config
from tinymnist.training import Interrupted, OutputDirError, train, TrainingError

SHORT = dict(device="cpu", epochs=3, batch_size=128)  # speednet on 2,048 images: three epochs in a few seconds


def short_config(**overrides):
    return preset_config("speedrun", **{**SHORT, **overrides})


def weights(path) -> dict:
    return load_checkpoint(path)[0].state_dict()


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------- resume

@pytest.mark.parametrize("stop_at_step", [16, 23])  # an epoch boundary (16 steps per epoch), mid-epoch
def test_ctrl_c_then_resume_gives_the_same_weights_bitwise(small_mnist, tmp_path, stop_at_step):
    whole = train(short_config(), data=small_mnist, out_dir=tmp_path / "whole", progress=False)
    calls = {"n": 0}

    def ctrl_c_at_step(batch):  # a Ctrl-C arriving during step ``stop_at_step``
        calls["n"] += 1
        if calls["n"] == stop_at_step:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "stopped"
    with pytest.raises(Interrupted, match="SIGINT"):
        train(short_config(), data=small_mnist, out_dir=out, progress=False, on_step=ctrl_c_at_step)
    assert load_resume_state(out)["step"] == stop_at_step  # the step under way was finished, then saved
    resumed = train(short_config(), data=small_mnist, out_dir=out, progress=False, resume=True)
    assert resumed.test_acc == whole.test_acc and resumed.steps == whole.steps
    assert_same_weights(weights(whole.checkpoint), weights(resumed.checkpoint))


KILL_SCRIPT = """
import logging
import sys
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # the library's log lines
from tinymnist.config import preset_config
from tinymnist.data import MNIST, load_mnist
from tinymnist.training import train
full = load_mnist(None, fetch=False)
data = MNIST(full.train_images[:8192], full.train_labels[:8192], full.test_images, full.test_labels)
config = preset_config("speedrun", device="cpu", epochs=4, batch_size=128)
train(config, data=data, out_dir=sys.argv[1], progress=False, resume=len(sys.argv) > 2)
"""


@pytest.mark.slow
def test_sigkill_at_a_random_point_then_resume_matches_an_uninterrupted_run(mnist, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}

    def run(out, *extra):
        return subprocess.run([sys.executable, str(script), str(out), *extra], capture_output=True, text=True,
                              env=env, timeout=600)

    reference = run(tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    state = out / RESUME_FILE
    deadline = time.monotonic() + 300
    while not state.exists():  # the first epoch's state is on disk...
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(random.Random().uniform(0.0, 1.5))  # ...then a kill at a random point after it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not list(out.glob("mnist_model_*")), "the killed run must not have finished"
    resumed = run(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    (ref_model,) = (tmp_path / "ref").glob("mnist_model_*.safetensors")
    (res_model,) = out.glob("mnist_model_*.safetensors")
    assert_same_weights(weights(ref_model), weights(res_model))
    ref_metrics = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    res_metrics = json.loads((out / "metrics.json").read_text())
    for a, b in zip(ref_metrics, res_metrics, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}


def test_sigterm_saves_a_mid_epoch_state_and_resume_finishes_it(mnist, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tinymnist", "train", "--preset", "speedrun", "--device", "cpu",
                             "--epochs", "2", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("training"), line  # the loop is about to start...
    time.sleep(1.5)  # ...and some steps of epoch 1 are done
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    state = load_resume_state(out)
    assert state["partial"] is not None or state["epoch"] > 1
    resumed = run_cli("train", "--resume", str(out), "--quiet", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == 2 * (60_000 // 256)


# ---------------------------------------------------------------- faults

def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_state(small_mnist, tmp_path, monkeypatch):
    import tinymnist.training.step as train_module

    calls = {"n": 0}
    real = train_module.F.cross_entropy

    def poisoned(*args, **kwargs):  # epoch 2 of 16 steps turns the loss into NaN
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 20 else loss

    monkeypatch.setattr(train_module.F, "cross_entropy", poisoned)
    with pytest.raises(TrainingError, match="loss became nan"):
        train(short_config(), data=small_mnist, out_dir=tmp_path, progress=False)
    state = load_resume_state(tmp_path)  # epoch 1's state, still whole
    assert state["epoch"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not list(tmp_path.glob("mnist_model_*"))


def test_a_full_disk_is_a_clear_error_and_leaves_no_half_file(small_mnist, tmp_path, monkeypatch):
    import tinymnist.fileio as fileio

    state, real_fsync, kept = tmp_path / RESUME_FILE, os.fsync, {}

    def full_once_a_state_is_saved(fd):  # the disk fills up in the second epoch
        if state.exists():
            kept.setdefault("state", state.read_bytes())
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", full_once_a_state_is_saved)
    with pytest.raises(OutputDirError, match="No space left on device"):
        train(short_config(epochs=2), data=small_mnist, out_dir=tmp_path, progress=False)
    assert state.read_bytes() == kept["state"]  # the first epoch's state is intact
    assert not list(tmp_path.glob(".*.tmp")), "a half-written temporary file was left behind"


def test_a_failed_model_save_is_a_clear_error_and_resume_finishes_the_run(small_mnist, tmp_path, monkeypatch):
    import tinymnist.training.loop as training

    real_save_run = training.save_run

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(training, "save_run", full)
    with pytest.raises(OutputDirError, match="No space left on device"):
        train(short_config(epochs=1), data=small_mnist, out_dir=tmp_path, progress=False)
    assert not list(tmp_path.glob("mnist_model_*"))
    monkeypatch.setattr(training, "save_run", real_save_run)  # space again: the saved state finishes it
    result = train(short_config(epochs=1), data=small_mnist, out_dir=tmp_path, progress=False, resume=True)
    assert result.checkpoint and list(tmp_path.glob("mnist_model_*.safetensors"))


def test_an_unwritable_output_directory_is_a_one_line_error(unwritable_dir):
    assert_one_line_error(run_cli("train", "--dry-run", "--out", str(unwritable_dir)), "cannot write")


# ---------------------------------------------------------------- loading never runs code

class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_resume_state_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": "tinymnist-resume-1", "x": Payload(marker)}, tmp_path / RESUME_FILE)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_resume_state(tmp_path)
    assert not marker.exists()
    (tmp_path / "config.json").write_text(json.dumps(short_config().to_dict()))
    proc = run_cli("train", "--resume", str(tmp_path))
    assert_one_line_error(proc, "refused to load")
    assert not marker.exists()


def test_a_pickle_posing_as_a_model_is_refused(trained_checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    fake = tmp_path / "mnist_model_acc99.99.safetensors"
    torch.save(Payload(marker), fake)
    sidecar = json.loads(Path(trained_checkpoint).with_suffix(".json").read_text())
    sidecar.pop("weights_sha256", None)
    fake.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(fake)
    assert_one_line_error(run_cli("eval", str(fake)), "not a safetensors file")
    assert not marker.exists()
