"""Two ranks load the shapes preset from an empty cache: only rank 0 may pretrain.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/shapes_cache_worker.py RESULT_DIR

UNIRL_CACHE must point at an empty folder. Each rank writes RESULT_DIR/rank<k>.json with how often it
pretrained and a checksum of the weights it loaded."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shapes import pretrain  # noqa: E402
from models import load_policy  # noqa: E402
from support.parallel import end_worker, setup_distributed, teardown_distributed  # noqa: E402


def main() -> None:
    result = Path(sys.argv[1])
    real_config, real_pretrain = pretrain.PretrainConfig, pretrain.pretrain
    calls = []
    # a base small enough for seconds, and a count of how often this rank pretrains
    pretrain.PretrainConfig = lambda family: real_config(family=family, steps=4, batch=4, warmup=1, hidden=32, layers=1)
    pretrain.pretrain = lambda cfg, **kw: calls.append(1) or real_pretrain(cfg, **kw)
    torch.set_num_threads(1)
    rank, _, _ = setup_distributed("cpu")
    try:
        policy = load_policy("shapes-janus")
        total = sum(float(p.double().sum()) for p in policy.state_dict().values() if p.is_floating_point())
        (result / f"rank{rank}.json").write_text(json.dumps({"pretrained": len(calls), "checksum": total}))
        dist.barrier()
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
    end_worker()
