"""support/checkpoint.py without a model: durable and group-readable writes, verification and fallback, a full disk,
the run folder's lock, and the clean-up of what a killed run left."""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from support import checkpoint
from support import metrics
from support import parallel
import train
from support.metrics import trim_metrics

CONFIG = {"model": "janus-tiny", "mode": "grpo", "steps": 4}


class FakePolicy:
    """Saves like a policy does: a config.json and a safetensors file."""

    def __init__(self, numel=10):
        self.weight = torch.arange(numel, dtype=torch.float32)

    def save(self, folder, state_dict=None):
        (Path(folder) / "config.json").write_text(json.dumps({"hidden": 4}))
        save_file({"weight": self.weight}, Path(folder) / "model.safetensors")


def save(run, step, policy=None, keep=2):
    tensors = {"weight::exp_avg": torch.ones(3)}
    return checkpoint.save_checkpoint(run, step, policy or FakePolicy(), (tensors, [{"lr": 0.1}]), CONFIG, keep=keep)


def test_checkpoint_is_fsynced_before_the_rename_and_follows_the_umask(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(a), str(b))) or real_replace(a, b))
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')  # the run's log so far
    old = os.umask(0o022)
    try:
        final = save(tmp_path, 3)
    finally:
        os.umask(old)
    rename = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(final))
    tmp = events[rename][1]
    synced_before = {e[1] for e in events[:rename] if e[0] == "fsync"}
    written = {str(Path(tmp) / p.name) for p in final.iterdir()}
    assert written | {tmp} <= synced_before  # every file and the folder itself, before the rename
    assert str(tmp_path / "metrics.jsonl") in synced_before  # the metrics up to this step, with it
    assert ("fsync", str(tmp_path)) in events[rename:]  # the rename itself, after
    assert oct(final.stat().st_mode & 0o777) == "0o755"  # not mkdtemp's 0700
    assert {oct(p.stat().st_mode & 0o777) for p in final.iterdir()} == {"0o644"}  # not safetensors' 0600
    train_cfg = tmp_path / "run_config.json"
    checkpoint.atomic_write_text(train_cfg, "{}")
    assert oct(train_cfg.stat().st_mode & 0o777) == "0o644"  # not mkstemp's 0600


@pytest.mark.parametrize("damage", ["truncate model", "truncate optimizer", "break state", "break config", "delete"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    save(tmp_path, 1)
    newest = save(tmp_path, 2)
    name = {"truncate model": "model.safetensors", "truncate optimizer": "optimizer.safetensors",
            "break state": "trainer_state.json", "break config": "config.json", "delete": "model.safetensors"}[damage]
    path = newest / name
    if damage.startswith("truncate"):
        os.truncate(path, path.stat().st_size - 5)
    elif damage == "delete":
        path.unlink()
    else:
        path.write_text(path.read_text()[:-10])
    warnings = []
    assert checkpoint.find_checkpoint(tmp_path, warn=warnings.append) == tmp_path / "ckpt-000001"
    assert len(warnings) == 1 and str(path) in warnings[0] and "ckpt-000002" in warnings[0]
    with pytest.raises(ValueError, match=f"{name}.*--resume {tmp_path}"):  # named explicitly: no silent fallback
        checkpoint.find_checkpoint(newest)
    os.truncate(tmp_path / "ckpt-000001" / "model.safetensors", 30)
    with pytest.raises(ValueError, match="every checkpoint there is damaged"):
        checkpoint.find_checkpoint(tmp_path, warn=warnings.append)


def test_a_full_disk_names_the_checkpoint_and_leaves_no_temporary_folder(tmp_path, monkeypatch):
    first = save(tmp_path, 1)

    def full(tensors, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(OSError, match=f"could not write checkpoint {tmp_path / 'ckpt-000002'}.*No space.*--resume"):
        save(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000001"]
    checkpoint.verify_checkpoint(first)


def test_a_real_full_disk_on_a_small_tmpfs(tmp_path):
    """safetensors reports ENOSPC as its own SafetensorError: still a clear OSError, and nothing left behind."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with pytest.raises(OSError, match="could not write checkpoint.*No space left on device.*Free space"):
            save(mount, 1, FakePolicy(numel=400_000))  # 1.6 MB of weights into 1 MB
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_second_run_is_refused_while_the_first_holds_the_folder_and_not_after_it_died(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import checkpoint, sys, time; checkpoint.lock_run_folder(sys.argv[1]); print('locked', flush=True); "
        "time.sleep(60)"), str(tmp_path)], cwd=Path(checkpoint.__file__).parent, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=f"in use by another run \\(pid {holder.pid} on .*--out"):
            checkpoint.claim_run_folder(tmp_path, resuming=False, start=0)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    checkpoint.claim_run_folder(tmp_path, resuming=False, start=0)  # the OS dropped the dead run's lock
    checkpoint.unlock_run_folder(tmp_path)


def test_claiming_a_folder_cleans_what_a_killed_run_left_and_sets_aside_later_checkpoints(tmp_path):
    for step in (1, 2, 3):
        save(tmp_path, step, keep=0)
    os.truncate(tmp_path / "ckpt-000003" / "model.safetensors", 20)
    (tmp_path / ".ckpt-tmp-123-abcdef01").mkdir()
    (tmp_path / ".ckpt-tmp-123-abcdef01" / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / ".run_config.json.tmp-123-abcdef01").write_text("{")
    (tmp_path / "samples").mkdir()
    with pytest.MonkeyPatch.context() as mp:  # a grid killed between its write and its rename, by save_grid's own rule
        mp.setattr(metrics.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            metrics.save_grid(tmp_path, 2, torch.rand(2, 3, 8, 8), 2, [{"prompt": "p", "tag": "t", "answer": "a"}],
                              ["a", "b"], [1.0, 0.0])
    assert len(list((tmp_path / "samples").iterdir())) == 1
    said = []
    checkpoint.claim_run_folder(tmp_path, resuming=True, start=1, say=said.append)
    checkpoint.unlock_run_folder(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[:2] == [".lock", "ckpt-000001"] and names[-1] == "samples"
    assert names[2].startswith("ckpt-000002.abandoned-") and names[3].startswith("ckpt-000003.corrupt-")
    assert checkpoint.list_checkpoints(tmp_path) == [tmp_path / "ckpt-000001"]
    assert not list((tmp_path / "samples").iterdir())
    assert "removed 3 temporary" in said[0] and ".ckpt-tmp-123-abcdef01" in said[0]


def test_resume_into_another_out_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    save(tmp_path / "a", 2)
    with pytest.raises(ValueError, match="continues the run in its own folder.*drop --out.*--model-path"):
        train.parse_config(["--resume", str(tmp_path / "a"), "--out", str(tmp_path / "b")])
    cfg = train.parse_config(["--resume", str(tmp_path / "a"), "--out", str(tmp_path / "a")])  # its own: fine
    assert cfg.resume == str(tmp_path / "a" / "ckpt-000002") and cfg.steps == 4
    assert not (tmp_path / "b").exists()


def test_a_run_that_never_checkpointed_resumes_from_its_saved_config(tmp_path):
    (tmp_path / "run_config.json").write_text(json.dumps({**CONFIG, "steps": 7, "seed": 5}))
    cfg = train.parse_config(["--resume", str(tmp_path)])
    assert (cfg.resume, cfg.out, cfg.steps, cfg.seed) == (str(tmp_path), str(tmp_path), 7, 5)
    with pytest.raises(ValueError, match="never wrote a checkpoint: restart it from step 0 with --resume"):
        checkpoint.claim_run_folder(tmp_path, resuming=False, start=0)
    (tmp_path / "run_config.json").write_text('{"model": ')
    with pytest.raises(ValueError, match="run_config.json is not valid JSON"):
        train.parse_config(["--resume", str(tmp_path)])


def test_a_torn_last_metrics_line_is_dropped_and_a_broken_middle_line_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "rew')
    said = []
    trim_metrics(path, 2, warn=said.append)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n' and "line 3 is incomplete" in said[0]
    trim_metrics(path, 0)  # a restart from step 0 keeps nothing
    assert path.read_text() == ""
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="metrics.jsonl line 2 is not a metrics line"):
        trim_metrics(path, 2)


def test_a_nonfinite_gradient_stops_before_the_update_with_the_progress_lines_step():
    layer = torch.nn.Linear(2, 2)
    layer(torch.ones(1, 2)).sum().backward()
    parallel.check_grads(layer, 2)  # finite: passes
    layer.weight.grad[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="step 3: the gradient norm is not finite"):
        parallel.check_grads(layer, 2)
    with pytest.raises(FloatingPointError, match="step 3: the loss is not finite"):
        parallel.check_finite(torch.tensor(float("nan")), 2, {})


def test_a_kill_while_pruning_leaves_a_temporary_folder_not_a_half_deleted_checkpoint(tmp_path, monkeypatch):
    save(tmp_path, 1, keep=1)

    def killed_mid_delete(path, *args, **kwargs):
        (Path(path) / "model.safetensors").unlink()  # some files gone, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed_mid_delete)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 2, keep=1)
    monkeypatch.undo()
    assert checkpoint.list_checkpoints(tmp_path) == [tmp_path / "ckpt-000002"]
    said = []
    checkpoint.claim_run_folder(tmp_path, resuming=True, start=2, say=said.append)
    checkpoint.unlock_run_folder(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "ckpt-000002"] and "removed-ckpt-000001" in said[0]
