"""Checkpoints and run folders: safetensors plus JSON, written atomically and durably, loadable as model folders.

A checkpoint folder `ckpt-000010/` holds
    the model, saved by the policy itself      config.json, model.safetensors, tokenizer, ...
    optimizer.safetensors                      AdamW's moment tensors, one key per (param, slot)
    trainer_state.json                         step, the run's Config, optimizer param_groups, the torch
                                               RNG state, and the size of every other file (written last)
so `--model-path ckpt-000010` loads it like a released checkpoint, and `--resume ckpt-000010` continues
the run. Nothing is pickled.

Crashes: a checkpoint is written under a temporary name, every file and folder is fsynced, then it is
renamed and the run folder fsynced, so a crash (or a power loss) leaves the old set of checkpoints or
the new one. Older checkpoints are pruned only after the new one exists. On resume a checkpoint is
verified first (every file at its recorded size, every safetensors header consistent with its file's
length, every JSON file parseable); a damaged newest one is set aside with a warning and the one before
it is used. This catches truncation and torn writes, not bit flips inside tensor data: a checksum would
read every byte of tens of GB at each save and resume.

One run per folder: rank 0 holds an flock on `run/.lock` for the whole run. The OS drops it when the
process dies, however it dies, so the lock file never needs cleaning; a second run into a busy folder
stops with the holder's pid. Under that lock, temporary files left by a killed run are removed.

Files and folders get the umask's modes (0644 / 0755 typically), so a group can read a colleague's run.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import struct
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

STATE = "trainer_state.json"
LOCK = ".lock"
TEMP_PREFIX = ".ckpt-tmp-"  # a checkpoint being written; left behind only by a killed run
CKPT_NAME = re.compile(r"ckpt-\d{6}")  # exactly: set-aside folders (ckpt-000004.corrupt-...) are not checkpoints
_held_locks: dict[str, int] = {}  # run folder -> the descriptor holding its lock in this process


# ------------------------------------------------------------------ durable, umask-respecting writes
def current_umask() -> int:
    """The process umask (os offers no getter: set it and put it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a folder's entries (a rename into it, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def settle_tree(folder: str | os.PathLike) -> None:
    """Give every file and folder under `folder` the umask's mode and fsync it, so a rename that follows
    publishes data already on disk. (safetensors and mkdtemp create 0600 / 0700, unreadable to a group.)"""
    mask = current_umask()
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            os.chmod(path, 0o666 & ~mask)
            with open(path, "rb") as f:  # Linux fsyncs through a read-only descriptor
                os.fsync(f.fileno())
        os.chmod(root, 0o777 & ~mask)
        fsync_dir(root)


def new_folder(parent: str | os.PathLike, prefix: str) -> Path:
    """A new, uniquely named folder in `parent` with the umask's mode (mkdtemp would make it 0700)."""
    path = Path(parent) / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file via a temporary sibling, fsync and a rename: readers see the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "x") as f:  # mode 0666 minus the umask (mkstemp would make it 0600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(f"could not write {path} ({err}): free disk space or fix the folder's permissions, "
                      f"then run again") from err
    fsync_dir(path.parent)


# ------------------------------------------------------------------ saving
def save_checkpoint(run_dir: str | os.PathLike, step: int, policy, optimizer_state: tuple, config: dict,
                    keep: int = 2, state_dict: dict | None = None) -> Path:
    """Write `run_dir/ckpt-{step:06d}` atomically and durably, and keep the newest `keep` checkpoints.

    optimizer_state: what `optimizer_tensors` returned (gathered by every rank while the parameters are
    still sharded); state_dict: the policy's gathered weights under FSDP (else the policy's own).
    A failed write (a full disk) removes its temporary folder and raises OSError naming the checkpoint;
    the earlier checkpoints are untouched."""
    tensors, groups = optimizer_state
    run_dir = Path(run_dir)
    final = run_dir / f"ckpt-{step:06d}"
    log = run_dir / "metrics.jsonl"  # the log up to this step: as durable as the checkpoint that ends it
    if log.exists():
        with open(log, "rb") as f:
            os.fsync(f.fileno())
    tmp = new_folder(run_dir, TEMP_PREFIX)
    try:
        policy.save(tmp, state_dict=state_dict)
        save_file(tensors, tmp / "optimizer.safetensors")
        state = {
            "step": step,
            "config": config,
            "param_groups": groups,
            "torch_rng": torch.get_rng_state().tolist(),
            "files": file_sizes(tmp),  # what verify_checkpoint holds the other files to
        }
        (tmp / STATE).write_text(json.dumps(state, indent=1))
        settle_tree(tmp)
    except (OSError, SafetensorError) as err:  # safetensors reports a full disk as SafetensorError
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"could not write checkpoint {final} ({err}); the earlier checkpoints are intact. Free space "
                      f"in {run_dir}, then continue with --resume {run_dir}") from err
    if final.exists():  # a re-run of the same step: replace it only once the new one is complete
        remove_folder(final)
    os.replace(tmp, final)
    fsync_dir(run_dir)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        remove_folder(old)
    return final


def remove_folder(folder: Path) -> None:
    """Rename a checkpoint to a temporary name, then delete it: a kill mid-delete leaves a temporary folder
    (removed at the next start), never a half-deleted ckpt-NNNNNN."""
    doomed = folder.with_name(f"{TEMP_PREFIX}removed-{folder.name}-{secrets.token_hex(4)}")
    os.replace(folder, doomed)
    shutil.rmtree(doomed)


def file_sizes(folder: Path) -> dict[str, int]:
    """{path relative to folder: size in bytes} of every file under it."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ finding and verifying
def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The checkpoint folders of a run (whole or not: see verify_checkpoint), oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if CKPT_NAME.fullmatch(p.name) and p.is_dir())


def is_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / STATE).is_file()


def verify_checkpoint(ckpt: str | os.PathLike) -> None:
    """Raise ValueError naming the damaged file if `ckpt` is not whole: trainer_state.json must parse, every
    file it lists must have its recorded size, every safetensors header must match its file's length and
    every JSON file must parse. Reads headers and small files only, never the tensors."""
    ckpt = Path(ckpt)
    state = read_json(ckpt / STATE)
    missing = {"step", "config", "param_groups", "torch_rng"} - set(state)
    if missing:
        raise ValueError(f"{ckpt / STATE} lacks {', '.join(sorted(missing))}")
    for name, size in state.get("files", {}).items():  # checkpoints from before the manifest skip this
        path = ckpt / name
        if not path.is_file():
            raise ValueError(f"{path} is missing")
        if path.stat().st_size != size:
            raise ValueError(f"{path} has {path.stat().st_size} bytes, {size} were written")
    for path in sorted(ckpt.rglob("*.safetensors")):
        check_safetensors(path)
    for path in sorted(ckpt.rglob("*.json")):
        try:
            json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err})") from None


def check_safetensors(path: Path) -> None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors' bytes: the header's
    last data offset must end exactly at the end of the file (a truncated file fails this)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        try:
            if not 0 < n <= size - 8:
                raise ValueError(f"a header of {n} bytes")
            header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a whole safetensors file ({err})") from None
    if 8 + n + end != size:
        raise ValueError(f"{path} is truncated or damaged: its header describes {8 + n + end} bytes, "
                         f"the file has {size}")


def find_checkpoint(path: str | os.PathLike, warn=print) -> Path | None:
    """`--resume` accepts a checkpoint folder or a run folder (its newest whole checkpoint).

    In a run folder a damaged checkpoint is skipped with a warning (`warn`) for the one before it. None: the
    run folder holds a run that never wrote a checkpoint (run_config.json only); it restarts from step 0."""
    path = Path(path)
    if is_checkpoint(path):  # named explicitly: it must be whole
        try:
            verify_checkpoint(path)
        except ValueError as err:
            raise ValueError(f"--resume {path}: the checkpoint is damaged: {err}. Resume from the run folder "
                             f"(--resume {path.parent}) to use its newest whole checkpoint") from None
        return path
    found = list_checkpoints(path)
    problems = []
    for ckpt in reversed(found):
        try:
            verify_checkpoint(ckpt)
        except ValueError as err:
            problems.append(str(err))
            warn(f"warning: checkpoint {ckpt} is damaged ({err}); using the one before it")
            continue
        return ckpt
    if found:
        raise ValueError(f"--resume {path}: every checkpoint there is damaged ({'; '.join(problems)}). Restart "
                         f"the run in a new --out, or repair one checkpoint")
    if (path / "run_config.json").is_file():
        return None
    raise ValueError(f"--resume {path}: no checkpoint there (expected a ckpt-NNNNNN folder with "
                     f"{STATE}, or a run folder holding one or its run_config.json)")


def resume_point(resume: str, out: str | None = None, warn=print) -> tuple[str, dict]:
    """What `--resume` continues from, and the config to continue with (the run's folder as its out): the
    checkpoint, or the folder of a run that never checkpointed (it restarts from step 0). A given `out` must
    be that folder: a resumed run never writes into another run's folder."""
    ckpt = find_checkpoint(resume, warn)
    folder = ckpt.parent if ckpt else Path(resume)
    if out is not None and Path(out).resolve() != folder.resolve():
        instead = f"--model-path {ckpt} --out {out}" if ckpt else f"--out {out} alone"
        raise ValueError(f"--resume {resume} continues the run in its own folder {folder}, not in --out {out}: "
                         f"drop --out, or start a new run from those weights with {instead}")
    config = read_trainer_state(ckpt)["config"] if ckpt else read_run_config(folder)
    return str(ckpt or folder), {**config, "out": str(folder)}


def resume_advice(run_dir: Path) -> str:
    """Where to go back to after a NaN: the newest checkpoint (all of them predate the failing step)."""
    last = list_checkpoints(run_dir)
    where = f"the last checkpoint, {last[-1]}," if last else "step 0 (no checkpoint was written),"
    return f"Resume from {where} with --resume {run_dir} and a lower --lr."


def read_json(path: Path, fix: str = "") -> dict:
    """A JSON object from `path`, or a ValueError naming the file, the problem and the `fix`."""
    fix = f": {fix}" if fix else ""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing{fix}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}){fix}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object{fix}")
    return data


def read_trainer_state(ckpt: str | os.PathLike) -> dict:
    """The checkpoint's trainer_state.json; a damaged one is a ValueError naming it (verify_checkpoint checks more)."""
    try:
        return read_json(Path(ckpt) / STATE)
    except ValueError as err:
        raise ValueError(f"{err}: the checkpoint is damaged; use an earlier one (--resume takes the run folder "
                         f"and picks its newest whole checkpoint)") from None


def read_run_config(run_dir: str | os.PathLike) -> dict:
    """The Config a run started with (run_config.json), for restarting a run that never checkpointed."""
    return read_json(Path(run_dir) / "run_config.json", "repair it, or start the run again in a new --out")


# ------------------------------------------------------------------ the run folder: one run at a time
def lock_run_folder(run_dir: str | os.PathLike) -> None:
    """Take `run_dir/.lock` for this process (until unlock_run_folder or its death), or raise ValueError
    naming the run that holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "pid unknown"
        os.close(fd)
        raise ValueError(f"--out {run_dir} is in use by another run ({holder}; it holds {run_dir / LOCK}): let it "
                         f"finish or stop it, or choose another --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    _held_locks[str(run_dir.resolve())] = fd


def unlock_run_folder(run_dir: str | os.PathLike) -> None:
    """Release this process's lock on `run_dir`, if it holds one (the lock file stays: it is harmless)."""
    fd = _held_locks.pop(str(Path(run_dir).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


def claim_run_folder(run_dir: str | os.PathLike, resuming: bool, start: int, say=print) -> None:
    """Rank 0, before the run writes anything: lock the folder, refuse a folder holding another run (unless
    resuming it), remove temporary files a killed run left, and set aside checkpoints past `start` (after a
    resume from an earlier checkpoint, or past a damaged newest one) so no later resume can pick them up."""
    run_dir = Path(run_dir)
    lock_run_folder(run_dir)
    try:
        if not resuming:
            refuse_existing_run(run_dir)
        remove_stale_temps(run_dir, say)
        for ckpt in list_checkpoints(run_dir):
            if int(ckpt.name.split("-")[1]) > start:
                set_aside(ckpt, start, say)
    except BaseException:
        unlock_run_folder(run_dir)
        raise


def refuse_existing_run(run_dir: Path) -> None:
    if list_checkpoints(run_dir):
        raise ValueError(f"--out {run_dir} already holds a run (its ckpt-* folders): continue it with "
                         f"--resume {run_dir}, or choose a new --out")
    if (run_dir / "run_config.json").exists():  # the run died before its first checkpoint
        raise ValueError(f"--out {run_dir} already holds a run that never wrote a checkpoint: restart it from "
                         f"step 0 with --resume {run_dir} (its saved config; flags you add override it), or choose "
                         f"a new --out")


def remove_stale_temps(run_dir: Path, say=print) -> None:
    """Delete what a killed run was writing: checkpoint folders (tens of GB at 7B), atomic-write temporaries
    and sample grids. Safe only under the folder's lock: nobody else is writing there."""
    temp_file = re.compile(r"\..+\.tmp-\d+-[0-9a-f]{8}")
    stale = [p for p in run_dir.iterdir() if p.name.startswith(TEMP_PREFIX) or temp_file.fullmatch(p.name)]
    stale += sorted((run_dir / "samples").glob(".*.png.tmp"))  # metrics.save_grid's temporary name
    if not stale:
        return
    size = sum(f.stat().st_size for p in stale for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    for p in stale:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    say(f"removed {len(stale)} temporary file(s) or folder(s) that a killed run left in {run_dir} "
        f"({size / 1e6:.1f} MB): {', '.join(p.name for p in stale)}")


def set_aside(ckpt: Path, start: int, say=print) -> None:
    """Rename a checkpoint past the resumed step out of the ckpt-NNNNNN namespace (kept for inspection)."""
    try:
        verify_checkpoint(ckpt)
        why = "abandoned"
    except ValueError:
        why = "corrupt"
    target = ckpt.with_name(f"{ckpt.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(ckpt, target)
    say(f"set aside {ckpt} as {target.name} ({why}; this run continues from step {start}): delete it when "
        f"no longer needed")


# ------------------------------------------------------------------ optimizer and RNG
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
