"""train.py's flags: the `Config` dataclass (each field a `--flag` with its help), what every number and path
flag accepts (LIMITS), the precisions, `parse_config` (the shapes world's presets, a resumed run's saved config,
then the command line) and `validate`, every check that runs before a model loads.

The comments beside the fields say why a default is what it is, and which choices go beyond the paper.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

import prompts
import shapes
from models import check_cache_writable, check_model_name, check_sampling_flags
from support.checkpoint import resume_point
from support.cli import check_flags, given_flags, opt

DESCRIPTION = "UniRL training: the model improves itself from its own images and its own answers."


@dataclass
class Config:
    # run
    model: str = opt("shapes-janus", "preset: shapes-janus (the CPU-sized world) | shapes-showo (the same world, "
                                     "Show-o's family) | showo | showo-256 | showo-tiny | "
                                     "janus-pro-1b | janus-pro-7b | janus-1.3b | janus-tiny")
    model_path: str | None = opt(None, "folder or hub id overriding the preset's weights (also a ckpt-* folder)")
    mode: str = opt("grpo", "sft | grpo")
    out: str | None = opt(None, "run folder (run_config.json, metrics.jsonl, samples/, ckpt-*/); default runs/<model>-<mode>-<time>")
    resume: str | None = opt(None, "checkpoint or run folder to continue exactly")
    steps: int = opt(20, "optimizer iterations in total (a resumed run continues up to this)")
    seed: int = opt(0, "seeds prompts order, rollouts and answers")
    device: str = opt("auto", "auto | cpu | cuda")
    precision: str = opt("fp32", "fp32 | bf16: fp32 master weights, grads and AdamW state, bf16 compute | "
                                 "bf16-lossy: all stored in bf16, which loses small updates (it says how much)")
    threads: int = opt(0, "torch CPU threads per process; 0 leaves torch's default")
    fsdp: bool = opt(False, "shard weights, grads and AdamW state with FSDP2 (needed for Janus-Pro-7B); default DDP")
    grad_ckpt: bool = opt(False, "activation checkpointing in the trained transformer blocks")
    kv_bucket: int = opt(128, "AR sampling: attention reads the filled KV slots rounded up to this many (0: all slots)")
    compile_decode: str = opt("off", "AR sampling: torch.compile the one-token step: off | default | "
                                     "reduce-overhead (adds CUDA graphs)")
    # data
    prompts: str | None = opt(None, "jsonl of GenEval-style records; default: generate --num-prompts")
    num_prompts: int = opt(5000, "size of the generated training pool")
    exclude_prompts: str | None = opt("auto", "evaluation jsonl whose prompts never train; auto: GenEval's prompts "
                                              "shipped in data/geneval_metadata.jsonl, none: keep every prompt")
    prompts_per_step: int = opt(4, "prompts per optimizer step over all ranks (groups are never split)")
    group_size: int = opt(4, "G, images per prompt (the paper: 3 for Show-o, 8 for Janus)")
    # generate
    cfg_scale: float | None = opt(None, "classifier-free guidance; default: the family's (Janus 5)")
    temperature: float = opt(1.0, "image-token sampling temperature (full softmax, no top-k); Show-o: the re-masking noise")
    timesteps: int | None = opt(None, "masked decoding (Show-o): sampler steps; default the family's (18; UniRL evaluates with 50)")
    # understand
    max_answer_tokens: int = opt(24, "cap on answer length")
    # 1 (sampled) rather than greedy: GRPO's answer tokens are then samples of the policy, so their ratio, KL and
    # score function mean what their names say, and answers explore. Measured on the shapes world's development
    # seeds: a tie with greedy (README, "Choices the paper leaves open"). Evaluation always answers greedily.
    answer_temperature: float = opt(1.0, "answers during training: 1 samples them from the policy, 0 = greedy "
                                         "(as UniRL evaluates); GRPO scores them at this temperature")
    # sft
    sft_on: str = opt("both", "gen | und | both: which tokens SFT trains")
    sft_min_reward: float = opt(1.0, "generation SFT imitates images at least this good and best of their group")
    couple: bool = opt(False, "end-to-end: straight-through image tokens carry the answer loss into generation "
                              "(adds no loss term; needs und in --sft-on / --grpo-on)")
    gumbel_tau: float = opt(1.0, "temperature of the straight-through Gumbel-softmax (paper: not stated)")
    # grpo
    grpo_on: str = opt("both", "gen | und | both: which tokens GRPO trains")
    clip_eps: float = opt(0.2, "PPO clip epsilon")
    kl_beta: float = opt(0.2, "k3 KL weight to the starting model (released run name: beta_0_2); 0 = no reference")
    inner_iters: int = opt(1, "mu: updates per rollout; 1 makes the ratio exactly 1")
    # UniRL's reward gives partial credit per slot (object, count, color, relation): "three bowls" for four bowls
    # earns 1/2. "all" (beyond the paper) pays only a fully right answer, the judge's own all-or-nothing rule; it
    # is measured in the shapes world on position and color attributes, where partial credit is rarely the limit.
    reward_credit: str = opt("partial", "partial (UniRL: the mean credit of the category's slots) | all (1 only "
                                        "when every slot is right, else 0)")
    # UniRL rewards an answer for matching the prompt's truth, so an answer that repeats the prompt about an image
    # that does not show it is reinforced: the prompt labels every image, right or wrong. "agreement" goes beyond
    # the paper: the answer earns the share of --votes more answers about the same image that say the same thing
    # (self-consistency), so answers never learn from the prompt; generation keeps the prompt's reward.
    # "gated" goes beyond the paper and keeps its rule (no judge, no external image): the answers train only about
    # images on which most of --votes more sampled answers earn the prompt's full reward, the model's own verdict
    # that the image shows the prompt; elsewhere the prompt would label an image that the model reads otherwise.
    # "judged" is a diagnostic, not a method: the shapes world's exact judge (ground truth no real run has) keeps
    # the answers about images that show the prompt, where the prompt's truth is the image's, and drops the rest from
    # the answer term. It tells whether GRPO on answers about the model's own images can raise understanding once the
    # prompt no longer mislabels the failed ones (docs/shapes_experiment.md: why understanding falls).
    # "judged-shuffled" is its control: as many answers per group as the judge passes, drawn at random, to tell a
    # smaller answer signal from the judge's choice. With --kl-beta > 0 the KL term still holds every answer near the
    # reference, trained or not.
    # "counted" goes beyond the paper and keeps its rule: the control with the model's count in place of the judge's.
    # Each group trains as many of its answers, drawn at random, as it has answers that earn the full reward, so a
    # prompt whose images the model itself mostly reads as failed trains few answers or none (one gives no signal).
    # In the shapes world it did no better than UniRL's answers, on the development seeds or on fresh ones
    # (docs/shapes_experiment.md).
    # "image-baseline" goes beyond the paper and keeps its reward: the answer is scored against the prompt as in
    # UniRL, but its baseline is the mean score of --votes more answers sampled about the same image, not the mean
    # over the prompt's G images. UniRL shares the image's advantage, so an answer that reads a failed image right is
    # pushed down because the image failed, which the answer did not choose; a baseline that sees the image removes
    # that term (an answer is an action taken after its image, and the image is its state). It is scaled by the std
    # of the group's answers and votes, as UniRL's advantage is by the group's std; that std still holds the spread
    # between images, so the answers' steps are smaller than UniRL's (logged: und_adv_abs against adv_abs).
    answer_reward: str = opt("prompt", "GRPO on answers: prompt (UniRL: the answer scored against the prompt's "
                                       "truth) | agreement (beyond the paper: agreement with --votes more sampled "
                                       "answers about the same image) | gated (beyond the paper: prompt, on the "
                                       "images most of --votes more sampled answers read as the prompt) | judged "
                                       "(shapes world only, a diagnostic: prompt, on the images the exact judge "
                                       "passes; the others' answers not trained) | judged-shuffled (its control: as "
                                       "many answers per group, drawn at random) | counted (beyond the paper: as many "
                                       "answers per group, drawn at random, as earn the full reward) | "
                                       "image-baseline (beyond the paper: prompt, less the mean of --votes more "
                                       "sampled answers about the same image)")
    votes: int = opt(3, "--answer-reward agreement, gated or image-baseline: extra sampled answers per image")
    # UniRL sums the two GRPO terms. Below 1 (beyond the paper) the answer tokens, whose reward comes from the prompt
    # and not from the image, pull less on the weights both tasks share. The whole answer term is scaled: its KL too,
    # and under --couple the straight-through gradient it sends into generation. AdamW rescales each weight's steps,
    # so w mostly changes the mix on the weights both terms reach. Tried in the shapes world
    # (docs/shapes_experiment.md).
    und_weight: float = opt(1.0, "GRPO on both: weight of the answer-token term (its KL included) against the "
                                 "image-token term (1: UniRL's sum)")
    # Below 1 (beyond the paper, within its rule) each answer joins GRPO's answer term with this probability, drawn
    # anew every step, and the advantages are normalised among the answers drawn. In the shapes world the judged
    # diagnostic's control, which keeps as many answers per group at random as the judge passes (about 0.7), kept
    # understanding on the development seeds as well as the judge's own choice did; a uniform share, at 0.7 or 0.4,
    # did not, and 0.7 failed its test on fresh seeds (docs/shapes_experiment.md: why understanding falls).
    answer_keep: float = opt(1.0, "GRPO on answers: the probability that an answer joins the answer term (1: every "
                                  "answer, UniRL)")
    ratio_dist: str = opt("guided", "guided | cond: the distribution in the ratio under CFG")
    estimator: str = opt("remask", "masked decoding: remask | trajectory, what an image token's log-prob means (grpo.py)")
    traj_steps: int = opt(0, "trajectory estimator: score the tokens of this many random sampler steps (0 = all)")
    # optim
    lr: float = opt(1e-5, "AdamW learning rate (the paper: 1e-5)")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    warmup_steps: int = opt(0, "linear warm-up steps")
    grad_clip: float = opt(1.0, "max global grad norm; 0 disables")
    micro_batch: int = opt(8, "images per forward/backward; gradients accumulate over micro-batches")
    # logging
    sample_every: int = opt(10, "write a sample grid every k steps (and at the last)")
    eval_every: int = opt(0, "held-out evaluation every k steps, before the first and at the last (0 = off)")
    eval_prompts: int = opt(12, "held-out prompts, kept out of the training pool")
    eval_samples: int = opt(2, "images per held-out prompt")
    save_every: int = opt(10, "checkpoint every k steps (and at the last)")
    keep_checkpoints: int = opt(2, "how many recent checkpoints to keep")
    report_to: str = opt("none", "live logging of every metrics.jsonl line: none | tensorboard (<out>/tensorboard) | "
                                 "wandb; each needs its package installed")


# --precision -> (dtype of the stored weights, grads and AdamW state; dtype the forwards compute in). bf16 is
# UniRL's mixed precision: AdamW's steps of about lr (1e-5) land on fp32 master weights. bf16-lossy stores the
# weights in bf16, whose spacing near a weight w is |w| / 256 to |w| / 128: a step below half of it rounds away.
PRECISIONS = {"fp32": (torch.float32, torch.float32), "bf16": (torch.float32, torch.bfloat16),
              "bf16-lossy": (torch.bfloat16, torch.bfloat16)}


def lossy_warning(lr: float) -> str:
    """What --precision bf16-lossy loses at this rate, printed at the start of such a run."""
    return (f"warning: --precision bf16-lossy stores the weights, grads and AdamW state in bf16, which rounds away "
            f"an AdamW step (about --lr) below half the spacing near its weight: at --lr {lr:g}, weights "
            f"larger than about {512 * lr:.2g} in magnitude never move, nor do norm weights near 1 below "
            f"--lr 0.002. --precision bf16 loses no update (fp32 master weights, 8 more bytes per trained weight)")
# the --answer-reward choices that sample --votes more answers about each image
VOTED = ("agreement", "gated", "image-baseline")
# What every number and path flag accepts, checked by cli.check_flags in validate() before anything loads:
# min / max inclusive, above / below exclusive; path: file | folder | out | model (cli.PATH_KINDS).
LIMITS = dict(
    model_path=dict(path="model"), out=dict(path="out"), resume=dict(path="folder"), prompts=dict(path="file"),
    steps=dict(min=1), seed=dict(min=0), threads=dict(min=0), kv_bucket=dict(min=0),
    num_prompts=dict(min=1), prompts_per_step=dict(min=1), group_size=dict(min=1),
    cfg_scale=dict(min=0), temperature=dict(min=0), timesteps=dict(min=1),
    max_answer_tokens=dict(min=1), answer_temperature=dict(min=0),
    sft_min_reward=dict(min=0, max=1),  # rewards lie in [0, 1]: above 1 no image would ever be imitated
    gumbel_tau=dict(above=0),
    clip_eps=dict(above=0, below=1),  # the lower clip 1 - eps must stay a positive ratio
    kl_beta=dict(min=0), inner_iters=dict(min=1), traj_steps=dict(min=0), votes=dict(min=1), und_weight=dict(above=0),
    answer_keep=dict(above=0, max=1),
    lr=dict(above=0), weight_decay=dict(min=0), warmup_steps=dict(min=0), grad_clip=dict(min=0),
    micro_batch=dict(min=1),
    sample_every=dict(min=1), eval_every=dict(min=0), eval_prompts=dict(min=1), eval_samples=dict(min=1),
    save_every=dict(min=1), keep_checkpoints=dict(min=0),  # 0 keeps them all (checkpoint.save_checkpoint)
)


def parse_config(argv: list[str] | None = None) -> Config:
    """argparse built from the dataclass; unknown flags are errors. With --resume, the saved config
    is the base and only the flags given on this command line override it. A run that died before its
    first checkpoint resumes from step 0 with its run_config.json (cfg.resume is then its folder)."""
    given = given_flags(Config, argv, DESCRIPTION, presets=shapes.TRAIN_DEFAULTS)
    base = {}
    if "resume" in given:
        quiet = os.environ.get("RANK", "0") != "0"  # before the process group exists: only rank 0 warns
        given["resume"], base = resume_point(given["resume"], given.get("out"), (lambda _: None) if quiet else print)
        base = saved_precision(base)  # a run saved before --precision continues as it ran
    model = given.get("model", base.get("model", Config.model))
    # the preset's settings (shapes.TRAIN_DEFAULTS: the world's measured ones), under the saved and given ones
    cfg = Config(**{**shapes.TRAIN_DEFAULTS.get(model, {}), **base, **given})
    if cfg.out is None:  # a fresh folder per run, so re-running a command never collides with an old run
        cfg.out = f"runs/{cfg.model}-{cfg.mode}-{time.strftime('%Y%m%d-%H%M%S')}"
    return cfg


def saved_precision(saved: dict) -> dict:
    """A config saved before --precision (keys dtype, autocast) in today's terms: a resumed run continues as it
    ran. bf16 weights -> bf16-lossy (which then says what it loses), fp32 weights + autocast -> bf16."""
    old = {k: saved[k] for k in ("dtype", "autocast") if k in saved}
    if not old:
        return saved
    precision = "bf16-lossy" if old.get("dtype") == "bfloat16" else "bf16" if old.get("autocast") else "fp32"
    return {**{k: v for k, v in saved.items() if k not in old}, "precision": precision}


# ------------------------------------------------------------------ checks before any heavy work
def validate(cfg: Config, world: int) -> None:
    """Every bad input fails here, with the problem and the fix, before models are loaded."""
    check_flags(cfg, LIMITS)
    check_model_name(cfg.model)
    check_sampling_flags(cfg.model, cfg.kv_bucket, cfg.compile_decode, cfg.fsdp)
    choices = {"mode": ("sft", "grpo"), "sft_on": ("gen", "und", "both"), "grpo_on": ("gen", "und", "both"),
               "ratio_dist": ("guided", "cond"), "estimator": ("remask", "trajectory"),
               "answer_reward": ("prompt", "agreement", "gated", "judged", "judged-shuffled", "counted",
                                 "image-baseline"),
               "reward_credit": ("partial", "all"),
               "precision": tuple(PRECISIONS), "device": ("auto", "cpu", "cuda"),
               "report_to": ("none", "tensorboard", "wandb")}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(cfg, name)!r}: choose one of {', '.join(allowed)}")
    if cfg.mode == "grpo" and cfg.group_size < 2:
        raise ValueError(f"--group-size {cfg.group_size}: GRPO compares images within a group; use at least 2")
    if cfg.prompts_per_step % world:
        raise ValueError(f"--prompts-per-step {cfg.prompts_per_step} does not divide over {world} ranks: "
                         f"use a multiple of {world} so every rank holds whole groups")
    if cfg.couple and (cfg.sft_on if cfg.mode == "sft" else cfg.grpo_on) == "gen":
        raise ValueError(f"--couple carries the answer loss into generation, but --{cfg.mode}-on gen trains no "
                         f"answers: use --{cfg.mode}-on und or both, or drop --couple")
    if cfg.answer_reward != "prompt" and (cfg.mode != "grpo" or cfg.grpo_on == "gen"):
        raise ValueError(f"--answer-reward {cfg.answer_reward} rewards GRPO's answer tokens, and this run trains none: "
                         "use --mode grpo with --grpo-on und or both, or drop it")
    if cfg.answer_reward != "prompt" and cfg.couple:  # the coupling would carry that reward into the images
        raise ValueError(f"--answer-reward {cfg.answer_reward} with --couple would train generation on the answers' "
                         "own reward, not on the prompt's: drop one of the two flags")
    if cfg.answer_reward.startswith("judged") and not cfg.model.startswith("shapes-"):
        raise ValueError(f"--answer-reward {cfg.answer_reward} needs the shapes world's exact judge, and --model "
                         f"{cfg.model} has none: use --model shapes-janus or shapes-showo, or another --answer-reward")
    if cfg.answer_reward.startswith("judged") and cfg.prompts:  # the judge reads the world's own records only
        raise ValueError(f"--answer-reward {cfg.answer_reward} judges the world's own prompts, and --prompts "
                         f"{cfg.prompts} replaces them: drop --prompts")
    if cfg.answer_reward in VOTED and cfg.answer_temperature == 0:
        raise ValueError(f"--answer-reward {cfg.answer_reward} reads more sampled answers about each image, and greedy "
                         "answers (--answer-temperature 0) are all the same answer: use a temperature > 0")
    if cfg.answer_keep != 1 and (cfg.mode != "grpo" or cfg.grpo_on == "gen" or cfg.couple
                                 or cfg.answer_reward != "prompt"):
        raise ValueError(f"--answer-keep {cfg.answer_keep} draws which answers GRPO's answer term trains on, with "
                         "UniRL's answer reward and no coupling: use --mode grpo, --grpo-on und or both, "
                         "--answer-reward prompt and no --couple, or pass --answer-keep 1")
    if cfg.votes != Config.votes and cfg.answer_reward not in VOTED:  # a setting that would change nothing
        raise ValueError(f"--votes {cfg.votes} sets how many more answers --answer-reward {', '.join(VOTED)} sample "
                         f"about each image, and this run's --answer-reward {cfg.answer_reward} samples none: pass one "
                         f"of those, or drop --votes")
    if cfg.und_weight != 1 and (cfg.mode, cfg.grpo_on) != ("grpo", "both"):  # a setting that would change nothing
        raise ValueError(f"--und-weight {cfg.und_weight} weighs GRPO's answer term against its image term, and this "
                         f"run has no such sum (--mode {cfg.mode}, --{cfg.mode}-on "
                         f"{cfg.grpo_on if cfg.mode == 'grpo' else cfg.sft_on}): use --mode grpo --grpo-on both, or "
                         f"pass --und-weight 1")
    trains_images = (cfg.grpo_on if cfg.mode == "grpo" else "") in ("gen", "both")
    if trains_images and cfg.temperature == 0 and "showo" not in cfg.model:  # Show-o: T is the re-masking noise
        raise ValueError("--temperature 0 picks image tokens by argmax, and GRPO's ratio needs their log-probs "
                         "under softmax(logits / T): use a temperature > 0, or --grpo-on und")
    check_cache_writable(cfg.model, cfg.resume or cfg.model_path)  # e.g. the shapes base, pretrained first
    cfg.exclude_prompts = prompts.exclusion_file(cfg.exclude_prompts, cfg.model)  # a file, or None
