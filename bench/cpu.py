"""CPU benchmark suite: deterministic counters and same-run speed ratios on the tiny presets.

The rollout is > 70 % of a UniRL iteration, so this suite checks the properties that make it cheap, on
janus-tiny and showo-tiny (the real architectures at toy width, random weights, built locally):

  counters (exact, asserted by tests/test_bench.py)
    - model forward calls per rollout: AR = N for the whole batch (1 prefill + N - 1 steps) with both CFG
      branches in each call; masked = T calls (one per timestep), CFG batched the same way, after one
      prefill of the text block that every step reuses;
    - the KV cache is allocated once: the StaticCache's K/V tensors keep their storage from the prefill to
      the last step, and their bytes equal 2 * layers * rows * kv_heads * max_len * head_dim * dtype size
      (a growing DynamicCache, for contrast, gets new storage at every step);
    - FLOPs per image from FlopCounterMode against the formulas of bench/roofline.py, with the cache read in
      full (a plain StaticCache) and windowed (attention over the filled slots rounded up to a bucket);
    - token parity: our greedy sampler = transformers' generate(generation_mode="image") and = a sampler
      without any cache; Show-o's tokens with = without the text-prefix reuse.
  ratios (median of --repeats, time.perf_counter, same process; only ratios are printed)
    - ours vs transformers' generate() (greedy, CFG 5, same batch);
    - cached vs uncached (uncached = one teacher-forced pass over the whole prefix per step);
    - static vs growing KV cache; Show-o's text-prefix reuse vs full passes;
    - batched vs one-by-one answering (understand.answer_questions), Janus and Show-o;
    - the windowed KV cache (models/kv_cache.py) vs reading every slot, at Janus' real 576 tokens;
    - with --compile: the compiled one-token decode step vs eager.

Run:  python bench/cpu.py                 (20-30 s on 2 cores; writes bench/cpu.jsonl)
      python bench/cpu.py --compile       (adds the compiled decode step: ~20 s more)
      python bench/cpu.py --batch 8 --repeats 9 --out /tmp/cpu.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script (python bench/cpu.py): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import roofline as R  # noqa: E402
from bench.harness import (cache_storage, count_flops, environment, median_time, no_eos, print_table,  # noqa: E402
                           record_forwards, replaced, sample_images_uncached, wrap_method, write_jsonl)

# prompts of different lengths, so the batch is left-padded as in training
PROMPTS = ["a photo of a dog", "a photo of three red umbrellas", "a photo of a purple wine glass and a black apple",
           "a photo of two cats"]
WINDOW_BUCKET = 16  # a bucket small enough that janus-tiny's 85-slot cache is read through several windows
FLOP_TOLERANCE = 0.01  # FLOPs counted vs formula; every matmul is in the formula, so they agree to rounding


def row(case, measured, expected=None, ok=None, **extra) -> dict:
    """One result: what was measured, what the formula or the contract says, and whether they agree."""
    rel = None
    if isinstance(measured, (int, float)) and isinstance(expected, (int, float)) and expected:
        rel = (measured - expected) / expected
    return {"case": case, "measured": measured, "expected": expected, "rel_err": rel, "ok": ok, **extra}


def janus_prompts(policy, batch: int):
    """Left-padded t2i prompts (ids, mask) for `batch` images."""
    return policy.tokenize_gen_prompts([PROMPTS[i % len(PROMPTS)] for i in range(batch)])


showo_prompts = janus_prompts  # the contract's tokenize_gen_prompts serves both families


def greedy_ar(policy, ids, mask, cfg_scale=5.0):
    """Our AR rollout (generate.sample_images_ar), greedy so that it can be compared token for token."""
    from generate import sample_images_ar

    u = torch.zeros(ids.shape[0], policy.num_image_tokens)
    return sample_images_ar(policy, ids, mask, u, cfg_scale=cfg_scale, temperature=0.0)


def janus_gen(policy):
    return R.janus_gen_from_config(policy.model.config)


# ------------------------------------------------------------------------------ counters
def ar_forward_calls(policy, batch: int, cfg_scale: float = 5.0) -> dict:
    """gen_step calls and language-model forwards for one rollout of `batch` images."""
    ids, mask = janus_prompts(policy, batch)
    steps = []
    with wrap_method(policy, "gen_step", lambda out, *a, **k: steps.append(out.shape[0])), \
            record_forwards(policy.model.model.language_model) as lm:
        greedy_ar(policy, ids, mask, cfg_scale)
    n = policy.num_image_tokens
    rows = sorted({b for b, _ in lm})
    ok = len(steps) == n and len(lm) == n and rows == [2 * batch] and lm[0][1] == ids.shape[1] \
        and all(length == 1 for _, length in lm[1:])
    return row(f"janus: forward calls per rollout of B={batch} (N={n} tokens)", len(steps), n, ok,
               lm_calls=len(lm), rows_per_call=rows, prefill_tokens=lm[0][1],
               step_tokens=sorted({length for _, length in lm[1:]}),
               detail=f"1 prefill + {n - 1} steps, each over {2 * batch} rows (cond + uncond)")


def masked_forward_calls(policy, batch: int, timesteps: int, cfg_scale: float = 5.0) -> dict:
    """masked_logits calls and transformer forwards for one Show-o rollout of `batch` images.

    The sampler prefills the text block once (`prefix_cache`, when the policy has it) and then runs only
    the image part, [<|soi|>, T tokens, <|eoi|>], at each of the T steps: T + 1 trunk calls, T steps."""
    from generate import sample_images_masked

    ids, _ = showo_prompts(policy, batch)
    calls = []
    with wrap_method(policy, "masked_logits", lambda out, *a, **k: calls.append(out.shape[0])), \
            record_forwards(policy.model.showo.model) as trunk:
        sample_images_masked(policy, ids, torch.Generator().manual_seed(0), cfg_scale=cfg_scale, timesteps=timesteps)
    prefix = int(hasattr(policy, "prefix_cache"))
    steps = trunk[prefix:]
    rows = sorted({b for b, _ in trunk})
    step_len = policy.num_image_tokens + 2 if prefix else ids.shape[1] + policy.num_image_tokens + 2
    ok = len(calls) == timesteps and len(trunk) == timesteps + prefix and rows == [2 * batch] \
        and all(length == step_len for _, length in steps) and (not prefix or trunk[0][1] == ids.shape[1])
    return row(f"showo: forward calls per rollout of B={batch} (T={timesteps})", len(calls), timesteps, ok,
               trunk_calls=len(trunk), prefix_calls=prefix, rows_per_call=rows,
               step_tokens=sorted({length for _, length in steps}),
               detail=f"{prefix} text-prefix prefill + {timesteps} steps over the image part, each over "
                      f"{2 * batch} rows (cond + uncond)")


def static_cache_allocation(policy, batch: int) -> dict:
    """The StaticCache's K/V storage after the prefill and after every later step, and its size vs the formula."""
    ids, mask = janus_prompts(policy, batch)
    made, seen = [], []
    with wrap_method(policy, "new_cache", lambda cache, rows, max_len: made.append((cache, rows, max_len))), \
            wrap_method(policy, "gen_step", lambda out, cache, *a, **k: seen.append(cache_storage(cache))):
        greedy_ar(policy, ids, mask)
    _, rows, max_len = made[0]
    lm = R.lm_from_llama(policy.model.config.text_config)
    formula = R.kv_cache_bytes(lm, rows, max_len, next(policy.parameters()).element_size())
    allocated = sum(b for _, b in seen[0])
    same = all(s == seen[0] for s in seen)
    return row(f"janus: KV cache bytes, B={batch} ({rows} rows x {max_len} slots)", allocated, formula,
               ok=same and allocated == formula and len(made) == 1, caches_made=len(made),
               same_storage_every_step=same, tensors=len(seen[0]),
               detail="2*layers*rows*kv_heads*max_len*head_dim*dtype; storage unchanged prefill -> last step")


def dynamic_cache_allocation(policy, batch: int) -> dict:
    """For contrast: a growing DynamicCache (torch.cat per step) gets new K/V storage at every call."""
    from transformers import DynamicCache

    ids, mask = janus_prompts(policy, batch)
    seen = []
    with replaced(policy, "new_cache", lambda rows, max_len: DynamicCache()), \
            wrap_method(policy, "gen_step", lambda out, cache, *a, **k: seen.append(cache_storage(cache))):
        greedy_ar(policy, ids, mask)
    # a new storage = layer 0's keys moved since the previous call (counting distinct addresses would miss
    # the allocator handing a freed block back)
    moves = sum(a[0][0] != b[0][0] for a, b in zip(seen, seen[1:]))
    allocated = sum(sum(b for _, b in s) for s in seen)  # every call's cache is a fresh copy
    final = sum(b for _, b in seen[-1])
    return row(f"janus: growing cache, B={batch}: K/V storage moves per rollout", moves, len(seen) - 1,
               ok=moves == len(seen) - 1, bytes_allocated_over_final=allocated / final,
               detail=f"allocates {allocated / final:.1f}x its final size in total (static: 1x, 0 moves)")


# ------------------------------------------------------------------------------ FLOPs
def janus_flops(policy, batch: int, cfg_scale: float = 5.0) -> list[dict]:
    """Teacher-forced pass, cached rollout and uncached rollout: FlopCounterMode vs bench/roofline.py."""
    ids, mask = janus_prompts(policy, batch)
    length, n, g = ids.shape[1], policy.num_image_tokens, janus_gen(policy)
    tokens = greedy_ar(policy, ids, mask, cfg_scale)
    gen = dict(prompt_ids=ids, prompt_mask=mask, image_ids=tokens, cfg_scale=cfg_scale)
    with torch.no_grad():
        teacher = count_flops(lambda: policy(gen=gen))
    with replaced(policy, "kv_bucket", 0):  # attention over all L + N slots (a plain StaticCache)
        cached = count_flops(lambda: greedy_ar(policy, ids, mask, cfg_scale))
    with replaced(policy, "kv_bucket", WINDOW_BUCKET):  # over the filled slots rounded up (models/kv_cache.py)
        windowed = count_flops(lambda: greedy_ar(policy, ids, mask, cfg_scale))
    uncached = count_flops(lambda: sample_images_uncached(policy, ids, mask, n, cfg_scale))
    want_teacher = R.janus_teacher_forced_flops(g, batch, length, n)
    want_cached = R.janus_cached_rollout_flops(g, batch, length, n, bucket=0)
    want_windowed = R.janus_cached_rollout_flops(g, batch, length, n, bucket=WINDOW_BUCKET)
    want_uncached = R.janus_uncached_rollout_flops(g, batch, length, n)
    rows = []
    for name, got, want, formula in [
        ("teacher-forced pass", teacher, want_teacher,
         "rows*S*2*trunk + rows*N*2*head + B*(N-1)*2*aligner + rows*layers*4*S^2*width, S=L+N-1, rows=2B"),
        ("cached rollout", cached, want_cached,
         "rows*(L+N-1)*2*trunk + rows*N*2*head + rows*(N-1)*2*aligner + attention over all L+N static slots"),
        (f"windowed cached rollout, bucket {WINDOW_BUCKET}", windowed, want_windowed,
         f"as above, attention over the filled slots rounded up to {WINDOW_BUCKET}"),
        ("uncached rollout", uncached, want_uncached, "sum over t of the teacher-forced pass with t tokens"),
    ]:
        r = row(f"janus: FLOPs per image, {name} (B={batch}, L={length}, N={n})", got / batch, want / batch,
                formula=formula)
        r["ok"] = abs(r["rel_err"]) <= FLOP_TOLERANCE
        rows.append(r)
    # A rough estimate says uncached / cached >= 0.8 (P + N/2), as the uncached linear work grows with the
    # average context; the trunk-only ratio is really N (P + (N-1)/2) / (P + N - 1), which meets that bound
    # only when P << N (true at 32 + 576, not here)
    measured, want = uncached / cached, want_uncached / want_cached
    r = row("janus: FLOPs uncached / cached rollout", measured, want,
            plan_bound=0.8 * (length + n / 2), trunk_only=n * (length + (n - 1) / 2) / (length + n - 1),
            detail="the rough 0.8 (P + N/2) bound assumes P << N")
    r["ok"] = abs(r["rel_err"]) <= FLOP_TOLERANCE
    rows.append(r)
    return rows


def showo_flops(policy, batch: int, timesteps: int = 4, cfg_scale: float = 5.0) -> list[dict]:
    """One full masked-decoding step, and whole rollouts with and without the text-prefix reuse:
    FlopCounterMode vs bench/roofline.py (codebook-sliced head)."""
    from generate import sample_images_masked

    ids, _ = showo_prompts(policy, batch)
    t, lm, k = policy.num_image_tokens, R.lm_from_showo(policy.config), policy.codebook_size
    codes = torch.full((batch, t), policy.mask_code)
    seq = ids.shape[1] + t + 2  # [text block, <|soi|>, image, <|eoi|>]
    step = count_flops(lambda: policy.masked_logits(ids, codes, cfg_scale))

    def rollout(reuse):
        gen = torch.Generator().manual_seed(0)
        return sample_images_masked(policy, ids, gen, cfg_scale=cfg_scale, timesteps=timesteps, reuse_prefix=reuse)

    reused, full = count_flops(lambda: rollout(True)), count_flops(lambda: rollout(False))
    rows = []
    for name, got, want, formula in [
        (f"one full step (S={seq}, T={t})", step, R.showo_step_flops(lm, k, t, seq, 2 * batch),
         "rows*S*2*trunk + rows*layers*4*S^2*width + rows*T*2*d*K, rows=2B"),
        (f"rollout, {timesteps} steps, text prefix reused", reused,
         R.showo_rollout_flops(lm, k, t, ids.shape[1], 2 * batch, timesteps),
         "prefix once + steps * (image part over all keys + head); see roofline.showo_rollout_flops"),
        (f"rollout, {timesteps} steps, no reuse", full,
         R.showo_rollout_flops(lm, k, t, ids.shape[1], 2 * batch, timesteps, reuse_prefix=False),
         "steps * one full step"),
    ]:
        r = row(f"showo: FLOPs per image, {name} (B={batch})", got / batch, want / batch, formula=formula)
        r["ok"] = abs(r["rel_err"]) <= FLOP_TOLERANCE
        rows.append(r)
    return rows


# ------------------------------------------------------------------------------ parity
def token_parity(policy, batch: int) -> list[dict]:
    """Greedy, CFG 5: ours = transformers' generate() = no-cache sampler, token for token."""
    ids, mask = janus_prompts(policy, batch)
    ours = greedy_ar(policy, ids, mask)
    theirs = policy.model.generate(input_ids=ids, attention_mask=mask, generation_mode="image", do_sample=False,
                                   guidance_scale=5.0)[:, -policy.num_image_tokens:]
    plain = sample_images_uncached(policy, ids, mask, policy.num_image_tokens, 5.0)
    return [row(f"janus: tokens equal to generate() (greedy, B={batch})", bool(torch.equal(ours, theirs)), True,
                ok=bool(torch.equal(ours, theirs)), equal_fraction=float((ours == theirs).float().mean())),
            row(f"janus: tokens equal to the no-cache sampler (B={batch})", bool(torch.equal(ours, plain)), True,
                ok=bool(torch.equal(ours, plain)), equal_fraction=float((ours == plain).float().mean()))]


def showo_prefix_parity(policy, batch: int, timesteps: int = 8) -> dict:
    """The text-prefix reuse changes the arithmetic order, not the model: same generator, same tokens."""
    from generate import sample_images_masked

    ids, _ = showo_prompts(policy, batch)
    runs = [sample_images_masked(policy, ids, torch.Generator().manual_seed(0), cfg_scale=5.0, timesteps=timesteps,
                                 reuse_prefix=reuse)[0] for reuse in (True, False)]
    same = float((runs[0] == runs[1]).float().mean())
    return row(f"showo: tokens equal with and without the prefix reuse (B={batch}, T={timesteps})", same == 1.0, True,
               ok=same == 1.0, equal_fraction=same)


# ------------------------------------------------------------------------------ ratios
def ratio(case, slow_s, fast_s, slow_name, fast_name) -> dict:
    """slow / fast: how many times faster the second is. Seconds stay in the JSON, the table shows the ratio."""
    return {"case": case, "measured": slow_s / fast_s, "ok": None, "seconds": {slow_name: slow_s, fast_name: fast_s},
            "detail": f"{slow_name} time / {fast_name} time"}


def speed_ratios(janus, showo, batch: int, repeats: int) -> list[dict]:
    from transformers import DynamicCache

    from understand import answer_questions

    ids, mask = janus_prompts(janus, batch)
    n = janus.num_image_tokens
    timed = lambda fn: median_time(fn, repeats=repeats, warmup=1)  # noqa: E731
    ours = timed(lambda: greedy_ar(janus, ids, mask))
    theirs = timed(lambda: janus.model.generate(input_ids=ids, attention_mask=mask, generation_mode="image",
                                                do_sample=False, guidance_scale=5.0))
    uncached = timed(lambda: sample_images_uncached(janus, ids, mask, n, 5.0))
    with replaced(janus, "new_cache", lambda rows, max_len: DynamicCache()):
        growing = timed(lambda: greedy_ar(janus, ids, mask))
    out = [ratio(f"janus: speedup over transformers generate() (B={batch}, greedy, CFG 5)", theirs, ours,
                 "generate", "ours"),
           ratio(f"janus: speedup of the KV cache over no cache (B={batch}, N={n})", uncached, ours,
                 "uncached", "cached"),
           ratio(f"janus: speedup of the static over a growing cache (B={batch})", growing, ours, "growing", "static")]
    out.append(window_ratio(batch, timed))
    from generate import sample_images_masked

    show_ids, _ = showo_prompts(showo, batch)
    masked = {reuse: timed(lambda: sample_images_masked(showo, show_ids, torch.Generator().manual_seed(0),
                                                        cfg_scale=5.0, timesteps=showo.default_timesteps,
                                                        reuse_prefix=reuse))
              for reuse in (True, False)}
    out.append(ratio(f"showo: speedup of the text-prefix reuse (B={batch}, T={showo.default_timesteps})",
                     masked[False], masked[True], "no reuse", "reuse"))
    for name, policy, images in [
        ("janus", janus, janus.encode_images(torch.rand(batch, 3, janus.image_size, janus.image_size))),
        ("showo", showo, torch.randint(0, showo.codebook_size, (batch, showo.num_image_tokens))),
    ]:
        questions = ["How many items in this image?"] * batch
        with no_eos(policy):  # fixed answer length: both sides do the same number of steps
            batched = timed(lambda: answer_questions(policy, images, questions, max_new_tokens=8))
            single = timed(lambda: [answer_questions(policy, images[i:i + 1], questions[i:i + 1], max_new_tokens=8)
                                    for i in range(batch)])
        out.append(ratio(f"{name}: speedup of batched over one-by-one answering (B={batch}, 8 tokens)", single,
                         batched, "one-by-one", "batched"))
    return out


def window_ratio(batch: int, timed) -> dict:
    """Reading only the filled KV slots (bucket 64) vs all of them, at Janus' real 576 tokens (384 px) and toy
    width, where attention over the cache is most of a step, as it is for Janus-Pro at batch 64."""
    from models.janus import JanusPolicy, build_tiny_janus

    model, processor = build_tiny_janus(image_size=384)
    policy = JanusPolicy(model, processor).eval()
    ids, mask = janus_prompts(policy, batch)
    seconds = {}
    for bucket in (0, 64):
        with replaced(policy, "kv_bucket", bucket):
            seconds[bucket] = timed(lambda: greedy_ar(policy, ids, mask))
    return ratio(f"janus: speedup of the windowed KV cache over all slots (B={batch}, N=576, bucket 64)",
                 seconds[0], seconds[64], "all slots", "windowed")


def compile_ratio(batch: int, repeats: int) -> dict:
    """The compiled one-token step (inductor) vs eager, one window (bucket 0: one graph). Opt-in: compiling
    takes ~20 s of CPU (inductor builds C++ kernels)."""
    import time

    from models import load_policy

    policy = load_policy("janus-tiny").eval()
    policy.kv_bucket = 0
    ids, mask = janus_prompts(policy, batch)
    eager_tokens = greedy_ar(policy, ids, mask)
    eager = median_time(lambda: greedy_ar(policy, ids, mask), repeats=repeats, warmup=1)
    start = time.perf_counter()
    policy.compile_decode("default")
    same = torch.equal(greedy_ar(policy, ids, mask), eager_tokens)
    compile_s = time.perf_counter() - start
    compiled = median_time(lambda: greedy_ar(policy, ids, mask), repeats=repeats, warmup=1)
    r = ratio(f"janus: speedup of the compiled decode step over eager (B={batch}, inductor)", eager, compiled,
              "eager", "compiled")
    r.update(compile_s=compile_s, tokens_equal=same)
    return r


# ------------------------------------------------------------------------------ main
def run(batch: int = 4, repeats: int = 5, timesteps: int | None = None, compiled: bool = False) -> list[dict]:
    from models import load_policy

    janus, showo = load_policy("janus-tiny").eval(), load_policy("showo-tiny").eval()
    timesteps = timesteps or showo.default_timesteps
    rows = [ar_forward_calls(janus, batch), masked_forward_calls(showo, batch, timesteps),
            static_cache_allocation(janus, batch), dynamic_cache_allocation(janus, batch)]
    rows += janus_flops(janus, batch)
    rows += showo_flops(showo, batch)
    rows += token_parity(janus, batch)
    rows.append(showo_prefix_parity(showo, batch))
    rows += speed_ratios(janus, showo, batch, repeats)
    if compiled:
        rows.append(compile_ratio(batch, repeats))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="CPU benchmark suite on janus-tiny and showo-tiny (counters + ratios).")
    ap.add_argument("--batch", type=int, default=4, help="images per rollout")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per ratio (the median is kept)")
    ap.add_argument("--timesteps", type=int, default=None, help="Show-o sampler steps (default the policy's)")
    ap.add_argument("--compile", action="store_true", help="add the compiled decode step's ratio (~20 s more)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier ratios)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "cpu.jsonl"), help="JSON lines file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment("cpu")
    print(f"{env['device']} | torch {env['torch']} | transformers {env['transformers']} | threads {env['threads']}")
    rows = run(args.batch, args.repeats, args.timesteps, args.compile)
    print_table(rows, ["case", "measured", "expected", "rel_err", "ok"])
    write_jsonl(args.out, [{"case": "environment", **env, "batch": args.batch, "repeats": args.repeats}] + rows)
    print(f"wrote {args.out}")
    failed = [r["case"] for r in rows if r["ok"] is False]
    if failed:
        print("FAILED: " + "; ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
