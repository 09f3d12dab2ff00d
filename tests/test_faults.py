"""Fault injection on janus-tiny: a run killed anywhere, a damaged checkpoint, a full disk, two runs racing
for one folder, a NaN. Each time: a resume or a clear error (never a bare traceback), and a resumed run's
final weights and optimizer state bit-identical to an uninterrupted run's.

Every run here is 2 steps with a checkpoint after each. A kill in a subprocess is a real SIGKILL;
in-process, a `Killed` BaseException stands in for it (no handler catches it, so the folder is left as a
kill leaves it)."""

import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from support import checkpoint
import train

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--model", "janus-tiny", "--num-prompts", "12", "--prompts-per-step", "2", "--group-size", "2",
         "--micro-batch", "4", "--max-answer-tokens", "4", "--lr", "1e-3", "--threads", "1", "--steps", "2",
         "--save-every", "1"]


class Killed(BaseException):
    """An in-process stand-in for SIGKILL: nothing in train.py or support/checkpoint.py catches it."""


def tensors_of(ckpt: Path) -> dict:
    """The weights and the optimizer state of a checkpoint, for bit-for-bit comparison."""
    return {**load_file(str(ckpt / "model.safetensors")),
            **{"opt/" + k: v for k, v in load_file(str(ckpt / "optimizer.safetensors")).items()}}


def assert_identical(ckpt: Path, reference: dict) -> None:
    got = tensors_of(ckpt)
    assert got.keys() == reference.keys() and all(torch.equal(got[k], reference[k]) for k in got)


def steps_logged(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run: its folder and its final tensors."""
    out = tmp_path_factory.mktemp("faults") / "straight"
    train.main(FLAGS + ["--out", str(out)])
    return out, tensors_of(out / "ckpt-000002")


def test_sigkill_inside_a_checkpoint_write_then_resume(tmp_path, straight):
    """SIGKILL between the model's file and the optimizer's in the last checkpoint; a torn metrics line."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "tests/fault_worker.py", "in-save", "2", *FLAGS, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["ckpt-000001"]
    assert any(p.name.startswith(".ckpt-tmp-") for p in out.iterdir())  # what the kill left
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "reward_me')  # as a kill during the append would leave it
    train.main(["--resume", str(out)])
    assert_identical(out / "ckpt-000002", straight[1])
    assert not any(p.name.startswith(".ckpt-tmp-") for p in out.iterdir())
    assert steps_logged(out) == [1, 2]


def test_killed_before_its_first_checkpoint_restarts_from_step_0(tmp_path, straight, monkeypatch):
    out = tmp_path / "run"

    def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(train, "save_checkpoint", die)
    with pytest.raises(Killed):
        train.main(FLAGS + ["--out", str(out)])
    monkeypatch.undo()
    assert (out / "run_config.json").exists() and not checkpoint.list_checkpoints(out)
    with pytest.raises(ValueError, match=f"never wrote a checkpoint: restart it from step 0 with --resume {out}"):
        train.main(FLAGS + ["--out", str(out)])
    train.main(["--resume", str(out)])
    assert_identical(out / "ckpt-000002", straight[1])
    assert steps_logged(out) == [1, 2]


@pytest.mark.parametrize("damage", ["truncate model.safetensors", "break trainer_state.json", "break config.json"])
def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(tmp_path, straight, damage, capsys):
    out = tmp_path / "run"
    shutil.copytree(straight[0], out)
    path = out / "ckpt-000002" / damage.split()[1]
    if damage.startswith("truncate"):
        os.truncate(path, path.stat().st_size // 2)
    else:
        path.write_text(path.read_text()[: path.stat().st_size // 2])
    train.main(["--resume", str(out)])
    said = capsys.readouterr().out
    assert f"checkpoint {out / 'ckpt-000002'} is damaged" in said and str(path) in said
    assert_identical(out / "ckpt-000002", straight[1])
    assert len([p for p in out.iterdir() if p.name.startswith("ckpt-000002.corrupt-")]) == 1
    assert steps_logged(out) == [1, 2]


def test_a_full_disk_during_a_checkpoint_stops_cleanly_and_resumes(tmp_path, straight, monkeypatch):
    out = tmp_path / "run"
    real, saves = checkpoint.save_file, []

    def fills_up(tensors, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", fills_up)
    with pytest.raises(OSError, match=f"could not write checkpoint {out / 'ckpt-000002'}.*--resume {out}"):
        train.main(FLAGS + ["--out", str(out)])
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir() if "ckpt" in p.name) == ["ckpt-000001"]  # no temporary folder
    train.main(["--resume", str(out)])
    assert_identical(out / "ckpt-000002", straight[1])


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # what a live run holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on node7\n")
        held.flush()
        with pytest.raises(ValueError, match=r"in use by another run \(pid 4242 on node7"):
            train.main(FLAGS + ["--out", str(out)])
        with pytest.raises(ValueError, match=r"in use by another run \(pid 4242 on node7"):
            train.main(["--resume", str(out)] if (out / "run_config.json").exists() else FLAGS + ["--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written


def test_a_nonfinite_gradient_stops_before_the_update_and_names_the_last_checkpoint(tmp_path, straight, monkeypatch):
    out = tmp_path / "run"
    real, calls = train.clip_grads, []

    def explodes(params, max_norm):
        calls.append(1)
        return float("inf") if len(calls) == 2 else real(params, max_norm)

    monkeypatch.setattr(train, "clip_grads", explodes)
    with pytest.raises(FloatingPointError, match=f"step 2: the gradient norm is not finite.*the last checkpoint, "
                                                 f"{out / 'ckpt-000001'}, with --resume {out}"):
        train.main(FLAGS + ["--out", str(out)])
    monkeypatch.undo()
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["ckpt-000001"]
    train.main(["--resume", str(out)])  # the checkpoint it names is clean: the run continues exactly
    assert_identical(out / "ckpt-000002", straight[1])
