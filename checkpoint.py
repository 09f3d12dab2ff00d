"""Checkpoints: safetensors plus JSON, written atomically, loadable as plain model folders.

A checkpoint folder `ckpt-000010/` holds
    the model, saved by the policy itself      config.json, model.safetensors, tokenizer, ...
    optimizer.safetensors                      AdamW's moment tensors, one key per (param, slot)
    trainer_state.json                         step, the run's Config, optimizer param_groups,
                                               and the torch RNG state
so `--model-path ckpt-000010` loads it like a released checkpoint, and `--resume ckpt-000010` continues
the run. Nothing is pickled. The folder is written under a temporary name and renamed when complete, so a
crash never leaves half a checkpoint; older checkpoints are pruned only after the new one exists.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file via a temporary sibling and a rename: readers see the old or the new file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def save_checkpoint(run_dir: str | os.PathLike, step: int, policy, optimizer_state: tuple, config: dict,
                    keep: int = 2, state_dict: dict | None = None) -> Path:
    """Write `run_dir/ckpt-{step:06d}` atomically and keep the newest `keep` checkpoints.

    optimizer_state: what `optimizer_tensors` returned (gathered by every rank while the parameters are
    still sharded); state_dict: the policy's gathered weights under FSDP (else the policy's own).
    """
    tensors, groups = optimizer_state
    run_dir = Path(run_dir)
    final = run_dir / f"ckpt-{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".ckpt-tmp-"))
    policy.save(tmp, state_dict=state_dict)
    save_file(tensors, tmp / "optimizer.safetensors")
    state = {
        "step": step,
        "config": config,
        "param_groups": groups,
        "torch_rng": torch.get_rng_state().tolist(),
    }
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    if final.exists():  # a re-run of the same step: replace it only once the new one is complete
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    return sorted(p for p in Path(run_dir).glob("ckpt-[0-9]*") if (p / "trainer_state.json").exists())


def find_checkpoint(path: str | os.PathLike) -> Path:
    """`--resume` accepts a checkpoint folder or a run folder (its newest checkpoint)."""
    path = Path(path)
    if (path / "trainer_state.json").exists():
        return path
    found = list_checkpoints(path) if path.is_dir() else []
    if not found:
        raise ValueError(f"--resume {path}: no checkpoint there (expected a ckpt-NNNNNN folder with "
                         f"trainer_state.json, or a run folder holding one)")
    return found[-1]


def read_trainer_state(ckpt: str | os.PathLike) -> dict:
    return json.loads((Path(ckpt) / "trainer_state.json").read_text())


def optimizer_tensors(policy, optimizer) -> tuple[dict, list]:
    """The optimizer's whole (un-sharded) state as `{param name}::{slot}` tensors plus JSON param groups.

    Keyed by parameter name, not position, through torch's state-dict helpers: the same file for a
    plain, DDP or FSDP run, so a run can resume under another layout."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    sd = get_optimizer_state_dict(policy, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    tensors = {}  # with cpu_offload, only rank 0 receives the gathered state; the others get {}
    for name, slots in sd.get("state", {}).items():
        for slot, value in slots.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{name}::{slot}"] = value.detach().cpu().contiguous()
    return tensors, sd.get("param_groups", [])


def load_optimizer(policy, optimizer, ckpt: str | os.PathLike) -> None:
    """Restore the optimizer state written by save_checkpoint (exactly, tensor by tensor; every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    state: dict[str, dict] = {}
    for key, value in load_file(str(Path(ckpt) / "optimizer.safetensors")).items():
        name, slot = key.split("::", 1)
        state.setdefault(name, {})[slot] = value
    groups = read_trainer_state(ckpt)["param_groups"]
    set_optimizer_state_dict(policy, optimizer, {"state": state, "param_groups": groups},
                             options=StateDictOptions(full_state_dict=True))


def restore_rng(ckpt: str | os.PathLike) -> None:
    torch.set_rng_state(torch.tensor(read_trainer_state(ckpt)["torch_rng"], dtype=torch.uint8))
