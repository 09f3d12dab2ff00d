"""What every benchmark script shares: clocks, call counters, FLOP counting, a no-cache sampler, output.

Nothing here knows a model family beyond the policy contract (models/__init__.py). Counters wrap a
policy's methods on the instance (never editing the model files) and put the originals back after.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time

import torch


# ------------------------------------------------------------------------------ clocks
def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn, device="cpu") -> float:
    """Seconds of one call: CUDA events on a GPU (what the kernels took), perf_counter on a CPU."""
    if torch.device(device).type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_time(fn, repeats: int = 5, warmup: int = 1, device="cpu", setup=None) -> float:
    """Median seconds of `repeats` calls after `warmup` untimed ones; `setup()` runs untimed before each."""
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    times = []
    for _ in range(max(1, repeats)):
        if setup is not None:
            setup()
        times.append(time_once(fn, device))
    return statistics.median(times)


# ------------------------------------------------------------------------------ counters
@contextlib.contextmanager
def replaced(obj, name: str, value):
    """Set obj.name = value on the instance for the duration; restore (or remove) it on exit."""
    had_own, real = name in vars(obj), vars(obj).get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had_own:
            setattr(obj, name, real)
        else:
            delattr(obj, name)


@contextlib.contextmanager
def wrap_method(obj, name: str, after):
    """Replace obj.name on the instance by a wrapper calling after(result, *args, **kwargs); restore on exit."""
    real = getattr(obj, name)

    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        after(out, *args, **kwargs)
        return out

    with replaced(obj, name, wrapper):
        yield


@contextlib.contextmanager
def record_forwards(module: torch.nn.Module):
    """Yield a list that receives (batch, length) for every forward call of `module` (ids or embeddings)."""
    calls = []

    def hook(_mod, args, kwargs):
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids", args[0] if args else None)
        calls.append(tuple(x.shape[:2]))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def cache_storage(cache) -> list:
    """(data_ptr, bytes) of every K and V tensor a transformers cache holds (StaticCache or DynamicCache)."""
    out = []
    for layer in cache.layers:
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None and t.numel():
                out.append((t.data_ptr(), t.numel() * t.element_size()))
    return out


# ------------------------------------------------------------------------------ FLOPs
def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn) -> int:
    """FLOPs of fn() from torch's FlopCounterMode (matmuls, convolutions, attention).

    torch 2.13 has no formula for the CPU SDPA kernel (`_scaled_dot_product_flash_attention_for_cpu`) and
    would count CPU attention as 0; we register the same formula it uses for the CUDA kernels.
    """
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


# ------------------------------------------------------------------------------ samplers and inputs
@torch.no_grad()
def sample_images_uncached(policy, prompt_ids, prompt_mask, steps: int, cfg_scale=None) -> torch.Tensor:
    """Greedy AR sampling WITHOUT a KV cache: step t is one teacher-forced pass (policy.forward) over the
    prompt and the t tokens drawn so far, and keeps only the last position's logits. The reference that
    tells what the cache saves; it must draw the same tokens as the cached sampler."""
    tokens = prompt_ids.new_zeros(prompt_ids.shape[0], steps)
    for t in range(steps):
        # image_ids[:, :-1] is what gets fed, so the placeholder at position t is never read
        gen = dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask, image_ids=tokens[:, : t + 1], cfg_scale=cfg_scale)
        tokens[:, t] = policy(gen=gen)["gen_logits"][:, t].argmax(-1)
    return tokens


def fixed_janus_prompts(policy, images: int, length: int, seed: int = 0):
    """`images` prompts of exactly `length` tokens: BOS, random text ids, BOI; no padding. Fixed work per image."""
    gen = torch.Generator().manual_seed(seed)
    special = torch.tensor([policy.bos_id, policy.eos_id, policy.pad_id, policy.boi_id, policy.image_token_id])
    ids = torch.randint(0, len(policy.tokenizer), (images, length), generator=gen)
    ids = torch.where(torch.isin(ids, special), torch.full_like(ids, 100), ids)  # 100: an ordinary BPE id
    ids[:, 0], ids[:, -1] = policy.bos_id, policy.boi_id
    return ids, torch.ones_like(ids)


@contextlib.contextmanager
def no_eos(policy):
    """Answers run to max_new_tokens (no row stops early), so batched and one-by-one runs do the same work."""
    with replaced(policy, "eos_id", -1):
        yield


@contextlib.contextmanager
def image_tokens(policy, count: int):
    """Sample only the first `count` image tokens (the samplers read policy.num_image_tokens)."""
    with replaced(policy, "num_image_tokens", count):
        yield


# ------------------------------------------------------------------------------ output
def fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def print_table(rows: list[dict], columns: list[str]) -> None:
    """A fixed-width table of the chosen keys (missing keys print '-')."""
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)), flush=True)


def write_jsonl(path, rows: list[dict], mode: str = "w") -> None:
    with open(path, mode) as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def environment(device) -> dict:
    """Device and versions, recorded with every result file (timings compare only on the same device kind)."""
    import os
    import platform

    import transformers

    dev = torch.device(device)
    cpu = f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu
    return {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
