"""UniRL training: the model improves itself from its own images and its own answers.

One iteration, on every rank:
    1. take this rank's prompts (GenEval-style records: prompt, question, true answer)
    2. rollout      G images per prompt                                   generate.py
    3. understand   the same model answers each image's question          understand.py
    4. reward       the answer scored against the record's truth           reward.py
    5. learn        SFT (sft.py) or GRPO (grpo.py) on image and/or answer tokens, through DDP

Read `train_step` first: it is the iteration, numbered as above. Which of SFT and GRPO runs is decided there
once, as an `Objective` (sft_objective / grpo_objective); `learn` runs any objective over micro-batches and
never asks which. The flags, their limits and every check made before a model loads are in config.py.
Every default a run uses is printed at its start; `--help` shows the shapes world's presets (shapes.TRAIN_DEFAULTS)
beside each flag's default.

Deliberate simplifications: prompts come from an in-memory generator or a jsonl file; a constant
learning rate after an optional linear warm-up; the reference model for the KL is the starting model.

Commands:
    python train.py --model janus-tiny --mode grpo --steps 3 --out runs/tiny          # CPU, one process
    torchrun --standalone --nproc_per_node 2 train.py --model janus-tiny --steps 3    # CPU, gloo
    torchrun --nproc_per_node 8 train.py --model janus-pro-1b --mode grpo             # 8 GPUs, nccl
    python train.py --resume runs/tiny --steps 6                                      # continue a run
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers.utils import logging as transformers_logging

# the algorithm: one import per stage of an iteration
import reward  # 4. answers -> rewards -> group advantages
from generate import group_uniforms, image_uniforms, rollout, seed_for  # 2. G images per prompt
from grpo import grpo_step_loss, remask_positions, sample_logprobs, trajectory_subset  # 5. GRPO
from sft import coupling_uniforms, select_best, sft_step_loss  # 5. SFT
from understand import answer_questions, sample_votes  # 3. the model answers about its own images
# around it: prompts, models, the held-out evaluation, and the plumbing in support/
import prompts
import shapes
from config import PRECISIONS, VOTED, Config, lossy_warning, parse_config, validate  # the flags and their checks
from evaluate import before_after, held_out_eval
from models import load_policy, set_sampling
from support.checkpoint import (atomic_write_text, claim_run_folder, is_checkpoint, load_optimizer,
                                optimizer_tensors, read_trainer_state, restore_rng, resume_advice, save_checkpoint,
                                unlock_run_folder)
from support.metrics import Reporter, headline, save_grid, step_line, step_metrics, trim_metrics, write_metrics
from support.parallel import (check_finite, check_grads, clip_grads, end_worker, full_params, gather_lists,
                              gathered_state_dict, is_main, mean_over_ranks, micro_step, on_rank0, print0,
                              same_on_every_rank, setup_distributed, teardown_distributed, wrap)
from support.plot import plot_metrics, read_metrics


def load_records(cfg: Config) -> tuple[list[dict], list[dict]]:
    """The training prompts (a jsonl file or the generator, minus any evaluation prompts) and the held-out ones."""
    world_eval = None  # the shapes world's own evaluation records
    if cfg.prompts:
        records = prompts.read_records(cfg.prompts)
    elif cfg.model.startswith("shapes-"):  # the shapes world speaks its own small vocabulary
        # its fixed split (shapes.split_of): training draws "train" prompts only, evaluation "eval" ones only
        records = shapes.training_records(cfg.num_prompts, seed=cfg.seed)
        world_eval = shapes.eval_records(shapes.EVAL_PER_TAG)  # as evaluate.py --shapes measures
    else:
        records = prompts.make_records(cfg.num_prompts, seed=cfg.seed)
    if cfg.exclude_prompts:
        records, dropped = prompts.exclude_records(records, prompts.read_records(cfg.exclude_prompts))
        print0(f"excluded {dropped} training prompts that appear in {cfg.exclude_prompts}")
    if not records:
        raise ValueError("no training prompts left: check --prompts / --exclude-prompts")
    if not cfg.eval_every:
        return records, []
    if world_eval is not None:
        return records, world_eval
    # the last prompts are held out, and every repeat of them (same prompts.prompt_key) leaves training
    training, held_out = prompts.hold_out(records, cfg.eval_prompts)
    if not training or len(held_out) < cfg.eval_prompts:
        raise ValueError(f"--eval-prompts {cfg.eval_prompts} leaves {len(training)} training prompts out of "
                         f"{len(records)} ({len(held_out)} distinct held out): lower it or raise --num-prompts")
    return training, held_out


def step_records(records: list[dict], cfg: Config, step: int, rank: int, world: int) -> tuple[list[dict], int]:
    """This rank's prompts at `step`, and its first image's index in the global batch.

    Epoch-wise shuffles from (seed, epoch), so the global batch does not depend on the world size."""
    per_rank = cfg.prompts_per_step // world
    chosen = []
    for j in range(step * cfg.prompts_per_step + rank * per_rank, step * cfg.prompts_per_step + (rank + 1) * per_rank):
        epoch, k = divmod(j, len(records))
        order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed_for(cfg.seed, epoch)))
        chosen.append(records[int(order[k])])
    return chosen, rank * per_rank * cfg.group_size


# ------------------------------------------------------------------ one iteration
def train_step(step, cfg, policy, model, ref, optimizer, records, rank, world) -> dict:
    """Rollout, understand, reward, learn. `model` is the DDP-wrapped policy (or the policy itself)."""
    times, stats = {}, {}
    cfg_scale = guidance_scale(cfg, policy)
    # 1. this rank's prompts
    mine, first = step_records(records, cfg, step, rank, world)
    # 2-3. rollout (G images per prompt, each with its own random stream) and self-QA, no gradients
    policy.eval()
    with full_params(policy), autocast(cfg, policy):  # FSDP: gather the weights once for all sampling steps
        ro, (times["t_rollout"], times["t_understand"]) = sample_and_answer(step, cfg, policy, mine, first, cfg_scale)
    # 4. reward: the answer scored against the record's truth, compared within each prompt's group of G
    scores = reward.credited(reward.score_answers(ro.answers, ro.records), cfg.reward_credit)  # --reward-credit
    ro.rewards = torch.tensor(scores, dtype=torch.float32)
    groups = ro.rewards.view(-1, cfg.group_size)  # (P, G)
    # 5. learn: SFT or GRPO is chosen here, once; the learning loop below never asks which one it runs
    t0 = time.perf_counter()
    policy.train()
    device = ro.image_ids.device
    if cfg.mode == "sft":  # imitate the best image of each group that is good enough
        keep = select_best(groups, cfg.sft_min_reward).view(-1).float().to(device)
        stats["sft_keep_frac"] = keep.mean().item()
        objective = sft_objective(cfg, policy, ro, keep)
    else:
        advantages = reward.group_advantages(groups).view(-1).to(device)  # (N,) one per image
        und_advantages = answer_advantages(cfg, ro, groups, step, first, stats)  # None: UniRL, the image's
        stats["adv_abs"] = advantages.abs().mean().item()  # the size of a step's push, to compare answer rewards
        if und_advantages is not None:  # how many answers carry a signal, and how hard, against the images'
            stats["und_signal_frac"] = (und_advantages != 0).float().mean().item()
            stats["und_adv_abs"] = und_advantages.abs().mean().item()
            und_advantages = und_advantages.to(device)
        objective = grpo_objective(cfg, policy, ro, advantages, ref, und_advantages)
    stats.update(learn(cfg, policy, model, optimizer, ro, step, objective, cfg_scale))
    times["t_learn"] = time.perf_counter() - t0
    stats.update(times)
    stats["zero_var_frac"] = reward.zero_variance_fraction(groups)
    return stats, ro


def answer_advantages(cfg, ro, groups, step, first, stats) -> torch.Tensor | None:
    """The answer tokens' own advantages (N,), or None when each answer shares its image's (UniRL). Every choice
    other than UniRL's goes beyond the paper (config.py says why); judged and judged-shuffled are diagnostics of the
    shapes world. Rates of what was kept go into stats."""
    shape = groups.shape  # (P, G)
    # each rank's groups' rows of one draw over the step's batch; the 0 in the seeds below is the batch's first image,
    # the streams the recorded one-process runs used
    draw = lambda seed: group_uniforms(seed, first, shape[0], cfg.prompts_per_step, cfg.group_size)
    if cfg.answer_reward == "agreement":  # the answer's own reward, normalised within the same groups
        agreement = torch.tensor(reward.agreement(ro.answers, ro.votes), dtype=torch.float32)
        stats["answer_agreement"] = agreement.mean().item()
        return reward.group_advantages(agreement.view(shape)).view(-1)
    if cfg.answer_reward == "image-baseline":  # the prompt's reward, less the mean of the image's other answers
        votes = torch.tensor([reward.credited(reward.score_answers(vs, [record] * len(vs)), cfg.reward_credit)
                              for vs, record in zip(ro.votes, ro.records)])  # (N, votes)
        return reward.image_baseline_advantages(groups, votes.view(*shape, -1)).view(-1)
    if cfg.answer_reward == "gated":  # only about images the model itself reads as the prompt
        keep = torch.tensor(reward.reads_as_prompt(ro.votes, ro.records), dtype=torch.bool).view(shape)
        stats["answer_gated_frac"] = keep.float().mean().item()
    elif cfg.answer_reward.startswith("judged"):  # only about images the exact judge passes
        keep = torch.tensor(shapes.judge_pixels(ro.records, ro.pixels), dtype=torch.bool).view(shape)
        stats["answer_judged_frac"] = keep.float().mean().item()
        if cfg.answer_reward == "judged-shuffled":  # its control: as many answers per group, drawn at random
            keep = keep.gather(1, draw(seed_for(cfg.seed, step, 2000)).argsort(dim=1))
    elif cfg.answer_reward == "counted":  # as many answers per group, at random, as earn the full reward
        keep = groups >= 1 - 1e-6  # (partial credit: 1 is every slot right)
        stats["answer_counted_frac"] = keep.float().mean().item()
        keep = keep.gather(1, draw(seed_for(cfg.seed, step, 0, 4000)).argsort(dim=1))
    elif cfg.answer_keep < 1:  # a random share of the answers, drawn anew every step
        keep = draw(seed_for(cfg.seed, step, 0, 3000)) < cfg.answer_keep
    else:
        return None
    return reward.kept_group_advantages(groups, keep).view(-1)


def guidance_scale(cfg, policy) -> float:
    """--cfg-scale, or when it is unset (None) the family's own scale (Janus 5, Show-o its preset's). Training never
    runs unguided by omission: a scale that means no guidance is written out (Janus 1, Show-o 0)."""
    return cfg.cfg_scale if cfg.cfg_scale is not None else policy.default_cfg_scale


def sample_and_answer(step, cfg, policy, records, first, cfg_scale):
    """2-3. Rollout and self-QA, no gradients. Returns the Rollout and the two stage times."""
    t0 = time.perf_counter()
    ro = rollout(policy, records, cfg.group_size, seed=cfg.seed, step=step, first_index=first,
                 cfg_scale=cfg_scale, temperature=cfg.temperature, timesteps=cfg.timesteps)
    t1 = time.perf_counter()
    n = len(ro.records)
    ro.und_images = policy.images_for_understanding(ro.image_ids, ro.pixels)
    # the answers draw from their own streams (seed + 1), so changing the answer sampler never moves the images
    answer_u = image_uniforms(cfg.seed + 1, step, first, n, cfg.max_answer_tokens).to(ro.image_ids.device)
    questions = [r["question"] for r in ro.records]
    (ro.question_ids, ro.question_mask, ro.answer_ids, ro.answer_mask, ro.answers) = answer_questions(
        policy, ro.und_images, questions, max_new_tokens=cfg.max_answer_tokens,
        temperature=cfg.answer_temperature, uniforms=answer_u)
    if cfg.answer_reward in VOTED:  # more answers about each image, each from its own stream
        ro.votes = sample_votes(policy, ro.und_images, questions, cfg.votes, seed=cfg.seed, step=step,
                                first_index=first, max_new_tokens=cfg.max_answer_tokens,
                                temperature=cfg.answer_temperature)
    return ro, (t1 - t0, time.perf_counter() - t1)


def autocast(cfg, policy):
    """--precision bf16: bf16 autocast around sampling, answering, the training forwards and the held-out
    evaluation (the fp32 weights stay the master copy). Log-probs and losses are upcast to fp32; the sampling
    KV cache is stored in bf16. One region spans a whole rollout, so autocast casts each weight to bf16 once,
    not at every step. A no-op when the weights are stored in the compute dtype (fp32, bf16-lossy)."""
    stored, compute = PRECISIONS[cfg.precision]
    if compute == stored:
        return contextlib.nullcontext()
    device = next(policy.parameters()).device
    return torch.autocast(device.type, dtype=compute)


@dataclass
class Objective:
    """What the learning loop needs from SFT or GRPO: built once per step by sft_objective / grpo_objective."""

    trained: str  # gen | und | both: the token streams that carry a loss term (--sft-on / --grpo-on)
    guided: bool  # the generation logits in the loss: CFG-guided (GRPO, --ratio-dist guided) or conditional
    estimator: str  # masked decoding: which image tokens are scored, remask | trajectory (grpo.py)
    answers: tuple  # (ids, mask) (N, A): the answer tokens the understanding term trains on
    prepare: object  # batches -> one no-grad input of the loss per micro-batch (GRPO: old and reference log-probs)
    loss: object  # (out, batch, idx, prepared) -> (per-sample loss (n,), stats)


def sft_objective(cfg, policy, ro, keep) -> Objective:
    """SFT: image tokens of the kept images (keep (N,) 0/1), and the TRUE answer given each image."""
    truth = [t.to(ro.image_ids.device) for t in policy.tokenize_answers([r["answer"] for r in ro.records])]
    return Objective(cfg.sft_on, guided=False, estimator="remask", answers=truth,  # Show-o's own masked objective
                     prepare=lambda batches: [None] * len(batches),
                     loss=lambda out, batch, idx, _: sft_step_loss(out, batch, keep[idx]))


def grpo_objective(cfg, policy, ro, advantages, ref=None, und_advantages=None) -> Objective:
    """GRPO: the model's own image and answer tokens, weighted by their group advantages (N,). und_advantages:
    the answers' own (--answer-reward other than prompt), else they share their image's."""
    temperature = cfg.temperature if policy.decoding == "ar" else 1.0  # Show-o samples the untempered softmax
    # greedy answers (0) come from no sampling distribution: their log-probs are the untempered policy's
    answer_temperature = cfg.answer_temperature if cfg.answer_temperature > 0 else 1.0

    def prepare(batches):  # no-grad log-probs of the sampled tokens, before the first update
        olds = refs = [None] * len(batches)
        with autocast(cfg, policy):
            if cfg.inner_iters > 1:  # old log-probs from a teacher-forced pass, not the sampler (ratio exactly 1)
                olds = [sample_logprobs(policy, b, temperature, answer_temperature) for b in batches]
            if ref is not None:  # the KL's anchor: the starting model on the same tokens
                refs = [sample_logprobs(ref, b, temperature, answer_temperature) for b in batches]
        return list(zip(olds, refs))

    def loss(out, batch, idx, prepared):
        old, ref_logps = prepared
        und = und_advantages[idx] if und_advantages is not None else None
        return grpo_step_loss(out, batch, old, ref_logps, advantages[idx], cfg, temperature, answer_temperature, und)

    return Objective(cfg.grpo_on, guided=cfg.ratio_dist == "guided", estimator=cfg.estimator,
                     answers=(ro.answer_ids, ro.answer_mask), prepare=prepare, loss=loss)


def build_batch(policy, ro, idx, cfg_scale, objective: Objective, couple: bool, scored=None) -> dict:
    """The forward inputs for the images `idx`. scored: (N, T) bool, the image tokens a masked-decoding family's
    loss scores (scored_image_tokens); unused by an autoregressive family, which scores every token.

    "gen" / "und" are the token streams that carry a loss term. "couple_gen" holds the generation inputs when
    only the coupling needs them (--couple with und): the straight-through tokens are made from those logits,
    and no loss term reads them."""
    train_gen, train_und = objective.trained in ("gen", "both"), objective.trained in ("und", "both")
    batch = {}
    if train_gen or (couple and train_und):
        gen = dict(prompt_ids=ro.prompt_ids[idx], prompt_mask=ro.prompt_mask[idx], image_ids=ro.image_ids[idx],
                   cfg_scale=cfg_scale if objective.guided else None)
        if policy.decoding == "masked":  # which tokens are hidden and scored (grpo.py, --estimator)
            if objective.estimator == "trajectory":  # each token under the sampler state that committed it
                gen["commit_step"] = ro.commit_steps[idx]
            gen["token_mask"] = scored[idx]
        batch["gen" if train_gen else "couple_gen"] = gen
    if train_und:
        batch["und"] = dict(images=ro.und_images[idx], prompt_ids=ro.question_ids[idx],
                            prompt_mask=ro.question_mask[idx], answer_ids=objective.answers[0][idx],
                            answer_mask=objective.answers[1][idx])
    return batch


def scored_image_tokens(cfg, policy, ro, step, objective: Objective) -> torch.Tensor:
    """Masked decoding (Show-o): the image tokens the loss scores, (N, T) bool (grpo.py, --estimator)."""
    if objective.estimator == "trajectory":  # the tokens committed at the chosen sampler steps
        return trajectory_subset(ro.commit_steps, cfg.traj_steps, cfg.seed, step)
    # one re-mask ratio per group, seeded on global indices: every rank and every pass masks alike
    return remask_positions(cfg.seed, step, ro.first_index, ro.image_ids.shape[0], cfg.group_size,
                            policy.num_image_tokens).to(ro.image_ids.device)


def learn(cfg, policy, model, optimizer, ro, step, objective: Objective, cfg_scale) -> dict:
    """mu optimizer updates on this rollout, each accumulated over micro-batches (no_sync but the last)."""
    n = ro.image_ids.shape[0]
    scored = scored_image_tokens(cfg, policy, ro, step, objective) if policy.decoding == "masked" else None
    chunks = [torch.arange(i, min(i + cfg.micro_batch, n)) for i in range(0, n, cfg.micro_batch)]
    batches = [build_batch(policy, ro, idx, cfg_scale, objective, cfg.couple, scored) for idx in chunks]
    prepared = objective.prepare(batches)
    stats = {}
    for _ in range(cfg.inner_iters):
        optimizer.zero_grad(set_to_none=True)
        for j, (idx, batch) in enumerate(zip(chunks, batches)):
            with micro_step(model, last=j + 1 == len(chunks)):  # gradients sync on the last micro-step only
                couple = None
                if cfg.couple and "und" in batch:  # the answer loss also reaches the image-token logits
                    u = coupling_uniforms(cfg.seed, step, ro.image_ids, idx, policy.codebook_size)
                    couple = dict(tau=cfg.gumbel_tau, noise=u)
                with autocast(cfg, policy):  # through `model`: under DDP only its forward all-reduces the grads
                    out = model(gen=batch.get("gen", batch.get("couple_gen")), und=batch.get("und"), couple=couple)
                per_sample, s = objective.loss(out, batch, idx, prepared[j])
                loss = per_sample.sum() / n  # micro-batch share of the rank's mean
                check_finite(loss, step, s)
                loss.backward()
            for k, v in s.items():
                stats[k] = stats.get(k, 0.0) + v * len(idx) / n
            stats["loss"] = stats.get("loss", 0.0) + loss.item()
        norm = None
        if cfg.grad_clip > 0:
            norm = clip_grads([p for p in policy.parameters() if p.requires_grad], cfg.grad_clip)
            stats["grad_norm"] = stats.get("grad_norm", 0.0) + norm  # summed here, averaged over mu below
        check_grads(policy, step, norm)  # before the step: a NaN never reaches the weights
        optimizer.step()
    return {k: v / cfg.inner_iters for k, v in stats.items()}


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(argv)
    rank, world, device = setup_distributed(cfg.device)
    try:
        run(cfg, rank, world, device)
    finally:
        unlock_run_folder(cfg.out)  # the OS would drop it at exit; a caller running again needs it now
        teardown_distributed()


def run(cfg: Config, rank: int, world: int, device: torch.device):
    validate(cfg, world)
    transformers_logging.disable_progress_bar()  # one bar, ours: none per weight load or per checkpoint written
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    records, held_out = load_records(cfg)
    ckpt = cfg.resume if cfg.resume and is_checkpoint(cfg.resume) else None  # None: a resume starts at step 0
    start = read_trainer_state(ckpt)["step"] if ckpt else 0
    same_on_every_rank((ckpt, start), "resume points", "put the run folder on a file system every machine shares")
    out = Path(cfg.out)
    # one run per folder: rank 0 holds its lock until the run ends (main releases it); a refusal stops every rank
    on_rank0(lambda: claim_run_folder(out, resuming=cfg.resume is not None, start=start), (ValueError, OSError),
             ValueError)
    # rank 0 logs; a missing tensorboard or wandb package stops the run here, before any model loads
    reporter = Reporter(cfg.report_to if is_main() else "none", Path(cfg.out), dataclasses.asdict(cfg), start)
    per_rank = cfg.prompts_per_step // world
    print0(json.dumps(dataclasses.asdict(cfg), indent=1))
    print0(f"world {world} | prompts per rank {per_rank} | images per step {cfg.prompts_per_step * cfg.group_size} | "
           f"micro-batches per rank {math.ceil(per_rank * cfg.group_size / cfg.micro_batch)} | "
           f"training prompts {len(records)}")
    if cfg.precision == "bf16-lossy":  # weights stored in bf16 never train silently: say what they lose
        print0(lossy_warning(cfg.lr))
    stored, compute = PRECISIONS[cfg.precision]  # bf16: fp32 weights (the master copy), bf16 forwards
    policy = load_policy(cfg.model, ckpt or cfg.model_path, device=device, dtype=stored)
    ref = None
    if cfg.mode == "grpo" and cfg.kl_beta > 0:  # the KL anchor is the starting model, also after a resume
        ref = (load_policy(cfg.model, cfg.model_path, device=device, dtype=stored) if ckpt
               else copy.deepcopy(policy))
        ref.requires_grad_(False).eval()
    if cfg.grad_ckpt:
        policy.enable_activation_checkpointing()
    set_sampling(policy, cfg.kv_bucket, cfg.compile_decode)  # after the reference copy: it never samples
    gather = compute if compute != stored else None  # FSDP: gather bf16 for the forwards, keep the shards fp32
    model = wrap(policy, world, device, cfg.fsdp, gather)  # DDP, or FSDP2 in place; the optimizer sees the result
    if ref is not None and cfg.fsdp and world > 1:
        wrap(ref, world, device, fsdp=True, gather_dtype=gather)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if ckpt:
        load_optimizer(policy, optimizer, ckpt)
        restore_rng(ckpt)
    if is_main():
        (out / "samples").mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "run_config.json", json.dumps(dataclasses.asdict(cfg), indent=1))
        trim_metrics(out / "metrics.jsonl", start)
    if cfg.eval_every and start == 0:  # the starting point of every curve
        with autocast(cfg, policy):  # every rank evaluates (FSDP gathers are collective)
            first = held_out_eval(cfg, policy, held_out)
        if is_main():
            write_metrics(out, {"step": 0, **first})
            reporter.log({"step": 0, **first})
    bar = tqdm(range(start, cfg.steps), disable=not is_main(), desc="unirl", dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        for group in optimizer.param_groups:
            group["lr"] = lr
        try:
            stats, ro = train_step(step, cfg, policy, model, ref, optimizer, records, rank, world)
        except FloatingPointError as err:  # say where to go back to: every checkpoint predates this step
            raise FloatingPointError(f"{err} {resume_advice(out)}") from None
        stats = mean_over_ranks(stats)
        everyone = gather_lists([(float(r), rec["tag"]) for r, rec in zip(ro.rewards, ro.records)])
        m = step_metrics(step + 1, everyone, stats, lr, time.perf_counter() - t0)
        evaluated = cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps)
        if evaluated:
            with autocast(cfg, policy):
                m.update(held_out_eval(cfg, policy, held_out))
        if is_main():
            write_metrics(out, m)
            reporter.log(m)
            bar.set_postfix(headline(m), refresh=False)  # the latest numbers ride on the bar at every step
            if step == start or (step + 1) % cfg.sample_every == 0 or evaluated or step + 1 == cfg.steps:
                bar.write(step_line(m))  # a line to keep, every --sample-every steps, printed above the bar
            if (step + 1) % cfg.sample_every == 0 or step + 1 == cfg.steps:
                save_grid(out, step + 1, ro.pixels, cfg.group_size, ro.records, ro.answers, ro.rewards.tolist())
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            optimizer_state = optimizer_tensors(policy, optimizer)  # collective: every rank joins the gathers
            weights = gathered_state_dict(policy)  # FSDP only
            # a full disk stops every rank with rank 0's message; the barrier: nobody races ahead of a half-written one
            on_rank0(lambda: save_checkpoint(out, step + 1, policy, optimizer_state, dataclasses.asdict(cfg),
                                             keep=cfg.keep_checkpoints, state_dict=weights), (OSError,), OSError)
    reporter.close()
    if is_main():  # the curves of the whole run, next to its metrics, and the before/after table
        finish_run(cfg, out, len(held_out))
    print0(f"done: {out}")
    return policy


def finish_run(cfg, out: Path, held_out_count: int) -> str | None:
    """curves.png from metrics.jsonl, and the held-out before/after table when the run evaluated twice or more.
    Returns the table (also written to before_after.md), or None."""
    rows = read_metrics(Path(out) / "metrics.jsonl")
    plot_metrics(rows, path=Path(out) / "curves.png")  # the panels of what moved (all of them after one step)
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if len(evals) < 2:
        return None
    table = before_after(cfg, evals[0], evals[-1])
    atomic_write_text(Path(out) / "before_after.md", table + "\n")
    print(f"\nheld-out evaluation ({held_out_count} prompts x {cfg.eval_samples} images):\n{table}")
    return table


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FloatingPointError, OSError) as err:  # OSError: a full disk, named by checkpoint.py
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    end_worker()  # under torchrun: skip the interpreter teardown that can abort a finished rank
