"""Recipe helper: the paper's per-step batch on your GPUs, the micro-batch that fits, and the memory it needs.

UniRL trains on 8 H100s with one GRPO group per GPU: 8 prompts x G = 8 images (Janus) or 8 prompts x G = 3
(Show-o) per optimizer step (paper appendix: GRPO group = per-GPU batch). This helper keeps that global batch and
group size for any GPU count, splits whole groups over the ranks (a group never leaves its rank), and picks
the largest micro-batch whose memory fits, which fixes the gradient-accumulation steps. It says when DDP
cannot hold the training states (Janus-Pro-7B: ~110 GiB per GPU with fp32 AdamW states) and FSDP is needed.

Memory model per GPU (bench/roofline.py has each formula):
    weights, grads, AdamW states   16 B per trainable parameter under train.py --precision bf16 (fp32 master
                                   weights, grads and AdamW, bf16 compute), 8 B with bf16-lossy; / GPUs under FSDP
    reference model                a frozen copy of the weights for the KL (when --kl-beta > 0), / GPUs under FSDP
    bf16 weight copies             DDP --precision bf16: autocast keeps a bf16 copy of every trained weight it
                                   casts, for a whole rollout and from a forward to its backward (2 B per parameter)
    rollout (no grad)              the KV cache of the CFG rows (Janus) or one forward's transients (Show-o),
                                   the answers' KV cache, and under FSDP the whole model gathered once (unshard),
                                   in the compute dtype (bf16: FSDP2's MixedPrecisionPolicy gathers bf16)
    kept (--compile-decode)        the compiled Janus step keeps its rollout KV cache between rollouts, so the
                                   cache stays allocated while training runs
    training (one micro-batch)     activations ~34 * S * h bytes per layer and row (2 * S * h with checkpointing)
                                   and the fp32 logits of the trained tokens
    peak = states + reference + bf16 copies + kept + max(rollout, training); it must stay under --headroom x
    --gpu-mem.
It is an estimate (fragmentation, the CUDA context and allocator caching are in the headroom); the GPU suite
(bench/gpu.py) measures real peaks next to the same predictions. The plan ends with the train.py command
that runs it.

Run:  python bench/recipe.py --model janus-pro-1b --gpus 8 --gpu-mem 80
      python bench/recipe.py --model janus-pro-7b --gpus 8 --gpu-mem 80 --fsdp
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python bench/recipe.py): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import roofline as R  # noqa: E402

GiB = R.GiB
PAPER = {"janus": dict(prompts_per_step=8, group_size=8), "showo": dict(prompts_per_step=8, group_size=3)}

# What one image costs in tokens, per family. Janus: 32-token prompt + 576 image tokens; the question is
# 681 tokens (system prompt + 576 SigLIP slots + text, measured on the real config); answers ~16 tokens.
# Show-o: 128-token text block + 3 + 1024 image tokens as released (the UniRL preset uses 64, a bit
# cheaper); the question reads the 1024 codes.
FAMILY = {
    "janus": dict(prompt=32, image_tokens=576, question=680, answer=16, codebook=16384, text_vocab=102400,
                  vision=dict(tokens=576, hidden=1024, layers=24)),
    "showo": dict(prompt=131, image_tokens=1024, question=1060, answer=16, codebook=8192, text_vocab=58498,
                  vision=None),  # Show-o answers from the image codes: no vision tower
}
TRUNKS = {
    "janus-pro-1b": R.LM(24, 2048, 16, 16, 128, 5632, 3),
    "janus-1.3b": R.LM(24, 2048, 16, 16, 128, 5632, 3),
    "janus-pro-7b": R.LM(30, 4096, 32, 32, 128, 11008, 3),
    "showo": R.LM(24, 2048, 32, 32, 64, 8192, 2),
    "showo-256": R.LM(24, 2048, 32, 32, 64, 8192, 2),
}


@dataclass
class Plan:
    model: str
    gpus: int
    gpu_mem_gib: float
    fsdp: bool
    precision: str  # bf16 | fp32 | bf16-lossy (train.py --precision) | mixed (ZeRO's, for comparison only)
    checkpointing: bool
    kl: bool
    compile_decode: bool
    ratio_dist: str
    train_on: str
    prompts_per_step: int
    group_size: int
    prompts_per_rank: int
    images_per_rank: int
    micro_batch: int
    grad_accum: int
    memory: dict  # name -> bytes per GPU, at the chosen micro-batch
    peak: float  # bytes
    usable: float  # bytes
    fits: bool
    advice: list = field(default_factory=list)


def family_of(model: str) -> str:
    if model not in TRUNKS:
        raise ValueError(f"unknown --model {model!r}: choose one of {', '.join(TRUNKS)}")
    return "janus" if model.startswith("janus") else "showo"


def rollout_bytes(model: str, images: int, bytes_per: int) -> dict:
    """No-grad working set of the rollout and of answering, for `images` images on one rank."""
    lm, f = TRUNKS[model], FAMILY[family_of(model)]
    out = {}
    if family_of(model) == "janus":  # a StaticCache for the cond + uncond rows of every image
        out["kv_cache"] = R.kv_cache_bytes(lm, 2 * images, f["prompt"] + f["image_tokens"], bytes_per)
    else:  # masked decoding keeps no cache: one forward over 2 x images rows, its MLP transient and logits
        seq = f["prompt"] + f["image_tokens"]
        out["decode_transients"] = 2 * images * seq * (2 * lm.mlp * bytes_per + seq * bytes_per)  # + the float mask
        out["decode_transients"] += 2 * R.logits_bytes(2 * images, f["image_tokens"], f["codebook"], copies=1)
    out["answer_kv_cache"] = R.kv_cache_bytes(lm, images, f["question"] + f["answer"], bytes_per)
    return out


def training_bytes(model: str, micro: int, checkpointing: bool, ratio_dist: str, train_on: str) -> dict:
    """Activations and logits of one micro-batch of `micro` images (the forward and backward of train.py)."""
    lm, f = TRUNKS[model], FAMILY[family_of(model)]
    out = {"activations": 0, "logits": 0}
    if train_on in ("gen", "both"):  # guided ratio: both CFG rows go through the forward (grpo.py, --ratio-dist)
        rows = micro * (2 if ratio_dist == "guided" else 1)
        out["activations"] += R.activation_bytes(lm, rows, f["prompt"] + f["image_tokens"], checkpointing)
        out["logits"] += R.logits_bytes(rows, f["image_tokens"], f["codebook"])
    if train_on in ("und", "both"):
        out["activations"] += R.activation_bytes(lm, micro, f["question"] + f["answer"], checkpointing)
        out["logits"] += R.logits_bytes(micro, f["answer"], f["text_vocab"])
        v = f["vision"]
        if v is not None:  # Janus' SigLIP is trained with the answers (only the VQ tokenizer is frozen)
            out["activations"] += 34 * v["tokens"] * v["hidden"] * v["layers"] * micro
    return out


PRECISIONS = {  # name -> (bytes per weight element, bytes per compute element: caches, activations, gathers)
    "bf16": (4, 2),  # train.py --precision bf16: fp32 weights (and reference), bf16 caches and activations
    "fp32": (4, 4),  # train.py's default
    "bf16-lossy": (2, 2),  # train.py --precision bf16-lossy: weights stored in bf16, small updates lost
    "mixed": (2, 2),  # ZeRO's bf16 weights + fp32 master copy: not what train.py does, kept to compare
}


def plan_recipe(model: str, gpus: int, gpu_mem_gib: float, *, fsdp: bool = False, precision: str = "bf16",
                checkpointing: bool = False, kl: bool = True, ratio_dist: str = "guided", train_on: str = "both",
                compile_decode: bool = False, prompts_per_step: int | None = None, group_size: int | None = None,
                headroom: float = 0.9, params: dict | None = None) -> Plan:
    """Keep the paper's global batch and group size; choose the micro-batch; predict the per-GPU peak.

    params: {"total", "frozen", "trainable"} parameter counts; default: counted from the real architecture
    on the meta device (bench/builders.count_parameters).
    """
    fam = family_of(model)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown --precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if compile_decode and (fam != "janus" or fsdp):  # as train.py refuses it (models.check_sampling_flags)
        raise ValueError("--compile-decode is for Janus under DDP: Show-o's masked decoding has no one-token step, "
                         "and FSDP's gathered weights do not keep the addresses a compiled graph needs")
    prompts = prompts_per_step or PAPER[fam]["prompts_per_step"]
    group = group_size or PAPER[fam]["group_size"]
    if gpus < 1 or prompts % gpus:
        raise ValueError(f"{prompts} prompts per step do not divide over {gpus} GPUs, and a GRPO group never "
                         f"leaves its rank: use a GPU count that divides {prompts}, or change --prompts-per-step "
                         f"(that changes the paper's global batch)")
    if params is None:
        from bench.builders import count_parameters

        params = count_parameters(model)
    per_rank = prompts // gpus
    images = per_rank * group
    weight_b, compute_b = PRECISIONS[precision]
    shard = gpus if fsdp else 1
    states = {k: v / shard for k, v in R.training_state_bytes(params["trainable"], params["frozen"], precision).items()}
    fixed = dict(states)
    fixed["reference"] = weight_b * params["total"] / shard if kl else 0
    if weight_b != compute_b and not fsdp:  # autocast's cast cache, and the casts autograd saves for the backward
        fixed["bf16 weight copies"] = compute_b * params["trainable"]
    rollout = rollout_bytes(model, images, compute_b)
    if compile_decode:  # the compiled step's cache outlives the rollout (JanusPolicy.compile_decode keeps it)
        fixed["kept: rollout kv_cache"] = rollout.pop("kv_cache")
    if fsdp:  # generation calls the model 577 times: gather the full weights once, not per call
        rollout["unsharded_weights"] = compute_b * params["total"]  # gathered in the compute dtype
    usable = headroom * gpu_mem_gib * GiB
    chosen = None
    for accum in range(1, images + 1):  # fewest accumulation steps = largest micro-batch that fits
        micro = math.ceil(images / accum)
        train = training_bytes(model, micro, checkpointing, ratio_dist, train_on)
        peak = sum(fixed.values()) + max(sum(rollout.values()), sum(train.values()))
        chosen = (micro, math.ceil(images / micro), train, peak)
        if peak <= usable:
            break
    micro, accum, train, peak = chosen
    memory = {**fixed, **{f"rollout: {k}": v for k, v in rollout.items()},
              **{f"train: {k}": v for k, v in train.items()}}
    plan = Plan(model, gpus, gpu_mem_gib, fsdp, precision, checkpointing, kl, compile_decode, ratio_dist, train_on,
                prompts, group, per_rank, images, micro, accum, memory, peak, usable, peak <= usable)
    if not plan.fits:
        if sum(states.values()) > usable:
            plan.advice.append(f"the training states alone ({sum(states.values()) / GiB:.1f} GiB) exceed "
                               f"{usable / GiB:.1f} GiB under {'FSDP' if fsdp else 'DDP'}")
        if not fsdp:
            plan.advice.append("use --fsdp (FSDP2 fully_shard shards weights, grads, AdamW states and the reference "
                               "over the GPUs, as train.py --fsdp does)")
        if not checkpointing:
            plan.advice.append("use --checkpointing (train.py --grad-ckpt: ~1/17 of the activations, +33 % FLOPs)")
        if fsdp and checkpointing:
            plan.advice.append("more GPUs (FSDP shards further), LoRA, or a smaller group")
    return plan


def train_command(plan: Plan) -> str:
    """The torchrun line that runs this plan with train.py."""
    flags = [f"--model {plan.model}", "--mode grpo", f"--prompts-per-step {plan.prompts_per_step}",
             f"--group-size {plan.group_size}", f"--micro-batch {plan.micro_batch}", f"--precision {plan.precision}"]
    flags += ["--fsdp"] * plan.fsdp + ["--grad-ckpt"] * plan.checkpointing + ["--kl-beta 0"] * (not plan.kl)
    flags += [f"--ratio-dist {plan.ratio_dist}"] * (plan.ratio_dist != "guided")
    flags += [f"--grpo-on {plan.train_on}"] * (plan.train_on != "both")
    flags += ["--compile-decode reduce-overhead"] * plan.compile_decode
    return f"torchrun --nproc_per_node {plan.gpus} train.py " + " ".join(flags)


def format_plan(plan: Plan) -> str:
    images = plan.prompts_per_step * plan.group_size
    lines = [
        f"{plan.model} on {plan.gpus} GPUs x {plan.gpu_mem_gib:g} GiB, {'FSDP' if plan.fsdp else 'DDP'}, "
        f"{plan.precision} precision{', activation checkpointing' if plan.checkpointing else ''}",
        f"paper recipe kept: {plan.prompts_per_step} prompts x G {plan.group_size} = {images} images per step",
        f"group size {plan.group_size} | prompts per rank {plan.prompts_per_rank} | images per rank "
        f"{plan.images_per_rank} | micro-batch {plan.micro_batch} images | gradient accumulation {plan.grad_accum}",
        "expected memory per GPU (GiB):",
    ]
    for k, v in plan.memory.items():
        lines.append(f"  {k:<32s} {v / GiB:8.2f}")
    lines.append(f"  {'peak = states + reference + copies + kept + max(rollout, train)':<48s} {plan.peak / GiB:8.2f}  "
                 f"(usable {plan.usable / GiB:.1f})")
    if plan.fits:
        lines.append("fits.")
        if plan.precision == "mixed":
            lines.append("note: train.py has no bf16-weight, fp32-master mixed precision; plan --precision bf16 "
                         "(its fp32 master weights + bf16 compute) to get a command")
        else:
            lines.append(f"command: {train_command(plan)}")
    else:
        lines.append("does NOT fit, even at micro-batch 1" if plan.micro_batch == 1 else "does NOT fit")
        lines += [f"  - {a}" for a in plan.advice]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="UniRL recipe on your GPUs: batch split, micro-batch, memory per GPU.")
    ap.add_argument("--model", default="janus-pro-1b", help=" | ".join(TRUNKS))
    ap.add_argument("--gpus", type=int, default=8, help="number of GPUs (ranks)")
    ap.add_argument("--gpu-mem", type=float, default=80, help="memory per GPU in GiB")
    ap.add_argument("--fsdp", action="store_true", help="shard weights, grads, AdamW states and the reference")
    ap.add_argument("--precision", default="bf16", choices=list(PRECISIONS),
                    help="as train.py --precision: bf16 (fp32 master weights and AdamW, bf16 compute; 16 B/param), "
                         "fp32, bf16-lossy (8 B/param, loses small updates); mixed: ZeRO's bf16 + fp32 master, "
                         "to compare")
    ap.add_argument("--checkpointing", action="store_true", help="activation checkpointing (train.py --grad-ckpt)")
    ap.add_argument("--compile-decode", action="store_true",
                    help="Janus: train.py --compile-decode keeps the rollout's KV cache allocated between rollouts")
    ap.add_argument("--no-kl", action="store_true", help="kl_beta = 0: no reference model")
    ap.add_argument("--ratio-dist", default="guided", choices=["guided", "cond"],
                    help="as train.py: guided trains both CFG rows")
    ap.add_argument("--train-on", default="both", choices=["gen", "und", "both"], help="as train.py --grpo-on")
    ap.add_argument("--prompts-per-step", type=int, default=None, help="override the paper's 8")
    ap.add_argument("--group-size", type=int, default=None, help="override the paper's G (Janus 8, Show-o 3)")
    ap.add_argument("--headroom", type=float, default=0.9, help="share of GPU memory a plan may use")
    args = ap.parse_args(argv)
    try:
        plan = plan_recipe(args.model, args.gpus, args.gpu_mem, fsdp=args.fsdp, precision=args.precision,
                           checkpointing=args.checkpointing, kl=not args.no_kl, ratio_dist=args.ratio_dist,
                           train_on=args.train_on, compile_decode=args.compile_decode,
                           prompts_per_step=args.prompts_per_step,
                           group_size=args.group_size, headroom=args.headroom)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_plan(plan))


if __name__ == "__main__":
    main()
