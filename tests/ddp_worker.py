"""Run train.py's loop under torchrun, then check that every rank holds the same parameters.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py RESULT_FILE [train flags]
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402
from support.parallel import end_worker  # noqa: E402


def main() -> None:
    result, argv = sys.argv[1], sys.argv[2:]
    cfg = train.parse_config(argv)
    rank, world, device = train.setup_distributed(cfg.device)
    try:
        policy = train.run(cfg, rank, world, device)
        flat = torch.cat([p.detach().flatten() for p in policy.parameters()])
        everyone = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(everyone, flat)
        if rank == 0:
            same = all(torch.equal(everyone[0], other) for other in everyone)
            Path(result).write_text("identical" if same else "different")
    finally:
        train.teardown_distributed()


if __name__ == "__main__":
    main()
    end_worker()  # as train.py does: a finished rank skips the interpreter teardown that can abort it
