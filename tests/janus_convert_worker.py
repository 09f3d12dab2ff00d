"""Two ranks load an original-format Janus folder with an empty cache: only rank 0 may convert it.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/janus_convert_worker.py SRC RESULT_DIR

UNIRL_CACHE must point at an empty folder. Each rank writes RESULT_DIR/rank<k>.json with how often it converted
and a checksum of the weights it loaded."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models.convert_janus as convert_janus  # noqa: E402
from models import load_policy  # noqa: E402
from support.parallel import setup_distributed, teardown_distributed  # noqa: E402


def main() -> None:
    src, result = sys.argv[1], Path(sys.argv[2])
    real, calls = convert_janus.convert_original_janus, []
    convert_janus.convert_original_janus = lambda *a, **kw: calls.append(1) or real(*a, **kw)
    torch.set_num_threads(1)
    rank, _, _ = setup_distributed("cpu")
    try:
        policy = load_policy("janus-1.3b", src)
        total = sum(float(p.double().sum()) for p in policy.state_dict().values() if p.is_floating_point())
        (result / f"rank{rank}.json").write_text(json.dumps({"converted": len(calls), "checksum": total}))
        dist.barrier()
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
