"""Cost formulas for the benchmarks: FLOPs, bytes moved, roofline floors and memory, from model dimensions.

Everything here is plain arithmetic on config numbers, so the CPU suite can check it against
`FlopCounterMode` on the tiny models, the GPU suite can turn it into floors with the peaks it measured,
and recipe.py can plan memory without a GPU. Conventions:

- A matmul of (m x k) by (k x n) is 2mkn FLOPs; elementwise work (norms, RoPE, softmax, GELU) is not
  counted, as FlopCounterMode does not count it either.
- Attention is 4 * S_q * S_k * (heads * head_dim) FLOPs per layer and row (QK^T and PV). The counter
  charges the FULL S_q x S_k square even when a causal or padding mask hides half of it; `causal=True`
  gives the half that a causal kernel really does.
- A roofline floor is max(FLOPs / peak FLOP/s, bytes / peak bandwidth). For autoregressive decoding it is
  summed step by step (each step is its own kernel sequence); elsewhere it is taken over the whole phase.
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 2**30


@dataclass(frozen=True)
class LM:
    """The transformer trunk: what decides FLOPs per token and KV-cache bytes."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp: int
    mlp_mats: int  # 3 for SwiGLU (gate, up, down: Llama / Janus), 2 for a GELU MLP (fc1, fc2: Phi / Show-o)

    @property
    def attn_width(self) -> int:
        return self.heads * self.head_dim

    def block_params(self) -> int:
        """Matmul weights of one layer: q, k, v, o + the MLP (biases and norms are not matmul FLOPs)."""
        kv = self.kv_heads * self.head_dim
        return self.hidden * self.attn_width * 2 + self.hidden * kv * 2 + self.mlp_mats * self.hidden * self.mlp

    def trunk_params(self) -> int:
        return self.layers * self.block_params()

    def kv_bytes_per_token(self, bytes_per: int = 2) -> int:
        """K and V of one token in every layer: 2 * layers * kv_heads * head_dim * bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per


def lm_from_llama(cfg) -> LM:
    """A transformers LlamaConfig (Janus' text_config)."""
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return LM(cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, head_dim,
              cfg.intermediate_size, 3)


def lm_from_showo(cfg) -> LM:
    """models.showo.ShowoConfig (Phi-1.5: full multi-head attention, GELU MLP)."""
    return LM(cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_attention_heads,
              cfg.hidden_size // cfg.num_attention_heads, cfg.intermediate_size, 2)


@dataclass(frozen=True)
class JanusGen:
    """Janus' image-generation path: the trunk, the generation head and the generation aligner."""

    lm: LM
    codebook: int  # K, image vocabulary (16384 for VQ-16)
    embed_dim: int  # codebook vector size fed to the aligner (8)
    aligner_layers: int = 2  # vq_config.num_hidden_layers: fc1 (e -> d) then (layers - 1) x (d -> d)

    def head_params(self) -> int:  # proj_out (d -> d), GELU, vision_head (d -> K)
        return self.lm.hidden ** 2 + self.lm.hidden * self.codebook

    def aligner_params(self) -> int:
        return self.embed_dim * self.lm.hidden + (self.aligner_layers - 1) * self.lm.hidden ** 2

    def step_params(self) -> int:
        """Weights one decoding step touches per row: trunk + head + aligner (not the text embedding or lm_head)."""
        return self.lm.trunk_params() + self.head_params() + self.aligner_params()


def janus_gen_from_config(config) -> JanusGen:
    """A transformers JanusConfig."""
    vq = config.vq_config
    return JanusGen(lm_from_llama(config.text_config), vq.num_embeddings, vq.embed_dim, vq.num_hidden_layers)


def attention_flops(lm: LM, rows: int, queries: int, keys: int, causal: bool = False) -> int:
    """4 * S_q * S_k * width per layer and row; causal (queries == keys) keeps the lower triangle only."""
    pairs = queries * (queries + 1) // 2 if causal else queries * keys
    return 4 * rows * lm.layers * pairs * lm.attn_width


# ------------------------------------------------------------------------------ Janus FLOPs
def janus_teacher_forced_flops(g: JanusGen, images: int, prompt_len: int, tokens: int, cfg: bool = True,
                               causal: bool = False) -> int:
    """One teacher-forced pass over [prompt; image tokens[:-1]], as JanusPolicy._gen_logits computes it.

    rows = images (x2 with CFG); S = L + N - 1 positions per row:
        2 * trunk * rows * S          every position through every layer
      + 2 * head * rows * N           the generation head at the N positions that predict image tokens
      + 2 * aligner * images * (N-1)  image-token embeddings, computed once per image and shared by both rows
      + attention(rows, S, S)
    """
    rows = images * (2 if cfg else 1)
    s = prompt_len + tokens - 1
    linear = 2 * g.lm.trunk_params() * rows * s + 2 * g.head_params() * rows * tokens
    linear += 2 * g.aligner_params() * images * (tokens - 1)
    return linear + attention_flops(g.lm, rows, s, s, causal)


def slots_read(filled: int, max_len: int, bucket: int | None) -> int:
    """KV slots one attention call reads once `filled` are written: exactly those (bucket None, an ideal
    kernel), all max_len (bucket 0, SDPA over a plain StaticCache), or filled rounded up to the bucket
    (models/kv_cache.py, our sampler's cache)."""
    if bucket is None:
        return filled
    if bucket == 0:
        return max_len
    return min(max_len, -(-filled // bucket) * bucket)


def janus_cached_rollout_flops(g: JanusGen, images: int, prompt_len: int, tokens: int, bucket: int | None = None,
                               cfg: bool = True) -> int:
    """generate.sample_images_ar: one prefill of L tokens, then N - 1 single-token steps over a KV cache.

    Attention reads `slots_read(...)` keys per call (bucket None: only keys that exist, causal prefill; 0: all
    L + N slots, unused ones masked; b: the window our cache hands SDPA). The head runs once per call on the
    last position; the aligner runs on the fed token of every row.
    """
    rows, full = images * (2 if cfg else 1), prompt_len + tokens
    linear = 2 * g.lm.trunk_params() * rows * (prompt_len + tokens - 1)
    linear += 2 * g.head_params() * rows * tokens + 2 * g.aligner_params() * rows * (tokens - 1)
    if bucket is None:
        attn = attention_flops(g.lm, rows, prompt_len, prompt_len, causal=True)
    else:
        attn = attention_flops(g.lm, rows, prompt_len, slots_read(prompt_len, full, bucket))
    attn += sum(attention_flops(g.lm, rows, 1, slots_read(prompt_len + t, full, bucket)) for t in range(1, tokens))
    return linear + attn


def janus_uncached_rollout_flops(g: JanusGen, images: int, prompt_len: int, tokens: int, cfg: bool = True) -> int:
    """No KV cache: step t is a teacher-forced pass over the prompt and the t tokens drawn so far."""
    return sum(janus_teacher_forced_flops(g, images, prompt_len, t + 1, cfg) for t in range(tokens))


# ------------------------------------------------------------------------------ Show-o FLOPs
def showo_step_flops(lm: LM, codebook: int, image_tokens: int, seq_len: int, rows: int,
                     vocab: int | None = None) -> int:
    """One masked-decoding step (ShowoPolicy.masked_logits) over `rows` sequences of seq_len tokens.

    2 * trunk * rows * S + attention(rows, S, S) (omni-attention: a full mask, nothing to skip)
    + the head: 2 * d * K * T on the image positions (our codebook slice), or 2 * d * V * S when `vocab`
    is given (the released sampler's full lm_head over every position).
    """
    head = 2 * lm.hidden * codebook * image_tokens if vocab is None else 2 * lm.hidden * vocab * seq_len
    return 2 * lm.trunk_params() * rows * seq_len + attention_flops(lm, rows, seq_len, seq_len) + rows * head


def showo_rollout_flops(lm: LM, codebook: int, image_tokens: int, text_len: int, rows: int, steps: int,
                        reuse_prefix: bool = True) -> int:
    """A whole masked-decoding rollout (generate.sample_images_masked) of `steps` steps.

    Without prefix reuse every step is a full pass over S = L_text + T + 2 positions. With it (the sampler's
    default) the text block's keys and values are computed once, and a step runs only the T + 2 image-part
    positions, attending over all S keys:
        2 * trunk * rows * L_text + attention(rows, L_text, L_text)                      once
      + steps * (2 * trunk * rows * (T+2) + attention(rows, T+2, S) + rows * 2 * d * K * T)
    """
    seq = text_len + image_tokens + 2
    if not reuse_prefix:
        return steps * showo_step_flops(lm, codebook, image_tokens, seq, rows)
    part = image_tokens + 2
    prefix = 2 * lm.trunk_params() * rows * text_len + attention_flops(lm, rows, text_len, text_len)
    step = 2 * lm.trunk_params() * rows * part + attention_flops(lm, rows, part, seq)
    step += rows * 2 * lm.hidden * codebook * image_tokens
    return prefix + steps * step


# ------------------------------------------------------------------------------ floors
@dataclass(frozen=True)
class Peaks:
    """Measured (or assumed) device peaks: dense bf16 matmul FLOP/s and device-to-device bytes/s."""

    flops: float
    bandwidth: float

    def floor(self, flops: float, nbytes: float) -> float:
        """Seconds at the roofline: whichever of compute and memory traffic takes longer."""
        return max(flops / self.flops, nbytes / self.bandwidth)


# An H100's peaks as measured in an earlier run (dense bf16 matmul, device-to-device copy; not the datasheet's):
# ridge point 790e12 / 3.0e12 = 263 FLOP/byte. bench/RESULTS.md's floors and tests/test_bench.py use them.
REFERENCE_H100 = Peaks(790e12, 3.0e12)


def janus_rollout_floor(g: JanusGen, images: int, prompt_len: int, tokens: int, peaks: Peaks, bytes_per: int = 2,
                        bucket: int | None = None) -> dict:
    """Seconds for one CFG rollout of `images` images at the roofline, step by step.

    Each call reads the touched weights once for the whole batch and the KV slots attention reads for every
    row: the keys that exist (bucket None, the ideal), all L + N slots (bucket 0: SDPA over a plain
    StaticCache), or the filled slots rounded up to the bucket (our windowed cache).
    """
    rows, kvb = 2 * images, g.lm.kv_bytes_per_token(bytes_per)
    weights = g.step_params() * bytes_per
    full = prompt_len + tokens
    prefill_f = 2 * g.lm.trunk_params() * rows * prompt_len + 2 * g.head_params() * rows
    prefill_keys = slots_read(prompt_len, full, bucket)
    prefill_f += attention_flops(g.lm, rows, prompt_len, prefill_keys, causal=bucket is None)
    total = peaks.floor(prefill_f, weights + rows * prompt_len * kvb)
    step_bytes = []
    for t in range(1, tokens):
        ctx = slots_read(prompt_len + t, full, bucket)
        flops = 2 * g.step_params() * rows + attention_flops(g.lm, rows, 1, ctx)
        nbytes = weights + rows * ctx * kvb + rows * kvb  # read the cache, write the new K, V
        step_bytes.append(nbytes)
        total += peaks.floor(flops, nbytes)
    return {"seconds": total, "ms_per_image": 1e3 * total / images, "ms_per_step": 1e3 * total / tokens,
            "bytes_per_step": sum(step_bytes) / max(1, len(step_bytes)),
            "kv_cache_bytes": rows * full * kvb}


# ------------------------------------------------------------------------------ memory
def kv_cache_bytes(lm: LM, rows: int, length: int, bytes_per: int = 2) -> int:
    """2 * layers * rows * kv_heads * length * head_dim * bytes: a StaticCache allocated for `length` tokens."""
    return rows * length * lm.kv_bytes_per_token(bytes_per)


def activation_bytes(lm: LM, rows: int, seq_len: int, checkpointing: bool = False) -> int:
    """Activations a backward pass keeps, bf16, attention with a fused kernel (no S x S scores stored).

    ~34 * S * h bytes per layer and row (Korthikanti et al., arXiv:2205.05198, without the 5*a*S^2 term);
    with full-layer checkpointing only each layer's input (2 * S * h) is kept, plus one layer recomputed.
    """
    per_layer = 34 * seq_len * lm.hidden * rows
    if checkpointing:
        return lm.layers * 2 * seq_len * lm.hidden * rows + per_layer
    return lm.layers * per_layer


def logits_bytes(rows: int, positions: int, vocab: int, copies: int = 3) -> int:
    """fp32 logits of the trained positions; ~3 live copies in a loss (logits, log-softmax, its gradient)."""
    return copies * 4 * rows * positions * vocab


def training_state_bytes(trainable: int, frozen: int, precision: str = "mixed") -> dict:
    """Weights, gradients and AdamW states per replica, named as train.py's --precision.

    bf16:       fp32 weights (the master copy), grads, m and v, bf16 compute (4 + 4 + 8 = 16 B)
    fp32:       the same states, fp32 compute (16 B)
    bf16-lossy: weights, grads, m and v all stored in bf16 (2 + 2 + 4 = 8 B); it loses small updates
    mixed:      ZeRO's bf16 weights + bf16 grads + fp32 master, m, v (2 + 2 + 12 = 16 B per trainable parameter,
                the ZeRO paper's accounting); train.py does not do this, it is here for comparison
    Frozen parameters (the image tokenizer) cost their weights only.
    """
    weight_b, grad_b, adam_b = {"bf16": (4, 4, 8), "fp32": (4, 4, 8), "bf16-lossy": (2, 2, 4),
                                "mixed": (2, 2, 12)}[precision]
    return {"weights": weight_b * (trainable + frozen), "grads": grad_b * trainable, "adamw": adam_b * trainable}
