"""Shared fixtures: tiny models built once per session, deterministic numerics, repo on sys.path."""

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
    the whole group is killed, torchrun's workers included (killing torchrun alone leaves a hung worker waiting
    for its peers), and the test fails with the end of what the command printed."""
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(map(str, args[:6]))} ... did not finish in {timeout:.0f} s (killed); its stderr "
                    f"ends:\n{err[-3000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


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
