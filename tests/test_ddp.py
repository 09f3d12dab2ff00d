"""DDP on CPU (gloo, 2 processes): ranks stay identical and match a one-process run of the same global batch."""

import sys

import pytest
import torch
from conftest import run_group, run_ok
from safetensors.torch import load_file

# AdamW divides each gradient element by its own running scale, so an element whose gradient is near 0 turns the
# rounding of a different reduction order (1 process vs 2 ranks) into a visible step: up to 2.6e-5 measured on a
# token row that moved 2e-3 in 2 steps at lr 1e-3. A missing or wrong all-reduce moves weights by ~1e-3.
ATOL = 5e-5
FLAGS = ["--model", "janus-tiny", "--num-prompts", "40", "--prompts-per-step", "2", "--group-size", "2",
         "--micro-batch", "1", "--max-answer-tokens", "6", "--lr", "1e-3", "--steps", "2", "--threads", "1"]


@pytest.mark.parametrize("model,mode", [("janus-tiny", "sft"), ("janus-tiny", "grpo"), ("showo-tiny", "sft")])
def test_two_ranks_equal_one_process(tmp_path, model, mode):
    flags = FLAGS + ["--model", model, "--mode", mode, "--sft-min-reward", "0"]
    result = tmp_path / "ranks.txt"
    run_ok([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "tests/ddp_worker.py", str(result)] + flags + ["--out", str(tmp_path / "two")])
    assert result.read_text() == "identical"
    run_ok([sys.executable, "train.py"] + flags + ["--out", str(tmp_path / "one")])
    name = "model.safetensors" if model.startswith("janus") else "pytorch_model.safetensors"
    two, one = load_file(str(tmp_path / "two/ckpt-000002" / name)), load_file(str(tmp_path / "one/ckpt-000002" / name))
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=ATOL, msg=k)
    if mode == "sft":  # SFT always has a gradient, so this comparison cannot pass vacuously
        assert_trained(one, model)


def assert_trained(weights, model):
    from models import load_policy

    start = load_policy(model).model.state_dict()
    assert any(not torch.allclose(weights[k], start[k]) for k in weights)


@pytest.mark.parametrize("model", ["janus-tiny", "showo-tiny"])
def test_fsdp_matches_one_process(tmp_path, model):
    """FSDP2 (gloo, 2 processes): the checkpoint it gathers equals a one-process run over the same batch,
    and a sharded run resumes from it."""
    flags = FLAGS + ["--model", model, "--mode", "sft", "--sft-min-reward", "0"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py"]
    run_ok(torchrun + flags + ["--fsdp", "--out", str(tmp_path / "fsdp")])
    run_ok([sys.executable, "train.py"] + flags + ["--out", str(tmp_path / "one")])
    name = "model.safetensors" if model.startswith("janus") else "pytorch_model.safetensors"
    fsdp, one = load_file(str(tmp_path / "fsdp/ckpt-000002" / name)), load_file(str(tmp_path / "one/ckpt-000002" / name))
    assert fsdp.keys() == one.keys()
    for k in one:
        torch.testing.assert_close(fsdp[k], one[k], rtol=0, atol=ATOL, msg=k)
    assert_trained(one, model)
    run_ok(torchrun + ["--resume", str(tmp_path / "fsdp"), "--steps", "3"])  # optimizer state reloads sharded
    assert (tmp_path / "fsdp/ckpt-000003").exists()




def test_torchrun_pretrains_the_shapes_base_once_and_every_rank_loads_it(tmp_path):
    import json
    import os

    (tmp_path / "cache").mkdir()
    proc = run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                      "tests/cache_fill_worker.py", "shapes", str(tmp_path)],
                     env={**os.environ, "UNIRL_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    assert [r["filled"] for r in ranks] == [1, 0]  # rank 0 pretrained; rank 1 read its cache
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    assert len(list((tmp_path / "cache" / "shapes").iterdir())) == 1  # one base, no leftover temporary folder


def test_ranks_that_see_different_resume_points_stop_together(monkeypatch):
    """Rank 0 resumes from a checkpoint that rank 1 does not see (no shared folder): every rank stops with one
    message naming both, instead of training from different steps."""
    from support import parallel

    parallel.same_on_every_rank(("run/ckpt-000004", 4), "resume points", "share the folder")  # one process: agrees
    monkeypatch.setattr(parallel, "gather_lists", lambda items: items + [(None, 0)])  # as rank 1 would report
    with pytest.raises(ValueError, match=r"ranks see different resume points .*ckpt-000004.*None.*share the folder"):
        parallel.same_on_every_rank(("run/ckpt-000004", 4), "resume points", "share the folder")
