"""Shared fixtures: tiny models built once per session, deterministic numerics, repo on sys.path."""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test must never reach a hub
torch.set_num_threads(1)


def run_group(args: list, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command from the repository's root in a process group of its own, output captured as text. On timeout
    the test fails with the end of what the command printed, and nothing it started is left running: SIGTERM
    first, on which torchrun stops its workers (each in a session of its own, out of reach of the group), then
    SIGKILL to the group and to any worker still alive."""
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        workers = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in [proc.pid] + workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        for pid in workers:  # torchrun sent them SIGTERM; one that ignored it goes now
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pytest.fail(f"{' '.join(map(str, args[:6]))} ... did not finish in {timeout:.0f} s (stopped); its stderr "
                    f"ends:\n{err[-3000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def run_ok(args: list, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """run_group, and the command must succeed (else the test fails with the end of its stderr)."""
    proc = run_group(args, timeout, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (Linux)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


@pytest.fixture(scope="session")
def janus_tiny():
    """The janus-tiny policy (random weights, built locally), in eval mode. Do not train it in place."""
    from models import load_policy

    return load_policy("janus-tiny").eval()


@pytest.fixture(scope="session")
def showo_tiny():
    """The showo-tiny policy (random weights, built locally), in eval mode. Do not train it in place."""
    from models import load_policy

    return load_policy("showo-tiny").eval()


@pytest.fixture
def fresh_janus():
    """A janus-tiny policy a test may modify."""
    from models import load_policy

    return load_policy("janus-tiny")


@pytest.fixture(scope="session")
def records():
    import prompts

    return prompts.make_records(12, seed=3)
