"""--precision: bf16 (the README's real-model recipe) keeps fp32 master weights, so no AdamW update is lost,
under DDP and under FSDP2 (gloo, 2 processes); weights stored in bf16 lose most updates and say so."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train

ROOT = Path(__file__).resolve().parents[1]
# 10 AdamW steps at the paper's lr 1e-5; SFT on every image so that every step has a gradient
FLAGS = ["--model", "showo-tiny", "--mode", "sft", "--sft-min-reward", "0", "--num-prompts", "40",
         "--prompts-per-step", "2", "--group-size", "2", "--micro-batch", "2", "--max-answer-tokens", "6",
         "--lr", "1e-5", "--steps", "10", "--save-every", "10", "--threads", "1"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py"]


def run(args, timeout=300):
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def still_weights(run_dir: Path) -> tuple[dict, dict]:
    """The checkpoint's weights, and per tensor how many of them the run left exactly where they started.
    A token embedding row learns only when the run's prompts, images or answers hold that token, so only
    the rows that moved at all are counted there."""
    from models import load_policy

    start = load_policy("showo-tiny").model.state_dict()  # the preset's seeded init: std 0.02, norm weights 1
    weights = load_file(str(run_dir / "ckpt-000010" / "pytorch_model.safetensors"))
    still = {}
    for name, w in weights.items():
        same = w == start[name].to(w.dtype)
        if "embed_tokens" in name:
            same = same[~same.all(dim=1)]
        still[name] = int(same.sum())
    return weights, still


@pytest.mark.parametrize("layout", ["ddp", "fsdp"])
def test_bf16_recipe_moves_every_weight_as_fp32_does(tmp_path, layout):
    """In fp32, 10 steps at lr 1e-5 move every weight of the preset (std 0.02, norm weights 1); --precision bf16
    must move every one too."""
    run(TORCHRUN + FLAGS + ["--precision", "bf16", "--out", str(tmp_path)] + ["--fsdp"] * (layout == "fsdp"))
    weights, still = still_weights(tmp_path)
    assert {name: n for name, n in still.items() if n} == {}
    assert {w.dtype for w in weights.values()} == {torch.float32}  # the master copy is what is saved


def test_bf16_stored_weights_lose_updates_and_say_so(tmp_path):
    """The old --dtype bfloat16 path, now --precision bf16-lossy: the same measure sees the updates it loses."""
    proc = run([sys.executable, "train.py"] + FLAGS + ["--precision", "bf16-lossy", "--out", str(tmp_path)])
    assert "warning: --precision bf16-lossy" in proc.stdout and "never move" in proc.stdout
    weights, still = still_weights(tmp_path)
    assert sum(still.values()) > 0.5 * sum(w.numel() for w in weights.values())  # most std-0.02 weights
    norms = [name for name in weights if "layernorm.weight" in name]
    assert norms and all(still[name] == weights[name].numel() for name in norms)  # spacing at 1.0 is 0.0078


@pytest.mark.parametrize("saved,precision", [({"dtype": "float32", "autocast": False}, "fp32"),
                                              ({"dtype": "float32", "autocast": True}, "bf16"),
                                              ({"dtype": "bfloat16", "autocast": False}, "bf16-lossy")])
def test_resume_reads_configs_saved_before_precision(tmp_path, saved, precision):
    """Checkpoints written with the old keys (dtype, autocast) resume as they ran."""
    ckpt = tmp_path / "run" / "ckpt-000001"
    ckpt.mkdir(parents=True)
    config = {k: v for k, v in dataclasses.asdict(train.Config()).items() if k != "precision"}
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 1, "config": {**config, **saved}}))
    cfg = train.parse_config(["--resume", str(tmp_path / "run")])
    assert cfg.precision == precision and not hasattr(cfg, "dtype")
