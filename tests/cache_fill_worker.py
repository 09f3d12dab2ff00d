"""Two ranks load a model whose first load fills the cache: only rank 0 may fill it.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/cache_fill_worker.py shapes RESULT_DIR
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/cache_fill_worker.py janus RESULT_DIR SRC [late]

shapes: the shapes-janus preset, whose base is pretrained on first use (here a base small enough for seconds).
janus: an original-format Janus folder SRC, converted on first use. UNIRL_CACHE must point at an empty folder.
late: rank 1 starts loading only once rank 0's conversion is in the cache (a slow rank on a busy machine).
Each rank writes RESULT_DIR/rank<k>.json with how often it filled the cache and a checksum of the weights it
loaded."""

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models.convert_janus as convert_janus  # noqa: E402
from models import load_policy  # noqa: E402
from shapes import pretrain  # noqa: E402
from support.parallel import end_worker, setup_distributed, teardown_distributed  # noqa: E402


def count_fills(kind: str) -> list:
    """Wrap the function that fills the cache so that each call is counted; returns the counter."""
    calls = []
    if kind == "shapes":
        real_config, real_pretrain = pretrain.PretrainConfig, pretrain.pretrain
        pretrain.PretrainConfig = lambda family: real_config(family=family, steps=4, batch=4, warmup=1, hidden=32,
                                                             layers=1)
        pretrain.pretrain = lambda cfg, **kw: calls.append(1) or real_pretrain(cfg, **kw)
    else:
        real = convert_janus.convert_original_janus
        convert_janus.convert_original_janus = lambda *a, **kw: calls.append(1) or real(*a, **kw)
    return calls


def wait_for_conversion(seconds: float = 120.0) -> None:
    """Sleep until a finished conversion (its config.json) sits in UNIRL_CACHE."""
    deadline = time.monotonic() + seconds
    def done():  # not the hidden temporary folder convert_original_janus fills first, then renames
        return [f for f in Path(os.environ["UNIRL_CACHE"]).glob("converted/*/config.json")
                if not f.parent.name.startswith(".")]

    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no conversion appeared in {os.environ['UNIRL_CACHE']} within {seconds:.0f} s")
        time.sleep(0.1)


def main() -> None:
    kind, result = sys.argv[1], Path(sys.argv[2])
    calls = count_fills(kind)
    torch.set_num_threads(1)
    rank, _, _ = setup_distributed("cpu")
    try:
        if sys.argv[4:] == ["late"] and rank == 1:
            wait_for_conversion()
        policy = load_policy("shapes-janus") if kind == "shapes" else load_policy("janus-1.3b", sys.argv[3])
        total = sum(float(p.double().sum()) for p in policy.state_dict().values() if p.is_floating_point())
        (result / f"rank{rank}.json").write_text(json.dumps({"filled": len(calls), "checksum": total}))
        dist.barrier()
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
    end_worker()
