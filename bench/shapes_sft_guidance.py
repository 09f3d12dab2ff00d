"""Does the non-end-to-end SFT lose counting because guidance is applied on top of imitated guided samples?

The sft arm of shapes/bench.py imitates images that were drawn with guidance (the Janus world's s = 3) under the
unguided, conditional model; evaluated with guidance again, its images are pushed twice in the same direction. If
that is the cause, the arm's loss against its base should shrink when both are evaluated without guidance (s = 1,
the conditional model alone). This evaluates each seed's base and its finished sft run at both scales, on the
bench's held-out records and evaluation size, and prints the paired differences. It trains nothing: the sft runs
come from `python -m shapes.bench --seeds report` (their folder is --work).

    python bench/shapes_sft_guidance.py --work runs/shapes-bench/shapes-janus --seeds 1000 1001 1002 1003 1004

Rows: bench/results/shapes-janus-sft-guidance.jsonl (one per seed, arm and scale).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import shapes  # noqa: E402
from evaluate import evaluate_world  # noqa: E402
from shapes import bench, pretrain  # noqa: E402

SCALES = (1.0, 3.0)  # the conditional model alone, and the world preset's guidance


def sft_folder(work: Path, seed: int) -> Path:
    """The finished sft run of `seed` at the arm's own settings, as shapes/bench.py names it."""
    settings = bench.arm_settings("shapes-janus", "sft")
    name = f"sft-s{seed}" + "".join(f"-{k}{v}" for k, v in settings.items())
    return work / name / f"ckpt-{shapes.TRAIN_DEFAULTS['shapes-janus']['steps']:06d}"


def paired_text(rows: list[dict], scale: float, key: str) -> str:
    """sft minus base on `key` at `scale`, paired by seed: mean ± SE (n)."""
    by = {(r["seed"], r["arm"]): r[key] for r in rows if r["cfg_scale"] == scale}
    seeds = sorted(s for s in {r["seed"] for r in rows} if (s, "sft") in by and (s, "base") in by)
    gains = [by[s, "sft"] - by[s, "base"] for s in seeds]
    if len(gains) < 2:
        return f"s = {scale:g}, {key}: fewer than 2 seeds"
    m, sd = bench.mean_std(gains)
    return f"s = {scale:g}, {key}: sft - base = {m:+.3f} ± {sd / len(gains) ** 0.5:.3f} (n={len(gains)})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="shapes/bench.py's --work folder holding the sft runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(bench.REPORT_SEEDS))
    ap.add_argument("--out", default=str(bench.ROOT / "bench" / "results" / "shapes-janus-sft-guidance.jsonl"))
    args = ap.parse_args(argv)
    folders = {seed: sft_folder(Path(args.work), seed) for seed in args.seeds}
    missing = [str(f) for f in folders.values() if not f.is_dir()]
    if missing:  # before any evaluation
        raise SystemExit(f"error: no finished sft run at {', '.join(missing)}: run python -m shapes.bench --seeds "
                         f"report --arms sft with --work {args.work} first")
    torch.set_num_threads(1)
    per_tag, samples = bench.PROTOCOL_EVAL
    rows = []
    for seed in args.seeds:
        base = pretrain.cached_base(pretrain.PretrainConfig(family="janus", seed=seed))
        for arm, folder in (("base", base), ("sft", folders[seed])):
            policy = pretrain.load_shapes_policy("shapes-janus", str(folder))
            for scale in SCALES:
                result = evaluate_world(policy, shapes.eval_records(per_tag), n_samples=samples, cfg_scale=scale,
                                        seed=seed)
                rows.append({"seed": seed, "arm": arm, "cfg_scale": scale, "per_tag": per_tag, "samples": samples,
                             **result, "checkpoint": str(folder)})
                print(f"seed {seed} {arm} s = {scale:g}: counting {result['geneval/counting']:.3f} "
                      f"judge {result['geneval']:.3f}", flush=True)
    with open(args.out, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    for scale in SCALES:
        for key in ("geneval/counting", "geneval"):
            print(paired_text(rows, scale, key))


if __name__ == "__main__":
    main()
