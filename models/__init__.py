"""The one contract between the stage files and a model family.

generate.py, understand.py, sft.py, grpo.py and train.py only ever talk to a *policy*: an `nn.Module`
with the attributes and methods below. A family (Janus in models/janus.py, Show-o in models/showo_policy.py)
implements them; nothing else in the repository knows which family it is running.

Attributes
    family             "janus" | "showo"
    decoding           "ar" (one image token per step) | "masked" (parallel decoding, MaskGIT-style)
    num_image_tokens   T, tokens per image (576 for Janus at 384 px, 1024 for Show-o at 512 px)
    codebook_size      K, the image vocabulary
    default_cfg_scale  the family's usual guidance scale, in its own convention: guide(cond, uncond, scale)
                       is Janus' uncond + s (cond - uncond) and Show-o's (1 + w) cond - w uncond
    default_timesteps  masked decoding only: sampler steps for training rollouts
    eos_id, pad_id     for answers
    answer_vocab_mask  (V,) bool: the tokens an answer may hold (text and EOS; never an image slot, BOI/EOI,
                       image code, PAD or other control token). und_step and the forward's und_logits apply it
                       with restrict_to_answer_vocab, so answers are sampled from, and trained on, one distribution

Text to ids, no gradients
    tokenize_gen_prompts(prompts)   -> ids, mask (N, L), left-padded t2i prompts
    uncond_prompt_ids(ids)          -> ids (N, L), the unconditional CFG branch of those prompts
    tokenize_und_prompts(questions) -> ids, mask (N, L), left-padded questions with the image slots
    tokenize_answers(answers)       -> ids, mask (N, A), right-padded, ending in EOS
    decode_answers(ids)             -> list of str

The gradient path: forward
    forward(gen=None, und=None, couple=None) -> dict
      gen    {prompt_ids, prompt_mask, image_ids, cfg_scale} -> gen_logits (guided), gen_cond_logits (N, T, K)
             cfg_scale None: no guidance, the conditional model alone (no unconditional branch runs); a number:
             guide(cond, uncond, cfg_scale), whatever its value (Janus 1 and Show-o 0 equal cond). The samplers
             take cfg_scale the same way. Only the commands' --cfg-scale flag reads None as "the family's default".
             masked decoding adds token_mask (re-mask estimator) or commit_step (trajectory estimator)
      und    {images, prompt_ids, prompt_mask, answer_ids, answer_mask} -> und_logits (N, A, V)
      couple {tau, noise}: the understanding images are rebuilt from straight-through one-hot image
             tokens of gen_logits, so the answer loss reaches generation (UniRL's end-to-end regime).
    Both training modes go through this one call. Under DDP it is the wrapped module's forward, which is
    what triggers the gradient all-reduce; calling `model.module.<anything>` with gradients would
    silently skip it.

Sampling helpers, no gradients
    guide(cond, uncond, scale)                   the family's classifier-free guidance on logits
    new_cache(batch, max_len)                    a KV cache allocated once
    gen_step(cache, mask, prompt_ids | image_ids) -> next image-token logits (B, K)   [decoding "ar"]
    und_step(cache, mask, ids, images=None)       -> next text-token logits (B, V)
    masked_logits(prompt_ids, codes, cfg_scale)  -> guided logits (N, T, K) of a partly masked image
                                                    (codes == mask_code where masked)  [decoding "masked"]
    decode_images(image_ids) -> pixels (N, 3, H, W) in [0, 1]
    images_for_understanding(image_ids, pixels) -> what `und["images"]` takes for the model's own images
                             (Janus: SigLIP pixels of the decoded image; Show-o: the token ids themselves)
    encode_images(pixels)    -> the same for external pixels (Show-o: MAGVIT-v2 encoding)
    save(folder, state_dict=None)  a folder that `load_policy(name, folder)` loads back
    enable_activation_checkpointing()
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

# name -> "module:function" that builds it as f(name, path, dtype). `--model-path` overrides the weights.
# Named by string and imported on use, so this contract imports no family (and no family imports it back:
# what they share is in models/common.py). A loader's module may define cache_to_fill(name, path).
PRESETS = {
    "janus-pro-1b": "models.janus:load_janus",
    "janus-pro-7b": "models.janus:load_janus",
    "janus-1.3b": "models.janus:load_janus",
    "janus-tiny": "models.janus:load_janus",
    "showo": "models.showo_policy:load_showo_policy",  # Show-o 512 px (the paper's main model)
    "showo-256": "models.showo_policy:load_showo_policy",
    "showo-tiny": "models.showo_policy:load_showo_policy",
    "shapes-janus": "shapes.pretrain:load_shapes_policy",  # the CPU-sized shapes world (shapes/), its cached base
    "shapes-showo": "shapes.pretrain:load_shapes_policy",  # the same world, Show-o's family
}


def check_model_name(name: str) -> None:
    """Fail early, before anything heavy, on a preset name we do not know."""
    if name not in PRESETS:
        raise ValueError(f"unknown --model {name!r}: choose one of {', '.join(PRESETS)}")


def load_policy(name: str, path: str | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32):
    """Build the policy for a preset; `path` (a folder or hub id) overrides the preset's weights."""
    check_model_name(name)
    module, function = PRESETS[name].split(":")
    policy = getattr(importlib.import_module(module), function)(name, path, dtype=dtype)
    return policy.to(device)


COMPILE_MODES = ("off", "default", "reduce-overhead")


def check_sampling_flags(name: str, kv_bucket: int, compile_decode: str, fsdp: bool = False) -> None:
    """Fail early on sampler fast-path flags that cannot apply (--kv-bucket, --compile-decode)."""
    if kv_bucket < 0:
        raise ValueError(f"--kv-bucket {kv_bucket}: use 0 (attention reads every cache slot) or a positive slot count")
    if compile_decode not in COMPILE_MODES:
        raise ValueError(f"--compile-decode {compile_decode!r}: choose one of {', '.join(COMPILE_MODES)}")
    if compile_decode != "off" and name.startswith("showo"):
        raise ValueError("--compile-decode compiles the one-token step of autoregressive decoding (Janus); Show-o's "
                         "masked decoding runs full forwards that are compute-bound. Drop the flag for Show-o.")
    if compile_decode != "off" and fsdp:
        raise ValueError("--compile-decode with --fsdp is not supported (sharded parameters change between "
                         "rollouts). Drop one of the two flags.")


def cache_to_fill(name: str, path: str | None) -> Path | None:
    """The folder under UNIRL_CACHE that loading (name, path) would write first, or None: the shapes world's
    pretrained base when it is not cached yet, or the conversion of an original-format Janus folder. Lets a
    command check that it can write there before minutes of work (nothing is created here)."""
    check_model_name(name)
    fill = getattr(importlib.import_module(PRESETS[name].split(":")[0]), "cache_to_fill", None)
    return fill(name, path) if fill is not None else None


def check_cache_writable(name: str, path: str | None) -> None:
    """Fail at once, not after minutes of pretraining or converting, when loading (name, path) must write under
    UNIRL_CACHE and cannot."""
    from support.cli import writable_folder_problem  # plumbing, needed on this one path

    folder = cache_to_fill(name, path)
    problem = folder and writable_folder_problem(folder)
    if problem:
        raise ValueError(f"UNIRL_CACHE: loading {name} first writes {folder}, but {problem} (UNIRL_CACHE sets the "
                         f"cache's place)")


def set_sampling(policy, kv_bucket: int, compile_decode: str) -> None:
    """Apply the sampler's fast-path flags to an autoregressive policy (masked families ignore kv_bucket)."""
    if hasattr(policy, "kv_bucket"):
        policy.kv_bucket = kv_bucket
    if compile_decode != "off":
        policy.compile_decode(compile_decode)
