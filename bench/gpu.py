"""GPU benchmark suite: every phase of a UniRL iteration on the real architectures, against the roofline.

The cases are G0–G10 of bench/README.md. Models are built with the real sizes and random
weights (bench/builders.py: Janus-Pro-1B and -7B from a transformers JanusConfig, Show-o 512 from
`showo_512_config()` + MAGVIT-v2's real config), in bf16, directly on the GPU; speed does not depend on
weight values and nothing is downloaded. The device's peaks are measured first, in the same run (a large
device-to-device copy for bandwidth, an 8192^3 bf16 matmul for FLOP/s), and every timing is reported
next to its roofline floor built from those peaks: `roofline_frac` = floor / measured (1.0 = at the limit).

  G0 peaks        copy bandwidth, bf16 matmul FLOP/s
  G1 janus_gen    Janus-Pro-1B rollout, CFG, P = 32, 576 tokens: ms/image across batch sizes, ours vs
                  transformers' generate() (greedy, same run, tokens compared first), static vs growing cache
  G2 janus_gen_7b the same for Janus-Pro-7B
  G3 kv_vs_nocache  first 64 tokens with the KV cache vs a teacher-forced pass per step
  G4 cfg_batching one 2B-row decode step vs two B-row steps
  G5 showo_gen    Show-o 512 masked decoding, CFG, T steps; the sampler's text-prefix reuse vs full passes
  G6 decode       Janus VQ-16 (384 px) and MAGVIT-v2 (512 px) pixel decode
  G7 understand   answers (16 tokens, EOS off): batched, and batched vs one by one
  G8 train_step   teacher-forced fwd+bwd: MFU (counted FLOPs and 6ND), checkpointing, reference forward
  G9 iteration    one full GRPO iteration (train.train_step) at UniRL's per-GPU settings, split by phase
  G10 fast_paths  Janus-Pro-1B rollout: all KV slots read vs the windowed cache vs the compiled step
                  (CUDA graphs), same batch, same run; compile time reported apart
Peak memory (`peak_gib`, max_memory_allocated) is reported next to its prediction (`pred_gib`, from
bench/roofline.py; `[est]` where the formula is rough). Timings: CUDA events, median of --repeats after a
warm-up; the 576-token rollouts default to 1 timed run after the warm-up to stay within 10 minutes.

Run:  python bench/gpu.py                    one H100/H200, < 10 minutes; writes bench/gpu.jsonl
      python bench/gpu.py --full             all batch sizes and T = 50 everywhere (longer)
      python bench/gpu.py --cases G1,G5      a subset
      python bench/gpu.py --dry-run --tiny   CPU, toy sizes, seconds: runs every code path (tests/test_bench.py)
Compare timings only between runs on the same device kind; the ratios are what travels.
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script (python bench/gpu.py): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import roofline as R  # noqa: E402
from bench.builders import build_janus_policy, build_showo_policy  # noqa: E402
from bench.harness import (count_flops, environment, fixed_janus_prompts, fmt, image_tokens, median_time,  # noqa: E402
                           no_eos, replaced, sample_images_uncached, synchronize, write_jsonl)

GiB = R.GiB
QUESTION = "How many items in this image?"


class Suite:
    """Device, sizes, measured peaks, the output file and the time budget; runs cases and records rows."""

    def __init__(self, args):
        self.args = args
        self.device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        if self.device.type == "cpu":
            torch.set_num_threads(1)  # a dry run on shared cores: more threads only fight each other
        self.bytes_per = torch.finfo(self.dtype).bits // 8
        self.tiny, self.full = args.tiny, args.full
        self.prompt_len = 8 if args.tiny else 32  # P: GenEval-style prompts are about 32 tokens
        self.repeats = 1 if args.dry_run else args.repeats
        self.rollout_repeats = 1 if args.dry_run else (args.repeats if args.full else 1)
        self.warmup = 0 if args.dry_run else 1
        self.t0 = time.perf_counter()
        self.peaks = None
        self.out = args.out
        self.rows = []

    def batches(self, default: list, full: list) -> list:
        chosen = full if self.full else default
        return chosen[:2] if self.args.dry_run else chosen

    def time(self, fn, repeats=None, warmup=None, setup=None) -> float:
        return median_time(fn, repeats or self.repeats, self.warmup if warmup is None else warmup, self.device, setup)

    # memory: allocated bytes on a GPU, None on a CPU (dry run)
    def reset_peak(self):
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def allocated(self):
        return torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else None

    def peak(self):
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None

    def free(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def wants(self, *cids: str) -> bool:
        """Whether any of these cases is selected (--cases; G0, the peaks, always is)."""
        return not self.args.cases or "G0" in cids or any(c in self.args.cases for c in cids)

    def build(self, label: str, make):
        """Build a model; a failure (an OOM, say) is recorded and its cases are skipped, the rest still run."""
        try:
            with torch.no_grad():
                return make()
        except Exception as err:
            traceback.print_exc()
            self.emit({"case": "build", "model": label, "error": f"{type(err).__name__}: {err}"})
            self.free()
            return None

    def case(self, cid: str, fn, *args, **kwargs) -> None:
        """Run one case unless filtered out or out of time; a failing case is recorded, not fatal."""
        if not self.wants(cid):
            return
        if time.perf_counter() - self.t0 > self.args.budget_s:
            self.emit({"case": cid, "skipped": f"time budget of {self.args.budget_s:.0f} s spent"})
            return
        try:
            for row in fn(self, *args, **kwargs):
                self.emit({"case": cid, **row})
        except Exception as err:  # record and go on: one broken case must not cost the other measurements
            traceback.print_exc()
            self.emit({"case": cid, "error": f"{type(err).__name__}: {err}"})
        self.free()

    def emit(self, row: dict) -> None:
        row["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        self.rows.append(row)
        write_jsonl(self.out, [row], mode="a")  # line by line: a run cut short keeps what it measured
        shown = {k: v for k, v in row.items() if k not in ("case", "elapsed_s")}
        print(f"[{row['elapsed_s']:6.1f}s] {row['case']:<4s} " + "  ".join(f"{k}={fmt(v)}" for k, v in shown.items()),
              flush=True)


def gib(x):
    return None if x is None else x / GiB


def frac(floor_s: float, measured_s: float) -> float:
    """Roofline fraction: floor / measured, 1.0 = at the limit."""
    return floor_s / measured_s


# ------------------------------------------------------------------------------ G0 peaks
def measure_peaks(s: Suite):
    """Copy bandwidth (read + write bytes / time of a large device-to-device copy) and bf16 matmul FLOP/s."""
    n_bytes, n = (2 * GiB, 8192) if s.device.type == "cuda" else (64 * 2**20, 512)
    src = torch.empty(n_bytes, dtype=torch.uint8, device=s.device)
    dst = torch.empty_like(src)
    copy_s = median_time(lambda: dst.copy_(src), repeats=10, warmup=3, device=s.device)
    a = torch.randn(n, n, dtype=s.dtype, device=s.device)
    b = torch.randn(n, n, dtype=s.dtype, device=s.device)
    mm_s = median_time(lambda: a @ b, repeats=20, warmup=3, device=s.device)
    s.peaks = R.Peaks(2 * n**3 / mm_s, 2 * n_bytes / copy_s)
    yield {"bandwidth_TBps": s.peaks.bandwidth / 1e12, "matmul_TFLOPs": s.peaks.flops / 1e12,
           "ridge_flop_per_byte": s.peaks.flops / s.peaks.bandwidth, "copy_bytes": n_bytes, "matmul_n": n,
           "dtype": str(s.dtype), "reference_h100": "3.0 TB/s, 790 TFLOP/s"}


# ------------------------------------------------------------------------------ Janus generation
def ar_rollout(policy, ids, mask, greedy=True):
    from generate import sample_images_ar

    u = torch.zeros(ids.shape[0], policy.num_image_tokens, device=ids.device)
    return sample_images_ar(policy, ids, mask, u, cfg_scale=5.0, temperature=0.0 if greedy else 1.0)


def hf_rollout(policy, ids, mask):
    out = policy.model.generate(input_ids=ids, attention_mask=mask, generation_mode="image", do_sample=False,
                                guidance_scale=5.0)
    return out[:, -policy.num_image_tokens:]


def janus_gen(s: Suite, policy, name: str, batches: list, growing_at: int | None = None):
    """G1/G2: rollout ms per image vs the step-by-step floor, and the speedup over transformers' generate()."""
    from transformers import DynamicCache

    g = R.janus_gen_from_config(policy.model.config)
    n, p = policy.num_image_tokens, s.prompt_len
    for b in batches:
        ids, mask = (x.to(s.device) for x in fixed_janus_prompts(policy, b, p))
        base = s.allocated()
        s.reset_peak()
        ours_tokens = ar_rollout(policy, ids, mask)  # warm-up run, also the parity tokens and the memory peak
        peak = s.peak()
        ours = s.time(lambda: ar_rollout(policy, ids, mask), repeats=s.rollout_repeats, warmup=0)
        # generate() shares our kernels, already warm: its first run is timed and gives its tokens
        out = {}
        theirs = s.time(lambda: out.update(tokens=hf_rollout(policy, ids, mask)), repeats=s.rollout_repeats, warmup=0)
        ideal = R.janus_rollout_floor(g, b, p, n, s.peaks, s.bytes_per)
        static = R.janus_rollout_floor(g, b, p, n, s.peaks, s.bytes_per, bucket=0)
        window = R.janus_rollout_floor(g, b, p, n, s.peaks, s.bytes_per, bucket=policy.kv_bucket)
        table = R.janus_rollout_floor(g, b, p, n, R.REFERENCE_H100)  # the floor at the reference H100's peaks
        logits = 4 * 2 * b * g.codebook * 4  # fp32 logits, guided, softmax: a few (2B, K) tensors
        row = {"model": name, "batch": b, "tokens": n, "prompt": p,
               "ms_per_image": 1e3 * ours / b, "ms_per_step": 1e3 * ours / n,
               "transformers_ms_per_image": 1e3 * theirs / b, "speedup_vs_transformers": theirs / ours,
               "tokens_equal_fraction": float((ours_tokens == out["tokens"]).float().mean()),
               "floor_ms_per_image": ideal["ms_per_image"], "roofline_frac": frac(ideal["seconds"], ours),
               "transformers_roofline_frac": frac(ideal["seconds"], theirs),
               "static_cache_floor_ms_per_image": static["ms_per_image"],
               "static_roofline_frac": frac(static["seconds"], ours),
               "kv_bucket": policy.kv_bucket, "window_floor_ms_per_image": window["ms_per_image"],
               "window_roofline_frac": frac(window["seconds"], ours),
               "reference_floor_ms_per_image": table["ms_per_image"],
               "bandwidth_frac": ideal["bytes_per_step"] / (ours / n) / s.peaks.bandwidth,
               "kv_cache_gib": gib(ideal["kv_cache_bytes"]),
               "peak_gib": gib(peak),
               "pred_gib": gib(None if base is None else base + ideal["kv_cache_bytes"] + logits)}
        if b == growing_at:  # the official loop's growing cache (torch.cat per step) vs our static one
            with replaced(policy, "new_cache", lambda rows, max_len: DynamicCache()):
                growing = s.time(lambda: ar_rollout(policy, ids, mask), repeats=s.rollout_repeats, warmup=0)
            row["speedup_static_vs_growing_cache"] = growing / ours
        yield row


def fast_paths(s: Suite, policy, batches: list, compile_mode: str | None):
    """G10: the AR sampler's flags against each other at the same batch: every KV slot read (--kv-bucket 0),
    the windowed cache (the default bucket), and the windowed cache with the compiled step
    (--compile-decode; reduce-overhead = CUDA graphs). Compilation time is reported, not hidden in the timing."""
    g, n, p = R.janus_gen_from_config(policy.model.config), policy.num_image_tokens, s.prompt_len
    default_bucket = policy.kv_bucket
    for b in batches:
        ids, mask = (x.to(s.device) for x in fixed_janus_prompts(policy, b, p))
        ideal = R.janus_rollout_floor(g, b, p, n, s.peaks, s.bytes_per)
        row = {"batch": b, "tokens": n, "floor_ms_per_image": ideal["ms_per_image"], "kv_bucket": default_bucket}
        seconds, tokens = {}, {}
        for label, bucket in (("all_slots", 0), ("windowed", default_bucket)):
            with replaced(policy, "kv_bucket", bucket):
                tokens[label] = ar_rollout(policy, ids, mask)  # warm-up
                seconds[label] = s.time(lambda: ar_rollout(policy, ids, mask), repeats=s.rollout_repeats, warmup=0)
        if compile_mode is not None:
            start = time.perf_counter()
            policy.compile_decode(compile_mode)
            try:
                tokens["compiled"] = ar_rollout(policy, ids, mask)  # compiles one graph per window
                row["compile_s"] = time.perf_counter() - start
                seconds["compiled"] = s.time(lambda: ar_rollout(policy, ids, mask), repeats=s.rollout_repeats, warmup=0)
            finally:
                policy.compile_decode("off")  # the later cases measure the eager step
        for label, sec in seconds.items():
            row[f"{label}_ms_per_image"] = 1e3 * sec / b
            row[f"{label}_roofline_frac"] = frac(ideal["seconds"], sec)
            row[f"{label}_tokens_equal_fraction"] = float((tokens[label] == tokens["all_slots"]).float().mean())
        row["speedup_windowed_vs_all_slots"] = seconds["all_slots"] / seconds["windowed"]
        if "compiled" in seconds:
            row["speedup_compiled_vs_eager"] = seconds["windowed"] / seconds["compiled"]
        yield row


def kv_vs_nocache(s: Suite, policy, batches: list, tokens: int = 64):
    """G3: the first `tokens` image tokens with the KV cache vs one teacher-forced pass per step."""
    g, p = R.janus_gen_from_config(policy.model.config), s.prompt_len
    tokens = min(tokens, policy.num_image_tokens)
    for b in batches:
        ids, mask = (x.to(s.device) for x in fixed_janus_prompts(policy, b, p))
        with image_tokens(policy, tokens):
            cached_tokens = ar_rollout(policy, ids, mask)
            cached = s.time(lambda: ar_rollout(policy, ids, mask))
        plain_tokens = sample_images_uncached(policy, ids, mask, tokens, 5.0)
        uncached = s.time(lambda: sample_images_uncached(policy, ids, mask, tokens, 5.0))
        flops_ratio = R.janus_uncached_rollout_flops(g, b, p, tokens) / R.janus_cached_rollout_flops(g, b, p, tokens)
        yield {"batch": b, "tokens": tokens, "speedup_cached_vs_uncached": uncached / cached,
               "flops_ratio_uncached_vs_cached": flops_ratio,
               "tokens_equal_fraction": float((cached_tokens == plain_tokens).float().mean())}


def cfg_batching(s: Suite, policy, batches: list, steps: int = 32):
    """G4: decode steps with both CFG branches in one 2B-row call vs two B-row calls (two caches)."""
    p = s.prompt_len
    for b in batches:
        ids, mask = (x.to(s.device) for x in fixed_janus_prompts(policy, b, p))
        rows, masks = torch.cat([ids, policy.uncond_prompt_ids(ids)]), torch.cat([mask, mask])
        state = {}

        def setup(split):
            parts = [(rows[:b], masks[:b]), (rows[b:], masks[b:])] if split else [(rows, masks)]
            state["parts"] = []
            for r, m in parts:  # prefill, untimed
                cache = policy.new_cache(r.shape[0], p + steps + 1)
                policy.gen_step(cache, m, prompt_ids=r)
                state["parts"].append([cache, m])

        def decode():
            token = torch.zeros(b, dtype=torch.long, device=s.device)
            for _ in range(steps):
                for part in state["parts"]:
                    cache, m = part
                    part[1] = torch.cat([m, m.new_ones(m.shape[0], 1)], 1)
                    policy.gen_step(cache, part[1], image_ids=token.repeat(m.shape[0] // b))

        together = s.time(decode, setup=lambda: setup(False))
        apart = s.time(decode, setup=lambda: setup(True))
        yield {"batch": b, "steps": steps, "ms_per_step_batched": 1e3 * together / steps,
               "speedup_batched_vs_two_calls": apart / together}


# ------------------------------------------------------------------------------ Show-o generation
def showo_gen(s: Suite, policy, batches: list, timesteps: list, reuse_at: int | None = None):
    """G5: masked decoding ms per image vs the compute floor (text prefix reused, codebook-sliced head),
    achieved TFLOP/s; at batch `reuse_at`, the speedup of the text-prefix reuse over full passes."""
    import prompts as P
    from generate import sample_images_masked

    lm, c, t = R.lm_from_showo(policy.config), policy.config, policy.num_image_tokens
    texts = [r["prompt"] for r in P.make_records(max(batches), seed=0)]
    for t_steps in timesteps:
        for b in batches:
            ids = policy.tokenize_gen_prompts(texts[:b])[0].to(s.device)
            seq = ids.shape[1] + t + 2

            def run(reuse=True):
                gen = torch.Generator(device=s.device).manual_seed(0)
                return sample_images_masked(policy, ids, gen, cfg_scale=5.0, timesteps=t_steps, reuse_prefix=reuse)

            base = s.allocated()
            s.reset_peak()
            sample_images_masked(policy, ids, torch.Generator(device=s.device).manual_seed(0), cfg_scale=5.0,
                                 timesteps=2)  # warm-up, and the memory peak of a step
            peak = s.peak()
            repeats = s.rollout_repeats if t_steps > 12 else s.repeats
            seconds = s.time(run, repeats=repeats, warmup=0)
            flops = R.showo_rollout_flops(lm, policy.codebook_size, t, ids.shape[1], 2 * b, t_steps)
            released = t_steps * R.showo_step_flops(lm, policy.codebook_size, t, seq, 2 * b, vocab=c.vocab_size)
            weights = s.bytes_per * (lm.trunk_params() + c.hidden_size * c.codebook_size)
            floor = s.peaks.floor(flops, t_steps * weights)
            transients = 2 * b * seq * seq * s.bytes_per + 4 * 4 * b * t * policy.codebook_size \
                + 2 * 2 * b * seq * c.intermediate_size * s.bytes_per  # mask, fp32 logits/probs, MLP [est]
            row = {"batch": b, "timesteps": t_steps, "seq": seq, "ms_per_image": 1e3 * seconds / b,
                   "floor_ms_per_image": 1e3 * floor / b, "roofline_frac": frac(floor, seconds),
                   "achieved_TFLOPs": flops / seconds / 1e12,
                   "as_released_floor_ms_per_image": 1e3 * s.peaks.floor(released, 0) / b,
                   "peak_gib": gib(peak), "pred_gib": gib(None if base is None else base + transients)}
            if b == reuse_at:
                full = s.time(lambda: run(False), repeats=repeats, warmup=0)
                row["speedup_prefix_reuse"] = full / seconds
                row["flops_ratio_prefix_reuse"] = R.showo_rollout_flops(
                    lm, policy.codebook_size, t, ids.shape[1], 2 * b, t_steps, reuse_prefix=False) / flops
            yield row


# ------------------------------------------------------------------------------ pixel decode
def pixel_decode(s: Suite, policy, name: str, batches: list, channels: int):
    """G6: image tokens -> pixels; floor = counted conv FLOPs / matmul peak (compute-bound convolutions)."""
    n = policy.num_image_tokens
    size = 16 * int(round(n ** 0.5))  # both tokenizers downsample x16
    with torch.no_grad():
        flops_one = count_flops(lambda: policy.decode_images(torch.zeros(1, n, dtype=torch.long, device=s.device)))
    for b in batches:
        ids = torch.randint(0, policy.codebook_size, (b, n), device=s.device)
        base = s.allocated()
        s.reset_peak()
        seconds = s.time(lambda: policy.decode_images(ids))
        act = 4 * b * channels * size * size * s.bytes_per  # ~4 full-resolution feature maps live [est]
        floor = s.peaks.floor(flops_one * b, 0)
        yield {"codec": name, "batch": b, "px": size, "ms_per_image": 1e3 * seconds / b,
               "gflop_per_image": flops_one / 1e9, "floor_ms_per_image": 1e3 * floor / b,
               "roofline_frac": frac(floor, seconds), "peak_gib": gib(s.peak()),
               "pred_gib": gib(None if base is None else base + act)}


# ------------------------------------------------------------------------------ understanding
def understand(s: Suite, policy, name: str, batches: list, answer_tokens: int = 16):
    """G7: the model answers about B images (EOS off: fixed work); batched vs one by one at the largest B."""
    from understand import answer_questions

    if policy.family == "janus":
        lm = R.lm_from_llama(policy.model.config.text_config)
        head = policy.model.lm_head.weight.numel()
        encoder = sum(x.numel() for m in (policy.model.model.vision_model, policy.model.model.aligner)
                      for x in m.parameters())

        def images_for(b):
            return policy.encode_images(torch.rand(b, 3, policy.image_size, policy.image_size, device=s.device))
    else:
        lm, head, encoder = R.lm_from_showo(policy.config), policy.model.showo.lm_head.weight.numel(), 0

        def images_for(b):
            return torch.randint(0, policy.codebook_size, (b, policy.num_image_tokens), device=s.device)
    for b in batches:
        images, questions = images_for(b), [QUESTION] * b
        with no_eos(policy):
            run = lambda: answer_questions(policy, images, questions, max_new_tokens=answer_tokens)  # noqa: E731
            flops = count_flops(run)  # untimed; also the warm-up
            base = s.allocated()
            s.reset_peak()
            seconds = s.time(run, warmup=0)
            peak = s.peak()
            prompt = policy.tokenize_und_prompts(questions[:1])[0].shape[1]
            prompt += 0 if policy.family == "janus" else policy.prefix  # Show-o's image block before the question
            kv_reads = sum(b * (prompt + t) for t in range(answer_tokens)) * lm.kv_bytes_per_token(s.bytes_per)
            nbytes = s.bytes_per * (encoder + (answer_tokens + 1) * (lm.trunk_params() + head)) + kv_reads
            floor = s.peaks.floor(flops, nbytes)
            row = {"model": name, "batch": b, "answer_tokens": answer_tokens, "ms_per_image": 1e3 * seconds / b,
                   "floor_ms_per_image": 1e3 * floor / b, "roofline_frac": frac(floor, seconds),
                   "peak_gib": gib(peak),
                   "pred_gib": gib(None if base is None else
                                   base + b * (prompt + answer_tokens) * lm.kv_bytes_per_token(s.bytes_per))}
            if b == batches[-1] and b > 1:
                one = s.time(lambda: [answer_questions(policy, images[i:i + 1], questions[i:i + 1],
                                                       max_new_tokens=answer_tokens) for i in range(b)])
                row["speedup_batched_vs_one_by_one"] = one / seconds
        yield row


# ------------------------------------------------------------------------------ training step
def train_batch(s: Suite, policy, m: int) -> dict:
    """A teacher-forced micro-batch of m images: the conditional row only (T2I-R1's choice; with P = 32 the
    608-token case; --ratio-dist guided would double the rows). Show-o: re-mask half the tokens."""
    if policy.family == "janus":
        ids, mask = (x.to(s.device) for x in fixed_janus_prompts(policy, m, s.prompt_len))
        gen = dict(prompt_ids=ids, prompt_mask=mask, cfg_scale=None)
    else:
        import prompts as P

        texts = [r["prompt"] for r in P.make_records(m, seed=0)]
        ids, mask = (x.to(s.device) for x in policy.tokenize_gen_prompts(texts))
        gen = dict(prompt_ids=ids, prompt_mask=mask, cfg_scale=None,
                   token_mask=torch.rand(m, policy.num_image_tokens, device=s.device) < 0.5)
    gen["image_ids"] = torch.randint(0, policy.codebook_size, (m, policy.num_image_tokens), device=s.device)
    return gen


def fwd_bwd(policy, gen: dict) -> None:
    out = policy(gen=gen)
    F.cross_entropy(out["gen_logits"].flatten(0, 1), gen["image_ids"].flatten()).backward()
    policy.zero_grad(set_to_none=True)


def set_checkpointing(policy, on: bool) -> None:
    net = policy.model if policy.family == "janus" else policy.model.showo
    if on:
        net.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        net.activation_checkpointing_disable()


def train_step(s: Suite, policy, name: str, micro_batches: list):
    """G8: fwd+bwd time, MFU from counted FLOPs and from 6ND, checkpointing overhead, reference forward."""
    if policy.family == "janus":
        g = R.janus_gen_from_config(policy.model.config)
        lm, active, vocab = g.lm, g.step_params(), g.codebook
        seq = s.prompt_len + policy.num_image_tokens - 1
    else:
        lm = R.lm_from_showo(policy.config)
        active, vocab = lm.trunk_params() + policy.config.hidden_size * policy.codebook_size, policy.codebook_size
        seq = policy.config.max_text_len + 3 + policy.num_image_tokens
    trainable = sum(x.numel() for x in policy.parameters() if x.requires_grad)
    policy.train()
    try:
        one = train_batch(s, policy, 1)
        counted = {}  # FLOPs of one image's fwd+bwd; checkpointing adds a second forward (~8ND instead of 6ND)
        for ckpt in (False, True):
            set_checkpointing(policy, ckpt)
            counted[ckpt] = count_flops(lambda: fwd_bwd(policy, one))  # also a warm-up
        set_checkpointing(policy, False)
        with torch.no_grad():
            counted["reference"] = count_flops(lambda: policy(gen=one))
        for m in micro_batches:
            gen = train_batch(s, policy, m)
            for ckpt in ([False, True] if m == micro_batches[-1] else [False]):
                set_checkpointing(policy, ckpt)
                base = s.allocated()
                s.reset_peak()
                seconds = s.time(lambda: fwd_bwd(policy, gen))
                set_checkpointing(policy, False)
                flops = counted[ckpt] * m
                extra = s.bytes_per * trainable + R.activation_bytes(lm, m, seq, ckpt) \
                    + R.logits_bytes(m, policy.num_image_tokens, vocab)  # grads + activations + fp32 logits
                row = {"model": name, "micro_batch": m, "checkpointing": ckpt, "tokens": seq,
                       "ms_per_image": 1e3 * seconds / m, "mfu": flops / seconds / s.peaks.flops,
                       "mfu_6nd": 6 * active * seq * m / seconds / s.peaks.flops,
                       "floor_ms_per_image": 1e3 * s.peaks.floor(flops, 0) / m,
                       "roofline_frac": frac(s.peaks.floor(flops, 0), seconds),
                       "peak_gib": gib(s.peak()), "pred_gib": gib(None if base is None else base + extra)}
                if m == micro_batches[-1] and not ckpt:
                    with torch.no_grad():  # the reference (or old-policy) forward: ~2ND
                        ref = s.time(lambda: policy(gen=gen))
                    row["reference_ms_per_image"] = 1e3 * ref / m
                    row["reference_roofline_frac"] = frac(s.peaks.floor(counted["reference"] * m, 0), ref)
                yield row
    finally:
        set_checkpointing(policy, False)
        policy.eval()


# ------------------------------------------------------------------------------ one GRPO iteration
def iteration(s: Suite, policy, name: str, group: int, timesteps: int | None = None):
    """G9: train.train_step at UniRL's per-GPU setting (one prompt x G images), time per phase and the peak."""
    import grpo
    import prompts as P
    import reward
    import train

    # the suite's policy is stored in s.dtype, so its precision is the one that stores and computes in that dtype
    precision = "bf16-lossy" if s.dtype == torch.bfloat16 else "fp32"
    cfg = train.Config(model=name, mode="grpo", prompts_per_step=1, group_size=group, micro_batch=group,
                       max_answer_tokens=16, timesteps=timesteps, precision=precision)
    ref = copy.deepcopy(policy).requires_grad_(False).eval()
    params = [x for x in policy.parameters() if x.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    records = P.make_records(8, seed=0)
    phases = {}

    def timed(label, fn):  # synchronize around a phase so GPU work is charged to the phase that queued it
        def wrapper(*args, **kwargs):
            synchronize(s.device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            synchronize(s.device)
            phases[label] = phases.get(label, 0.0) + time.perf_counter() - t0
            return out
        return wrapper

    try:
        with replaced(policy, "decode_images", timed("pixel_decode", policy.decode_images)), \
                replaced(reward, "score_answers", timed("reward", reward.score_answers)), \
                replaced(grpo, "sample_logprobs", timed("reference", grpo.sample_logprobs)), \
                replaced(optimizer, "step", timed("optimizer", optimizer.step)):
            train.train_step(0, cfg, policy, policy, ref, optimizer, records, 0, 1)  # warm-up
            phases.clear()
            s.reset_peak()
            synchronize(s.device)
            t0 = time.perf_counter()
            stats, _ = train.train_step(1, cfg, policy, policy, ref, optimizer, records, 0, 1)
            synchronize(s.device)
            total = time.perf_counter() - t0
        split = {"generation": stats["t_rollout"] - phases["pixel_decode"], "pixel_decode": phases["pixel_decode"],
                 "understanding": stats["t_understand"], "reward": phases["reward"],
                 "reference": phases.get("reference", 0.0), "optimizer": phases["optimizer"]}
        split["train_fwd_bwd"] = stats["t_learn"] - split["reference"] - split["optimizer"]
        trainable = sum(x.numel() for x in params)
        total_params = sum(x.numel() for x in policy.parameters())
        # weights + reference + grads + AdamW m, v, all in the policy's dtype (train.py --dtype) [est]
        states = s.bytes_per * (2 * total_params + 3 * trainable)
        pred = None
        if not s.tiny:  # the recipe's memory model (bench/recipe.py) at this setting, on one GPU
            from bench.recipe import rollout_bytes, training_bytes

            work = max(sum(rollout_bytes(name, group, s.bytes_per).values()),
                       sum(training_bytes(name, group, False, cfg.ratio_dist, cfg.grpo_on).values()))
            pred = states + work
        yield {"model": name, "images": group, "seconds": total,
               **{f"share_{k}": v / total for k, v in split.items()},
               "rollout_share": (split["generation"] + split["pixel_decode"]) / total,
               "peak_gib": gib(s.peak()), "states_pred_gib": gib(states), "pred_gib": gib(pred)}
    finally:
        policy.zero_grad(set_to_none=True)
        policy.eval()
        del ref, optimizer


# ------------------------------------------------------------------------------ main
def run(args) -> list:
    torch.manual_seed(0)  # random inputs (image ids, pixels, masks) repeat from run to run
    s = Suite(args)
    Path(s.out).parent.mkdir(parents=True, exist_ok=True)
    env = environment(s.device)
    write_jsonl(s.out, [{"case": "environment", **env, "dry_run": args.dry_run, "tiny": args.tiny, "full": args.full}])
    print(f"{env['device']} | torch {env['torch']} | transformers {env['transformers']} | {s.dtype}", flush=True)
    s.case("G0", measure_peaks)
    if s.peaks is None:
        raise RuntimeError("the peaks could not be measured; nothing can be put against a roofline")
    tiny = "tiny-" if s.tiny else "janus-pro-"
    janus_name = "janus-pro-1b" + (" (tiny)" if s.tiny else "")
    policy = s.build(janus_name, lambda: build_janus_policy(f"{tiny}1b", s.device, s.dtype)) \
        if s.wants("G1", "G3", "G4", "G6", "G7", "G8", "G9", "G10") else None
    if policy is not None:
        s.case("G1", janus_gen, policy, janus_name, s.batches([1, 8, 64], [1, 8, 16, 64, 256]),
               growing_at=2 if args.dry_run else 8)
        s.case("G6", pixel_decode, policy, "janus-vq16", s.batches([1, 16], [1, 16, 64]),
               policy.model.config.vq_config.base_channels)
        s.case("G7", understand, policy, janus_name, s.batches([1, 8], [1, 8, 64]))
        s.case("G8", train_step, policy, janus_name, s.batches([1, 4, 8], [1, 4, 8]))
        s.case("G9", iteration, policy, "janus-pro-1b", 2 if args.dry_run else 8)
        s.case("G3", kv_vs_nocache, policy, s.batches([1, 16], [1, 16]))
        s.case("G4", cfg_batching, policy, s.batches([1, 8, 64], [1, 8, 64]))
        # inductor takes ~20 s of CPU per graph: a dry run skips it: the trace itself is checked by tests/test_kv_cache.py
        s.case("G10", fast_paths, policy, s.batches([8, 64], [8, 64, 256]),
               None if args.dry_run or args.compile_mode == "off" else args.compile_mode)
        del policy
        s.free()
    showo_name = "showo-512" + (" (tiny)" if s.tiny else "")
    showo = s.build(showo_name, lambda: build_showo_policy(s.tiny, s.device, s.dtype)) \
        if s.wants("G5", "G6", "G7", "G8", "G9") else None
    if showo is not None:
        steps = [4] if args.dry_run else ([12, 50] if args.full else [12])
        s.case("G5", showo_gen, showo, s.batches([1, 3, 16], [1, 3, 16]), steps, reuse_at=3)
        if not args.full and not args.dry_run:
            s.case("G5", showo_gen, showo, [3], [50])  # UniRL's evaluation T at its per-GPU batch
        s.case("G6", pixel_decode, showo, "magvit-v2", s.batches([1, 16], [1, 16, 64]), showo.vq.config.ch)
        s.case("G7", understand, showo, showo_name, s.batches([1, 8], [1, 8, 64]))
        s.case("G8", train_step, showo, showo_name, s.batches([1, 3], [1, 3, 8]))
        s.case("G9", iteration, showo, "showo", 3, 4 if args.dry_run else None)
        del showo
        s.free()
    # last: the largest model, the case the time budget may have to skip (then run it alone: --cases G2)
    big_name = "janus-pro-7b" + (" (tiny)" if s.tiny else "")
    big = s.build(big_name, lambda: build_janus_policy(f"{tiny}7b", s.device, s.dtype)) if s.wants("G2") else None
    if big is not None:
        s.case("G2", janus_gen, big, big_name, s.batches([1, 16], [1, 16, 64]))
        del big
        s.free()
    print(f"done in {time.perf_counter() - s.t0:.0f} s: {s.out}")
    return s.rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="GPU benchmark suite (G0-G10 of bench/README.md), real architectures, "
                                             "random weights.")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "gpu.jsonl"), help="JSON lines file")
    ap.add_argument("--cases", default="", help="comma-separated subset of G0..G10 (G0, the peaks, always runs)")
    ap.add_argument("--full", action="store_true", help="the longer batch lists (up to 256) and T = 50 (over 10 min)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median) of the short cases")
    ap.add_argument("--budget-s", type=float, default=540, help="start no new case after this many seconds")
    ap.add_argument("--compile-mode", default="reduce-overhead", choices=["off", "default", "reduce-overhead"],
                    help="G10: how the decode step is compiled (reduce-overhead adds CUDA graphs)")
    ap.add_argument("--dry-run", action="store_true", help="run on the CPU with one repeat (with --tiny: seconds)")
    ap.add_argument("--tiny", action="store_true", help="toy sizes of the same architectures")
    args = ap.parse_args(argv)
    args.cases = {c.strip().upper() for c in args.cases.split(",") if c.strip()}
    if not torch.cuda.is_available() and not args.dry_run:
        print("error: no GPU here. The suite needs one; `python bench/gpu.py --dry-run --tiny` runs its code on a CPU.",
              file=sys.stderr)
        sys.exit(2)
    if args.dry_run and not args.tiny:
        print("note: --dry-run without --tiny builds the real sizes on the CPU (minutes, tens of GiB)", flush=True)
    rows = run(args)
    errors = [r for r in rows if "error" in r]
    if errors:
        print(f"{len(errors)} case(s) failed: " + "; ".join(f"{r['case']}: {r['error']}" for r in errors))
        sys.exit(1)


if __name__ == "__main__":
    main()
