"""The windowed static KV cache and the compiled decode step: same numbers, fewer slots read."""

import pytest
import torch

from generate import image_uniforms, sample_images_ar
from models import check_sampling_flags
from models.kv_cache import WindowedStaticCache
from understand import answer_questions


def _sample_with_steps(policy, bucket, monkeypatch, cfg_scale=5.0):
    """Tokens, every step's logits and every step's window, with the cache windowed at `bucket`."""
    monkeypatch.setattr(policy, "kv_bucket", bucket)
    logits, windows, caches = [], [], []
    real_step, real_cache = policy.gen_step, policy.new_cache

    def new_cache(*args):
        caches.append(real_cache(*args))
        return caches[-1]

    def gen_step(cache, *args, **kwargs):
        logits.append(real_step(cache, *args, **kwargs).clone())
        windows.append(cache.layers[0].window)
        return logits[-1]

    monkeypatch.setattr(policy, "new_cache", new_cache)
    monkeypatch.setattr(policy, "gen_step", gen_step)
    ids, mask = policy.tokenize_gen_prompts(["a photo of a cat", "a photo of a purple wine glass and a black apple"])
    assert (mask == 0).any(), "the prompts should need left padding"
    u = image_uniforms(0, 0, 0, ids.shape[0], policy.num_image_tokens)
    tokens = sample_images_ar(policy, ids, mask, u, cfg_scale=cfg_scale)
    monkeypatch.setattr(policy, "new_cache", real_cache)
    monkeypatch.setattr(policy, "gen_step", real_step)
    return tokens, torch.stack(logits), windows, caches[0], ids.shape[1]


def test_window_reads_fewer_slots_with_the_same_logits(janus_tiny, monkeypatch):
    """Bucket 8 vs every slot: logits equal at every step (fp32), tokens equal, and the window is the filled
    length rounded up to 8 (so most steps read far fewer slots than the cache holds)."""
    tokens_all, logits_all, windows_all, cache_all, prompt_len = _sample_with_steps(janus_tiny, 0, monkeypatch)
    tokens, logits, windows, cache, _ = _sample_with_steps(janus_tiny, 8, monkeypatch)
    assert (logits - logits_all).abs().max() < 1e-5
    assert torch.equal(tokens, tokens_all)
    max_len = prompt_len + janus_tiny.num_image_tokens
    assert windows_all == [max_len] * len(windows_all)
    filled = [prompt_len + t for t in range(len(windows))]  # after step t's forward (the prefill is t = 0)
    assert windows == [min(max_len, -(-n // 8) * 8) for n in filled]
    assert sum(windows) < 0.7 * sum(windows_all)  # 21 prompt + 64 image slots: about (21 + 32 + 4) / 85 of them
    # the storage is the same single allocation either way
    assert cache.storage_bytes() == cache_all.storage_bytes() > 0
    assert cache.filled == max_len - 1  # the last token is sampled, never fed


def test_windowed_answers_equal_full_cache_answers(janus_tiny, showo_tiny, monkeypatch):
    """Understanding runs over the same cache class in both families: greedy answers and their logits do not
    depend on the bucket, and equal those of a growing cache (transformers' DynamicCache)."""
    from transformers import DynamicCache

    ids, mask = janus_tiny.tokenize_gen_prompts(["a photo of a dog", "two red apples"])
    u = image_uniforms(1, 0, 0, 2, janus_tiny.num_image_tokens)
    pixels = janus_tiny.decode_images(sample_images_ar(janus_tiny, ids, mask, u, cfg_scale=5.0))
    inputs = {"janus": (janus_tiny, janus_tiny.images_for_understanding(None, pixels)),
              "showo": (showo_tiny, torch.randint(0, showo_tiny.codebook_size, (2, showo_tiny.num_image_tokens),
                                                  generator=torch.Generator().manual_seed(0)))}
    questions = ["How many apples are there?", "What color is the dog?"]
    for family, (policy, images) in inputs.items():
        answers = {}
        for bucket in (0, 4, "growing"):
            if bucket == "growing":
                monkeypatch.setattr(policy, "new_cache", lambda *a: DynamicCache())
            else:
                monkeypatch.setattr(policy, "kv_bucket", bucket)
            answers[bucket] = answer_questions(policy, images, questions, max_new_tokens=8)
        monkeypatch.undo()
        *_, ids_all, _, texts_all = answers[0]
        for bucket in (4, "growing"):
            *_, ids, _, texts = answers[bucket]
            assert torch.equal(ids, ids_all) and texts == texts_all, (family, bucket)


def test_cache_refuses_overflow_and_a_mask_of_the_wrong_length(janus_tiny):
    cache = WindowedStaticCache(janus_tiny.model.config.text_config, 6, bucket=4)
    with pytest.raises(ValueError, match="full"):
        cache.advance(7, torch.ones(1, 7, dtype=torch.long), "cpu")
    with pytest.raises(ValueError, match="mask covers 3 slots"):
        cache.advance(2, torch.ones(1, 3, dtype=torch.long), "cpu")
    positions, mask = cache.advance(5, torch.tensor([[0, 0, 1, 1, 1]]), "cpu")
    assert positions.tolist() == [[0, 1, 2, 3, 4]] and mask.tolist() == [[0, 0, 1, 1, 1, 1]]  # window 8 -> max 6
    with pytest.raises(ValueError, match="bucket"):
        WindowedStaticCache(janus_tiny.model.config.text_config, 6, bucket=-1)


def test_compiled_decode_step_gives_the_same_tokens(fresh_janus):
    """torch.compile(fullgraph=True) traces the whole one-token step without a graph break, samples the same
    tokens, and a second rollout reuses the cache and the graph (no recompilation). The 'eager' backend
    checks the trace on CPU in seconds; GPUs use inductor (bench/gpu.py, case G10)."""
    from torch._dynamo.utils import counters

    p = fresh_janus.eval()
    p.kv_bucket = 0  # one window: one graph
    ids, mask = p.tokenize_gen_prompts(["a photo of a cat", "a blue clock"])
    u = image_uniforms(2, 0, 0, ids.shape[0], p.num_image_tokens)
    eager = sample_images_ar(p, ids, mask, u, cfg_scale=5.0)
    p.compile_decode(backend="eager")
    before = counters["stats"]["unique_graphs"]
    assert torch.equal(sample_images_ar(p, ids, mask, u, cfg_scale=5.0), eager)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs - before == 1 and len(p._caches) == 1  # one graph for all 63 steps (not one per step)
    kept = next(iter(p._caches.values()))
    assert torch.equal(sample_images_ar(p, ids, mask, u, cfg_scale=5.0), eager)
    assert counters["stats"]["unique_graphs"] == graphs  # replayed, not compiled again
    assert list(p._caches.values()) == [kept] and kept.filled == ids.shape[1] + p.num_image_tokens - 1  # reset, reused
    p.compile_decode("off")
    assert p._image_step is None and not p._caches


@pytest.mark.parametrize("args, message", [
    (("janus-tiny", -1, "off"), "--kv-bucket -1"),
    (("janus-tiny", 128, "max-autotune"), "choose one of off, default, reduce-overhead"),
    (("showo-tiny", 128, "default"), "Show-o"),
])
def test_sampling_flags_fail_early(args, message):
    with pytest.raises(ValueError, match=message):
        check_sampling_flags(*args)
    with pytest.raises(ValueError, match="--fsdp"):
        check_sampling_flags("janus-tiny", 128, "default", fsdp=True)
