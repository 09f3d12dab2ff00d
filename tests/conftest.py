"""Shared fixtures: tiny models built once per session, deterministic numerics, repo on sys.path."""

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test must never reach a hub
torch.set_num_threads(1)


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
