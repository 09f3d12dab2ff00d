"""Does UniRL learn in the shapes world? Base vs SFT vs GRPO variants, over seeds, on held-out prompts.

For every seed s: the base is pretrained with seed s (pretrain.py, cached), evaluated with
`evaluate_world` on the evaluation records (shapes.eval_records), and then each arm runs train.py from
that base with seed s, training on prompts with the held-out evaluation prompts excluded, and is
evaluated the same way. Arms:

    base               no post-training
    sft                --mode sft            (true-answer understanding SFT + best-of-group image SFT)
    grpo-gen           --mode grpo --grpo-on gen
    grpo-und           --mode grpo --grpo-on und
    grpo-both          --mode grpo --grpo-on both
    grpo-both-couple   --mode grpo --grpo-on both --couple

Prints a markdown table (mean ± std over seeds) of the judge per category and overall, understanding
of true scenes, self-QA and the imbalance, with CPU minutes per run; appends one JSON line per (seed,
arm) to --out. `--model` picks the world's family (shapes-janus, the default, or shapes-showo); give each
model its own --work folder. Extra train.py flags go after `--`, e.g.

    python bench/shapes_table.py --seeds 0 1 2 --steps 300 -- --kl-beta 0.05
    python bench/shapes_table.py --model shapes-showo --arms base grpo-both --work runs/showo-bench \
        --out runs/showo-bench/results.jsonl                      (its preset's guidance, w = 1)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = {
    "base": None,
    "sft": ["--mode", "sft"],
    "grpo-gen": ["--mode", "grpo", "--grpo-on", "gen"],
    "grpo-und": ["--mode", "grpo", "--grpo-on", "und"],
    "grpo-both": ["--mode", "grpo", "--grpo-on", "both"],
    "grpo-both-couple": ["--mode", "grpo", "--grpo-on", "both", "--couple"],
}
# what worked best in our measurements (see the report); anything after `--` overrides it
# guidance comes from train.py's preset defaults (3 for shapes-janus, 1 for shapes-showo)
TRAIN_FLAGS = ["--prompts-per-step", "8", "--group-size", "8", "--micro-batch", "64", "--lr", "1e-4",
               "--kl-beta", "0", "--max-answer-tokens", "16"]
COLUMNS = ([(f"geneval/{t}", t) for t in ("single_object", "two_object", "counting", "colors", "position", "color_attr")]
           + [("geneval", "**overall**"), ("und", "und (true scenes)"), ("self_qa", "self-QA"),
              ("imbalance/judge_only", "judge yes / answer no"), ("imbalance/answer_only", "judge no / answer yes"),
              ("cpu_min", "CPU min")])


def run_arm(arm: str, seed: int, base: Path, work: Path, args, extra: list[str], exclude: Path) -> dict:
    """Train one arm from the base (unless `base`), then evaluate; returns the JSON row."""
    import torch

    import shapes
    import train
    from models.shapes_models import evaluate_world, load_shapes_policy

    cpu0, wall0 = time.process_time(), time.perf_counter()
    cfg_scale = float(extra[extra.index("--cfg-scale") + 1]) if "--cfg-scale" in extra else \
        shapes.TRAIN_DEFAULTS[args.model]["cfg_scale"]
    flags = TRAIN_FLAGS + ["--cfg-scale", str(cfg_scale)]
    folder = base
    if ARMS[arm] is not None:
        out = work / f"{arm}-s{seed}"
        with open(work / f"{arm}-s{seed}.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            train.main(["--model", args.model, "--model-path", str(base), "--seed", str(seed), "--steps", str(args.steps),
                        "--out", str(out), "--exclude-prompts", str(exclude), "--save-every", str(args.steps),
                        "--sample-every", str(args.steps), "--threads", str(args.threads)] + flags + ARMS[arm] + extra)
        folder = out / f"ckpt-{args.steps:06d}"
    cpu_train, wall_train = time.process_time() - cpu0, time.perf_counter() - wall0
    policy = load_shapes_policy(args.model, str(folder))
    torch.set_num_threads(args.threads)
    result = evaluate_world(policy, shapes.eval_records(args.per_tag), n_samples=args.samples, cfg_scale=cfg_scale,
                            seed=seed)
    return {"model": args.model, "arm": arm, "seed": seed, "steps": 0 if ARMS[arm] is None else args.steps, **result,
            "cpu_min": cpu_train / 60, "wall_min": wall_train / 60, "flags": flags + (ARMS[arm] or []) + extra}


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0)


def format_rows(rows: list[dict], arms: list[str]) -> str:
    """Markdown: one line per arm, mean ± std over seeds per column."""
    lines = ["| arm | " + " | ".join(label for _, label in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        cells = []
        for key, _ in COLUMNS:
            m, s = mean_std([r[key] for r in mine])
            cells.append(f"{m:.3f} ± {s:.3f}" if key != "cpu_min" else f"{m:.1f}")
        lines.append(f"| {arm} (n={len(mine)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_gains(rows: list[dict], arms: list[str], key: str = "geneval") -> str:
    """Each arm minus the base of the same seed: mean, standard error and their ratio (the done-criterion:
    GRPO on both tasks beats the base by more than 3 standard errors)."""
    base = {r["seed"]: r[key] for r in rows if r["arm"] == "base"}
    lines = []
    for arm in arms:
        gains = [r[key] - base[r["seed"]] for r in rows if r["arm"] == arm and arm != "base" and r["seed"] in base]
        if len(gains) > 1:
            m, s = mean_std(gains)
            se = s / math.sqrt(len(gains))
            lines.append(f"{arm}: {key} gain over base {m:+.3f} ± {se:.3f} (SE, n={len(gains)} seeds) = "
                         f"{m / se if se > 0 else float('inf'):.1f} SE")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    import shapes

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="shapes-janus", choices=["shapes-janus", "shapes-showo"],
                    help="the world's family: its base (pretrain.py, cached) and train.py's --model")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--steps", type=int, default=300, help="train.py steps per arm")
    ap.add_argument("--per-tag", type=int, default=shapes.EVAL_PER_TAG, help="evaluation records per tag, as train.py")
    ap.add_argument("--samples", type=int, default=4, help="images per evaluation record")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="runs/shapes-bench", help="folder for the runs")
    ap.add_argument("--out", default="runs/shapes-bench/results.jsonl", help="JSON lines, appended")
    ap.add_argument("--table", default=None, help="only print the table of an existing results file")
    args = ap.parse_args(argv)
    if args.table:
        rows = [json.loads(line) for line in open(args.table) if line.strip()]
        arms = [a for a in ARMS if any(r["arm"] == a for r in rows)]
        print(format_rows(rows, arms) + "\n\n" + paired_gains(rows, arms))
        return

    import torch

    import pretrain
    import prompts
    from models.shapes_models import FAMILIES

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    exclude = work / "heldout.jsonl"  # the evaluation prompts that training can leave out
    prompts.write_records(exclude, shapes.heldout_records(shapes.eval_records(args.per_tag)))
    rows = []
    for seed in args.seeds:
        cpu0 = time.process_time()
        base = pretrain.cached_base(pretrain.PretrainConfig(family=FAMILIES[args.model], seed=seed))
        print(f"seed {seed}: base ready ({(time.process_time() - cpu0) / 60:.1f} CPU min)", flush=True)
        for arm in args.arms:
            row = run_arm(arm, seed, base, work, args, extra, exclude)
            rows.append(row)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"seed {seed} {arm}: judge {row['geneval']:.3f} und {row['und']:.3f} self-QA {row['self_qa']:.3f} "
                  f"({row['cpu_min']:.1f} CPU min)", flush=True)
    print(format_rows(rows, args.arms) + "\n\n" + paired_gains(rows, args.arms))


if __name__ == "__main__":
    main()
