"""Data-parallel training under torchrun (gloo on CPU) and multi-run sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from test_cli import run_cli
from tinymnist.config import preset_config
from tinymnist.training.distributed import context_from_env, shard
from tinymnist.training import train


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("n, batch", [(1000, 64), (960, 64), (1000, 7)])
def test_shards_cover_each_index_of_the_epoch_exactly_once(world_size, n, batch):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    steps = n // batch  # the ragged tail is dropped, as in training
    seen = []
    for step in range(steps):
        global_batch = order[step * batch:(step + 1) * batch]
        parts = [shard(global_batch, rank, world_size) for rank in range(world_size)]
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
        seen += [int(i) for p in parts for i in p]
    assert len(seen) == len(set(seen)) == steps * batch  # no index twice
    assert set(seen) == set(order[:steps * batch].tolist())
    if n % batch == 0:
        assert set(seen) == set(range(n))  # the whole training set


def test_without_torchrun_nothing_distributed_happens(small_mnist, monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not context_from_env().enabled
    result = train(preset_config("speedrun", device="cpu", dry_run=True), data=small_mnist, progress=False)
    assert result.world_size == 1 and not dist.is_initialized()


def torchrun_train(*args: str, timeout: int) -> subprocess.CompletedProcess:
    """`tinymnist train --preset speedrun --device cpu ARGS` as two gloo ranks under torchrun."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "tinymnist", "train", "--preset", "speedrun", "--device", "cpu", *args],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=timeout)


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun_match_one_process(mnist, tmp_path):
    single = train(preset_config("speedrun", device="cpu"), data=mnist, progress=False)
    out = tmp_path / "ddp"
    proc = torchrun_train("--out", str(out), "--json", "--quiet", timeout=600)
    # the ranks' own messages come first, torchrun's report of their failure last
    assert proc.returncode == 0, proc.stderr[:3000] + "\n[...]\n" + proc.stderr[-1000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout  # rank 0 alone reports
    result = json.loads(lines[0])
    assert result["world_size"] == 2 and result["steps"] == single.steps
    assert abs(result["test_acc"] - single.test_acc) <= 0.3, (result["test_acc"], single.test_acc)
    # rank 0 alone wrote: one config, one metrics file with one row per epoch, one model
    names = sorted(p.name for p in out.iterdir())
    assert len([n for n in names if n.startswith("mnist_model_")]) == 2  # .safetensors + .json
    assert names.count("config.json") == 1 and "resume.pt" in names
    assert len(json.loads((out / "metrics.json").read_text())) == 1
    assert not list(out.glob(".*.tmp"))


def test_a_refused_out_dir_under_torchrun_stops_every_rank_without_a_traceback(mnist, tmp_path):
    # rank 0 alone checks --out; before, rank 1 waited in a collective and died there with
    # gloo's "Connection closed by peer" traceback once rank 0 had exited
    out = tmp_path / "taken"
    out.mkdir()
    (out / "config.json").write_text("{}")
    proc = torchrun_train("--dry-run", "--out", str(out), "--quiet", timeout=300)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("tinymnist: error:")]
    refused = [line for line in ours if "already holds a run" in line]  # rank 0's, first or second
    assert len(refused) == 1 and refused[0].endswith(
        "; pass another --out (or `--resume " + str(out) + "` to continue a stopped one); nothing was written")
    # rank 1 says why it stops in one line too (unless torchrun ended it first, once rank 0 failed)
    assert [line for line in ours if line not in refused] in (
        [], ["tinymnist: error: rank 0 stopped with an error (its message is above); rank 1 stops too"]), proc.stderr
    assert "exitcode  : 2" in proc.stderr  # rank 0: bad input
    assert "[rank1]" not in proc.stderr and "Connection closed" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json"] and (out / "config.json").read_text() == "{}"


def test_sweep_runs_presets_and_seeds_in_parallel_and_collects_them(tmp_path):
    proc = run_cli("sweep", "--presets", "quick,speedrun", "--seeds", "2", "--parallel", "2", "--out",
                   str(tmp_path), "--train-args", "--dry-run --device cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [(r["preset"], r["seed"]) for r in report["runs"]] == [("quick", 0), ("quick", 1), ("speedrun", 0),
                                                                 ("speedrun", 1)]
    assert all(r["exit_code"] == 0 and r["result"]["seed"] == r["seed"] for r in report["runs"])
    assert [s["runs"] for s in report["summary"]] == [2, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quick-seed0", "quick-seed1", "speedrun-seed0",
                                                         "speedrun-seed1"]
    # the same sweep again into the same folder would overwrite every run: refused up front
    again = run_cli("sweep", "--presets", "quick,speedrun", "--seeds", "2", "--out", str(tmp_path),
                    "--train-args", "--dry-run --device cpu")
    assert again.returncode == 2 and "already holds a run (4 of this sweep's run directories do)" in again.stderr


def test_a_failing_run_fails_the_sweep_but_not_the_others(tmp_path):
    # a failure that only the run itself can find: the device it runs on (mps exists on no Linux
    # machine). Holding out too many images, this test's former failure, is now refused by the
    # settings' own check before any run starts (below)
    proc = run_cli("sweep", "--presets", "speedrun", "--seeds", "2", "--out", str(tmp_path),
                   "--train-args", "--dry-run --device mps", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert all("error" in r for r in report["runs"]) and report["summary"][0]["failed"] == 2
    assert all("MPS is not available" in r["error"] for r in report["runs"])


@pytest.mark.parametrize("train_args,message", [
    ("--dry-run --lr -1", "lr must be > 0"),
    ("--dry-run --val-images 59990", "leaves fewer training images than one batch"),
    ("--lr=-1", "lr must be > 0"),  # one token that starts with a dash is still --train-args' value
    ("--dry-run --seed 5", "--train-args must not set --seed: the sweep sets it for every run"),
    ("--out elsewhere --preset quick", "must not set --preset, --out: the sweep sets them"),
])
def test_sweep_refuses_bad_train_args_before_any_run(tmp_path, train_args, message):
    out = tmp_path / "sweep"
    proc = run_cli("sweep", "--presets", "speedrun,quick", "--seeds", "2", "--out", str(out),
                   "--train-args", train_args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()  # no run was started


def test_exit_rank_flushes_what_was_printed_and_keeps_the_exit_code():
    # os._exit skips the interpreter's shutdown, which is what flushes a piped stdout: exit_rank
    # must flush first, or rank 0's JSON line would be lost
    code = ("import sys; from tinymnist.training.distributed import exit_rank; "
            "print('{\"ok\": 1}'); sys.stderr.write('note'); exit_rank(3); print('never')")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a buffered, piped stdout
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 3
    assert proc.stdout == '{"ok": 1}\n' and proc.stderr == "note"


def test_exit_rank_keeps_the_exit_code_when_the_reader_of_stdout_is_gone():
    # `torchrun ... | head`: the flush meets a closed pipe, and the rank must still end with its code
    code = ("import sys, time; from tinymnist.training.distributed import exit_rank; "
            "time.sleep(1); sys.stdout.write('x' * 100); exit_rank(3)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader goes away before anything was flushed
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 3
    assert "Traceback" not in stderr, stderr
