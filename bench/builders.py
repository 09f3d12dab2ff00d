"""Policies of the REAL architectures with random weights, for benchmarks that must not download anything.

Speed and memory do not depend on weight values, so the GPU suite builds Janus-Pro-1B / -7B and Show-o 512
from their configs (sizes from the Janus-Pro hub configs and models/showo.py) directly on the
device in bf16, and recipe.py counts their parameters on the `meta` device (no memory at all). The same
code builds toy sizes (`tiny-*`), so `bench/gpu.py --dry-run --tiny` exercises every line on a CPU.

Text tokenizers cannot be downloaded either; speed does not depend on them: Janus gets the small BPE of
janus-tiny (its ids are valid rows of the 102,400-row embedding), Show-o gets a byte-level stand-in laid
out like phi-1_5's vocabulary (<|endoftext|> at 50256, 50,295 text ids, then Show-o's own tokens).
"""

from __future__ import annotations

import contextlib

import torch

# name -> text trunk (hidden, layers, heads, MLP), image side (px, VQ width), SigLIP (width, layers, heads)
JANUS_SIZES = {
    "janus-pro-1b": dict(hidden=2048, layers=24, heads=16, mlp=5632, vocab=102400, image_size=384,
                         codebook=16384, vq_channels=128, vq_mult=(1, 1, 2, 2, 4), vq_blocks=2, vq_latent=256,
                         vision=None),  # None: JanusVisionConfig's defaults, SigLIP-L/16 at 384 px
    "janus-pro-7b": dict(hidden=4096, layers=30, heads=32, mlp=11008, vocab=102400, image_size=384,
                         codebook=16384, vq_channels=128, vq_mult=(1, 1, 2, 2, 4), vq_blocks=2, vq_latent=256,
                         vision=None),
    # toy sizes with the same structure: 4x4 = 16 image tokens at 64 px
    "tiny-1b": dict(hidden=64, layers=2, heads=4, mlp=172, vocab=None, image_size=64, codebook=512,
                    vq_channels=32, vq_mult=(1, 1, 1, 1, 1), vq_blocks=1, vq_latent=32,
                    vision=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2.0)),
    "tiny-7b": dict(hidden=96, layers=3, heads=6, mlp=256, vocab=None, image_size=64, codebook=512,
                    vq_channels=32, vq_mult=(1, 1, 1, 1, 1), vq_blocks=1, vq_latent=32,
                    vision=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2.0)),
}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Create parameters directly in `dtype`: a 7B model never exists in fp32 on the device."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def janus_config(size: str, tokenizer):
    """A transformers JanusConfig with the sizes of `size` and the special ids of `tokenizer`."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    from models.janus import BOS, EOS, IMAGE, PAD

    s = JANUS_SIZES[size]
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in dict(bos=BOS, eos=EOS, pad=PAD, img=IMAGE).items()}
    text = LlamaConfig(vocab_size=s["vocab"] or len(tokenizer), hidden_size=s["hidden"], intermediate_size=s["mlp"],
                       num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["heads"],
                       max_position_embeddings=16384, rms_norm_eps=1e-6, rope_theta=10000.0,
                       bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
                       tie_word_embeddings=False)
    tokens = (s["image_size"] // 16) ** 2
    vision = JanusVisionConfig(projection_dim=s["hidden"], image_size=s["image_size"], num_image_tokens=tokens,
                               **(s["vision"] or {}))
    vq = JanusVQVAEConfig(embed_dim=8, num_embeddings=s["codebook"], latent_channels=s["vq_latent"],
                          base_channels=s["vq_channels"], channel_multiplier=list(s["vq_mult"]),
                          num_res_blocks=s["vq_blocks"], projection_dim=s["hidden"], image_token_embed_dim=s["hidden"])
    # tie_word_embeddings=False: Janus-Pro's lm_head is its own matrix (models/janus.py explains the trap)
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=ids["img"],
                       tie_word_embeddings=False)


def build_janus_policy(size: str, device="cpu", dtype=torch.float32):
    """A JanusPolicy of the given size with random weights, created on `device` in `dtype`."""
    from transformers import JanusForConditionalGeneration, JanusImageProcessorPil, JanusProcessor

    from models.janus import BOI, JanusPolicy, build_tiny_tokenizer, chat_template

    tok = build_tiny_tokenizer()
    config = janus_config(size, tok)
    with torch.device(device), default_dtype(dtype):
        model = JanusForConditionalGeneration(config).eval()
    gc = model.generation_config  # what generate(generation_mode="image") reads, as janus-tiny sets it
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    gc.generation_kwargs = {"boi_token_id": tok.convert_tokens_to_ids(BOI)}
    gc.guidance_scale, gc.temperature, gc.do_sample = 5.0, 1.0, True
    size_px = config.vision_config.image_size
    image_processor = JanusImageProcessorPil(size={"height": size_px, "width": size_px}, image_mean=[0.5] * 3,
                                             image_std=[0.5] * 3, min_size=14)
    processor = JanusProcessor(image_processor=image_processor, tokenizer=tok, chat_template=chat_template(),
                               use_default_system_prompt=True, num_image_tokens=config.vision_config.num_image_tokens)
    return JanusPolicy(model, processor)


def showo_configs(tiny: bool):
    """(Show-o config, MAGVIT-v2 config): 512 px as released, or the toy sizes of showo-tiny."""
    from models import showo as S
    from models.magvitv2 import magvitv2_config, magvitv2_tiny_config

    return (S.showo_tiny_config(), magvitv2_tiny_config()) if tiny else (S.showo_512_config(), magvitv2_config())


def standin_text_tokenizer(config):
    """phi-1_5's layout without the hub: models.showo.tiny_text_tokenizer, fillers up to llm_vocab_size."""
    from models.showo import tiny_text_tokenizer

    return tiny_text_tokenizer(config)


def build_showo_policy(tiny: bool = False, device="cpu", dtype=torch.float32):
    """A ShowoPolicy (Show-o 512 + MAGVIT-v2, or the toy sizes) with random weights on `device` in `dtype`."""
    from models import showo as S
    from models.magvitv2 import MAGVITv2
    from models.showo_policy import ShowoPolicy

    config, vq_config = showo_configs(tiny)
    with torch.device(device), default_dtype(dtype):
        model, vq = S.Showo(config).eval(), MAGVITv2(vq_config).eval()
    return ShowoPolicy(model, standin_text_tokenizer(config), vq)


def count_parameters(model: str) -> dict:
    """Parameter counts of a preset's real architecture, instantiated on the meta device (no memory).

    total, frozen (the image tokenizer: never trained), trainable = total - frozen.
    """
    from models import showo as S
    from models.magvitv2 import MAGVITv2

    if model.startswith("janus"):
        from transformers import JanusForConditionalGeneration

        from models.janus import build_tiny_tokenizer

        size = "janus-pro-7b" if model == "janus-pro-7b" else "janus-pro-1b"  # janus-1.3b has the 1B dims
        with torch.device("meta"):
            net = JanusForConditionalGeneration(janus_config(size, build_tiny_tokenizer()))
        total = sum(p.numel() for p in net.parameters())
        frozen = sum(p.numel() for p in net.model.vqmodel.parameters())
    elif model.startswith("showo"):
        config, vq_config = showo_configs(tiny=False)
        with torch.device("meta"):
            net, vq = S.Showo(config), MAGVITv2(vq_config)
        frozen = sum(p.numel() for p in vq.parameters())
        total = sum(p.numel() for p in net.parameters()) + frozen
    else:
        raise ValueError(f"no parameter count for {model!r}: "
                         "janus-pro-1b | janus-pro-7b | janus-1.3b | showo | showo-256")
    return {"total": total, "frozen": frozen, "trainable": total - frozen}
