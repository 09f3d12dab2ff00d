"""Plumbing beneath the algorithm: none of it is UniRL, all of it is needed to run it.

    checkpoint.py   atomic, verified checkpoints; the run folder's lock; resuming
    parallel.py     torch.distributed: DDP or FSDP2, and the collectives the loop needs
    cli.py          flags from a dataclass, and the checks every number and path flag gets
    metrics.py      metrics.jsonl, the progress line, sample grids, live reporting
    plot.py         curves.png, drawn with Pillow
"""
