"""Convert DeepSeek's original-format Janus checkpoints into transformers' native Janus format.

What: `deepseek-ai/Janus-1.3B`, `deepseek-ai/Janus-Pro-1B` and `deepseek-ai/Janus-Pro-7B` ship in DeepSeek's
remote-code layout (`model_type: "multi_modality"`, sub-configs `language_config`, `vision_config`,
`aligner_config`, `gen_vision_config`, `gen_aligner_config`, `gen_head_config`, and timm / LlamaGen weight names).
This file turns such a folder into one that `JanusForConditionalGeneration.from_pretrained(dst)` and
`JanusProcessor.from_pretrained(dst)` load: config, weights, generation config, tokenizer, image processor and
chat template.

Why: the paper's Janus run used Janus-1.3B, which exists only in the original format (transformers-format
copies exist for Janus-Pro only: `deepseek-community/*`). transformers' own conversion script is not in the
pip wheel, needs accelerate, reads only `.bin` files (Janus-1.3B ships `model.safetensors`), and under
transformers 5 its explicit `tie_weights()` overwrites Janus' untied `lm_head` with the input embeddings.

Run:  python -m models.convert_janus SRC_DIR DST_DIR [--roles User Assistant]

What it does, in order:
  1. sizes: the text model from `language_config`; the aligners and the generation head from their configs;
     the SigLIP and VQ-16 sizes from the tensor shapes (DeepSeek's code fixes them by class name, so the
     config does not carry them); the SigLIP head count from DeepSeek's table for `model_name`.
  2. weights: `model.safetensors`, `pytorch_model.bin`, or either one sharded with an index; renamed by
     KEY_RULES. Every original key must match a rule or DROPPED_KEYS, and the renamed set must equal the
     model's own weight names and shapes exactly, or a ValueError lists what is wrong.
  3. processor: the source tokenizer.json, with `<image_placeholder>` / `<begin_of_image>` / `<end_of_image>` as
     the named image tokens and left padding; a PIL image processor with the source mean/std; the chat template
     with Janus-Pro's `<|User|>` / `<|Assistant|>` roles or Janus-1.3B's `User` / `Assistant` (see `detect_roles`).
  4. generation config: the full-softmax CFG sampler of the original (guidance 5, temperature 1, top_k 0).
  5. save into a temporary sibling folder, then rename it to DST (refused if DST exists and is not empty).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

# DeepSeek's special-token strings: full-width bars and U+2581 in BOS / EOS / PAD.
BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
PAD = "<\uff5c\u2581pad\u2581\uff5c>"  # DeepSeek's VLChatProcessor pads, and blanks CFG rows, with this one
IMAGE, BOI, EOI = "<image_placeholder>", "<begin_of_image>", "<end_of_image>"

PRO_ROLES = ("<|User|>", "<|Assistant|>")  # Janus-Pro (DeepSeek's "deepseek" conversation template)
JANUS_13B_ROLES = ("User", "Assistant")  # Janus-1.3B (the template DeepSeek later renamed "deepseek_old")

# The weight shapes give every SigLIP size but the head count; DeepSeek's siglip_vit.py fixes it per model_name.
SIGLIP_HEADS = {"siglip_large_patch16_384": 16}

# DeepSeek built `LlamaConfig(**language_config)` under transformers 4.x, so a field its config.json leaves out
# took that version's default. Spelled out here so that new transformers defaults cannot change the model; the
# weight-shape check in `rename_weights` catches any size these would get wrong.
LLAMA_4X_DEFAULTS = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "hidden_act": "silu", "max_position_embeddings": 2048,
                     "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "attention_bias": False}

VERSION = 1  # part of every cache key (source_key): bump when a change here alters what a conversion writes

WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")


# -------------------------------------------------------------------- weight names
def _aligner_layer(prefix: str):
    """DeepSeek's aligner is Sequential(Linear, GELU, Linear, ...): layers.0 -> fc1, layers.2k -> hidden_layers.k-1."""
    def rename(m: re.Match) -> str:
        index = int(m[1])
        return f"{prefix}.fc1.{m[2]}" if index == 0 else f"{prefix}.hidden_layers.{index // 2 - 1}.{m[2]}"
    return rename


def _vq_name(m: re.Match) -> str:
    """LlamaGen's VQ-16 names -> transformers' JanusVQVAE names (the module tree is the same, only renamed)."""
    name = "model.vqmodel." + m[1]
    name = name.replace(".encoder.conv_blocks.", ".encoder.down.").replace(".decoder.conv_blocks.", ".decoder.up.")
    name = name.replace(".res.", ".block.")  # the ResnetBlock list of each level
    for old, new in ((".mid.0.", ".mid.block_1."), (".mid.1.", ".mid.attn_1."), (".mid.2.", ".mid.block_2.")):
        name = name.replace(old, new)  # mid was a ModuleList [ResnetBlock, AttnBlock, ResnetBlock]
    return name


VIT = r"vision_model\.vision_tower"
LAYER = r"model.vision_model.encoder.layers.\1"
# (original name, full match; transformers name, a template or a function of the match; how the tensor changes)
KEY_RULES = [
    # DeepSeek-LLM is a LlamaForCausalLM: only the prefix changes.
    (r"language_model\.model\.(.+)", r"model.language_model.\1", None),
    (r"language_model\.lm_head\.weight", "lm_head.weight", None),
    # SigLIP-L understanding encoder: timm ViT names -> transformers Janus vision names.
    (VIT + r"\.patch_embed\.proj\.(weight|bias)", r"model.vision_model.embeddings.patch_embedding.\1", None),
    (VIT + r"\.pos_embed", "model.vision_model.embeddings.position_embedding.weight", "squeeze0"),  # (1, N, D) -> (N, D)
    (VIT + r"\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", LAYER + r".self_attn.{}_proj.\2", "split_qkv"),
    (VIT + r"\.blocks\.(\d+)\.attn\.proj\.(weight|bias)", LAYER + r".self_attn.projection_layer.\2", None),
    (VIT + r"\.blocks\.(\d+)\.norm([12])\.(weight|bias)", LAYER + r".layer_norm\2.\3", None),
    (VIT + r"\.blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", LAYER + r".mlp.\2.\3", None),
    (VIT + r"\.norm\.(weight|bias)", r"model.vision_model.post_layernorm.\1", None),
    (r"aligner\.layers\.(\d+)\.(weight|bias)", _aligner_layer("model.aligner"), None),
    # Generation side: VQ-16 tokenizer, its input embedding + aligner, and the image-token head.
    (r"gen_vision_model\.(.+)", _vq_name, None),
    (r"gen_embed\.weight", "model.generation_embeddings.weight", None),
    (r"gen_aligner\.layers\.(\d+)\.(weight|bias)", _aligner_layer("model.generation_aligner"), None),
    (r"gen_head\.output_mlp_projector\.(weight|bias)", r"model.generation_head.proj_out.\1", None),
    (r"gen_head\.vision_head\.(weight|bias)", r"model.generation_head.vision_head.\1", None),
]
DROPPED_KEYS = [
    VIT + r"\.attn_pool\..+",  # SigLIP's attention-pooling head: Janus feeds the patch tokens, never the pooled one
    r"gen_vision_model\.quantize\.codebook_used",  # a training-time codebook usage counter
    r"language_model\.model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",  # RoPE table some Llama saves kept; recomputed
]


def rename_weights(original: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Original weights -> transformers names; ValueError unless they match `expected` (name -> shape) exactly."""
    converted, source_of, problems = {}, {}, []
    for key, tensor in original.items():
        if any(re.fullmatch(pattern, key) for pattern in DROPPED_KEYS):
            continue
        rule = next(((m, target, op) for pattern, target, op in KEY_RULES if (m := re.fullmatch(pattern, key))), None)
        if rule is None:
            problems.append(f"unknown original weight {key!r} (no rule renames or drops it)")
            continue
        m, target, op = rule
        name = m.expand(target) if isinstance(target, str) else target(m)
        if op == "split_qkv":  # timm's fused Linear(D, 3D): rows are [q; k; v]; clone so each owns its storage
            pieces = {name.format(p): t.clone() for p, t in zip("qkv", tensor.chunk(3, dim=0))}
        elif op == "squeeze0":
            pieces = {name: tensor.squeeze(0)}
        else:
            pieces = {name: tensor}
        for name, piece in pieces.items():
            if name in source_of:
                problems.append(f"{key!r} and {source_of[name]!r} both become {name!r}")
            converted[name], source_of[name] = piece, key
    for name in sorted(converted.keys() - expected.keys()):
        problems.append(f"{source_of[name]!r} becomes {name!r}, which JanusForConditionalGeneration does not have")
    for name in sorted(expected.keys() - converted.keys()):
        problems.append(f"missing: no original weight becomes {name!r}")
    for name in sorted(converted.keys() & expected.keys()):
        if converted[name].shape != expected[name]:
            problems.append(f"{source_of[name]!r} has shape {tuple(converted[name].shape)}, "
                            f"{name!r} needs {tuple(expected[name])}")
    if problems:
        shown = "\n  ".join(problems[:40]) + (f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else "")
        raise ValueError(f"cannot convert this Janus checkpoint ({len(problems)} problems):\n  {shown}")
    return converted


# -------------------------------------------------------------------- reading the source folder
def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def is_original_janus(path) -> bool:
    """True for a folder in DeepSeek's remote-code layout (config.json of model_type "multi_modality")."""
    config = _read_json(Path(path) / "config.json") if Path(path).is_dir() else {}
    return config.get("model_type") == "multi_modality" or {"language_config", "gen_vision_config"} <= config.keys()


def load_original_weights(src: Path) -> dict[str, torch.Tensor]:
    """All tensors of the first weight file found: safetensors or .bin, single or sharded with an index."""
    from safetensors.torch import load_file

    name = next((n for n in WEIGHT_FILES if (src / n).exists()), None)
    if name is None:
        raise ValueError(f"{src} holds none of {', '.join(WEIGHT_FILES)}")
    files = sorted(set(_read_json(src / name)["weight_map"].values())) if name.endswith(".index.json") else [name]
    weights = {}
    for file in files:
        if file.endswith(".safetensors"):
            weights.update(load_file(src / file))
        else:  # weights_only: a .bin is a pickle; refuse anything but tensors
            weights.update(torch.load(src / file, map_location="cpu", weights_only=True))
    return weights


def _param(weights: dict, name: str) -> torch.Tensor:
    if name not in weights:
        raise ValueError(f"not a Janus checkpoint: it has no {name!r}")
    return weights[name]


def _count(weights: dict, pattern: str) -> int:
    """How many distinct values the single group of `pattern` takes over the weight names."""
    return len({m[1] for key in weights if (m := re.fullmatch(pattern, key))})


def build_config(original: dict, weights: dict, ids: dict):
    """JanusConfig from the original config.json plus the sizes only the tensor shapes carry."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    language = {**LLAMA_4X_DEFAULTS, **original["language_config"]}
    if language.get("rope_scaling"):
        raise ValueError(f"rope_scaling {language['rope_scaling']} is not supported by this converter")
    text = LlamaConfig(
        vocab_size=language["vocab_size"], hidden_size=language["hidden_size"],
        intermediate_size=language["intermediate_size"], num_hidden_layers=language["num_hidden_layers"],
        num_attention_heads=language["num_attention_heads"],
        num_key_value_heads=language.get("num_key_value_heads") or language["num_attention_heads"],
        hidden_act=language["hidden_act"], max_position_embeddings=language["max_position_embeddings"],
        rms_norm_eps=language["rms_norm_eps"], attention_bias=language["attention_bias"],
        rope_parameters={"rope_type": "default", "rope_theta": language["rope_theta"]},
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
        tie_word_embeddings=False,  # DeepSeek-LLM has its own lm_head
    )

    # SigLIP: DeepSeek's create_siglip_vit builds it from `model_name`; the tensors give every size but the heads.
    vision_params, aligner = original["vision_config"]["params"], original["aligner_config"]["params"]
    model_name = vision_params.get("model_name", "siglip_large_patch16_384")  # CLIPVisionTower's default
    if model_name not in SIGLIP_HEADS:
        raise ValueError(f"unknown SigLIP model_name {model_name!r}: add its head count to SIGLIP_HEADS")
    hidden, _, patch, _ = _param(weights, "vision_model.vision_tower.patch_embed.proj.weight").shape
    mlp_width = _param(weights, "vision_model.vision_tower.blocks.0.mlp.fc1.weight").shape[0]
    num_patches = _param(weights, "vision_model.vision_tower.pos_embed").shape[1]  # (1, N, D)
    image_size = vision_params.get("image_size") or round(num_patches**0.5) * patch
    if (image_size // patch) ** 2 != num_patches:
        raise ValueError(f"image_size {image_size} with patch {patch} does not give the {num_patches} positions of pos_embed")
    if int(hidden * (mlp_width / hidden)) != mlp_width:  # transformers builds int(hidden * mlp_ratio)
        raise ValueError(f"SigLIP MLP width {mlp_width} is not a ratio of hidden {hidden} transformers can express")
    if aligner.get("projector_type", "mlp_gelu") != "mlp_gelu" or aligner.get("input_dim", hidden) != hidden:
        raise ValueError(f"aligner {aligner} is not the mlp_gelu projector from {hidden}-wide SigLIP features")
    vision = JanusVisionConfig(
        hidden_size=hidden, patch_size=patch, image_size=image_size, mlp_ratio=mlp_width / hidden,
        num_hidden_layers=_count(weights, r"vision_model\.vision_tower\.blocks\.(\d+)\..+"),
        num_attention_heads=SIGLIP_HEADS[model_name],
        projection_dim=aligner["n_embed"], depth=aligner["depth"], num_image_tokens=(image_size // patch) ** 2,
    )

    # VQ-16: DeepSeek's code builds it from the class name alone, so its widths come from the tensors.
    gen_vision, gen_aligner = original["gen_vision_config"]["params"], original["gen_aligner_config"]["params"]
    gen_head = original["gen_head_config"]["params"]
    base, in_channels = _param(weights, "gen_vision_model.encoder.conv_in.weight").shape[:2]
    levels = _count(weights, r"gen_vision_model\.encoder\.conv_blocks\.(\d+)\..+")
    # In transformers one `projection_dim` is both the generation aligner width and the head's hidden width.
    if gen_head["image_token_embed"] != gen_aligner["n_embed"] or gen_head["image_token_size"] != gen_vision["image_token_size"]:
        raise ValueError(f"gen_head {gen_head} does not fit gen_aligner {gen_aligner} / gen_vision {gen_vision}")
    vq = JanusVQVAEConfig(
        embed_dim=gen_vision["n_embed"], num_embeddings=gen_vision["image_token_size"],
        base_channels=base, in_channels=in_channels,
        latent_channels=_param(weights, "gen_vision_model.encoder.conv_out.weight").shape[0],
        out_channels=_param(weights, "gen_vision_model.decoder.conv_out.weight").shape[0],
        channel_multiplier=[_param(weights, f"gen_vision_model.encoder.conv_blocks.{i}.res.0.conv1.weight").shape[0]
                            // base for i in range(levels)],
        num_res_blocks=_count(weights, r"gen_vision_model\.encoder\.conv_blocks\.0\.res\.(\d+)\..+"),
        projection_dim=gen_aligner["n_embed"], num_hidden_layers=gen_aligner["depth"],
        image_token_embed_dim=gen_head["n_embed"],
    )
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=ids["image"],
                       tie_word_embeddings=False)  # JanusConfig defaults to True, which would tie lm_head


# -------------------------------------------------------------------- processor and generation config
def detect_roles(src: Path, roles=None) -> tuple[tuple[str, str], str]:
    """The chat roles of the source model, and why.

    Janus-1.3B and Janus-Pro share one layout and one sft_format name ("deepseek"); DeepSeek's code takes
    the role strings from the caller's messages, and its READMEs use "User"/"Assistant" for Janus-1.3B and
    "<|User|>"/"<|Assistant|>" for Janus-Pro. So, in order: the `roles` argument; a processor_config.json
    with sft_format "deepseek_old" (the later name of the 1.3B template); a source path that names Janus-1.3B
    (the hub id or the hub cache folder `models--deepseek-ai--Janus-1.3B`); else Janus-Pro's roles.
    """
    if roles:
        return tuple(roles), "given"
    if _read_json(src / "processor_config.json").get("sft_format") == "deepseek_old":
        return JANUS_13B_ROLES, "processor_config.json has sft_format 'deepseek_old'"
    parts = Path(src).parts + Path(src).resolve().parts
    if any(re.search(r"janus[-_]1\.3b", part, re.IGNORECASE) for part in parts):
        return JANUS_13B_ROLES, "the source path names Janus-1.3B"
    return PRO_ROLES, "no Janus-1.3B marker, so Janus-Pro's"


def chat_template(roles: tuple[str, str] = PRO_ROLES) -> str:
    """DeepSeek's conversation format as Jinja: `{user}: text\\n\\n{assistant}: answer<eos>`, prompt `{assistant}:`.

    As in DeepSeek's Conversation.get_prompt: every assistant turn with content ends with EOS (the SFT target),
    an empty one is just `{assistant}:`. Within a turn, as in transformers' Janus template: an image is
    `<image_placeholder>` set off by newlines, consecutive texts are joined by a space, and the turn is stripped.
    A system message is its text + `\\n\\n`; the processor adds the default system prompt itself in text mode.
    """
    user, assistant = roles
    return (
        "{%- for message in messages -%}"
        "{%- set role = message['role'] | lower -%}"
        "{%- set items = [{'type': 'text', 'text': message['content']}] if message['content'] is string"
        " else message['content'] -%}"
        "{%- set empty = items | length == 0 or (items | length == 1 and items[0]['type'] == 'text'"
        " and items[0]['text'] | trim == '') -%}"
        "{%- if role == 'user' -%}{{ '" + user + ": ' }}"
        "{%- elif role == 'assistant' -%}{{ '" + assistant + ":' }}{%- if not empty -%}{{ ' ' }}{%- endif -%}"
        "{%- endif -%}"
        "{%- for item in items -%}"
        "{%- if item['type'] == 'image' -%}"
        "{%- if not loop.first -%}{{ '\\n' }}{%- endif -%}{{ '" + IMAGE + "' }}{%- if not loop.last -%}{{ '\\n' }}{%- endif -%}"
        "{%- else -%}"
        "{%- set text = item['text'] -%}"
        "{%- if loop.first -%}{%- set text = text.lstrip() -%}{%- endif -%}"
        "{%- if loop.last -%}{%- set text = text.rstrip() -%}{%- endif -%}"
        "{%- if not loop.first and loop.previtem['type'] == 'text' -%}{{ ' ' }}{%- endif -%}{{ text }}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if role == 'assistant' -%}{%- if not empty -%}{{ '" + EOS + "' }}{%- endif -%}"
        "{%- elif not loop.last or add_generation_prompt -%}{{ '\\n\\n' }}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '" + assistant + ":' }}{%- endif -%}"
    )


def build_tokenizer(src: Path):
    """The source tokenizer.json as-is, with the Janus image tokens named and left padding."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    settings = {**_read_json(src / "tokenizer_config.json"), **_read_json(src / "special_tokens_map.json")}

    def token(name: str, default: str) -> str:  # tokenizer configs store either a string or an AddedToken dict
        value = settings.get(name) or default
        return value["content"] if isinstance(value, dict) else value

    bos, eos = token("bos_token", BOS), token("eos_token", EOS)
    raw = Tokenizer.from_file(str(src / "tokenizer.json"))
    missing = [t for t in (bos, eos, PAD, IMAGE, BOI, EOI) if raw.token_to_id(t) is None]
    if missing:
        raise ValueError(f"{src / 'tokenizer.json'} lacks the Janus tokens {missing}")
    # Janus' LlamaTokenizerFast prepends BOS; keep that if the file's post-processor does not already do it.
    if settings.get("add_bos_token", True) and raw.encode("a").ids[:1] != [raw.token_to_id(bos)]:
        raw.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, raw.token_to_id(bos))])
    return PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=bos, eos_token=eos, pad_token=PAD, padding_side="left",
        model_max_length=settings.get("model_max_length", 16384),
        extra_special_tokens={"image_token": IMAGE, "boi_token": BOI, "eoi_token": EOI},  # JanusProcessor reads these
    )


def build_processor(src: Path, tokenizer, vision_config, roles: tuple[str, str]):
    from transformers import JanusImageProcessorPil, JanusProcessor

    pre = _read_json(src / "preprocessor_config.json")
    size = pre.get("image_size", vision_config.image_size)
    if size != vision_config.image_size:
        raise ValueError(f"preprocessor_config.json image_size {size} != vision image_size {vision_config.image_size}")
    image_processor = JanusImageProcessorPil(
        size={"height": size, "width": size}, min_size=pre.get("min_size", 14),
        image_mean=pre.get("image_mean", [0.5] * 3), image_std=pre.get("image_std", [0.5] * 3),  # Janus: 0.5 / 0.5
        rescale_factor=pre.get("rescale_factor", 1 / 255), do_normalize=pre.get("do_normalize", True),
    )
    return JanusProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template(roles),
                          use_default_system_prompt=True,  # as the hub processors and DeepSeek's VLChatProcessor
                          num_image_tokens=vision_config.num_image_tokens)


def build_generation_config(ids: dict):
    """The original sampler: softmax(CFG-guided logits / T), no top-k; generate() reads BOI from generation_kwargs."""
    from transformers import GenerationConfig

    config = GenerationConfig(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
                              generation_kwargs={"boi_token_id": ids["boi"]}, guidance_scale=5.0,
                              temperature=1.0, do_sample=True, top_k=0)  # top_k unset would mean transformers' 50
    config._from_model_config = False  # with True, a reload drops generation_kwargs (and so boi_token_id)
    return config


# -------------------------------------------------------------------- the cache key
def source_key(src, memo: Path | None = None) -> str:
    """The name of `src`'s conversion in a cache: the folder's name plus a hash of everything the conversion reads.

    Content, not the name alone: two different folders called Janus-1.3B must never share one conversion (nor
    let an evaluation load one folder's weights while it records the other's hash). Hashed: VERSION, the chat
    roles (detect_roles reads them partly from the path) and every file's relative name and sha256 (hidden
    entries such as .git are skipped). Hashing 4 to 15 GB of weights takes seconds to a minute, so `memo` (a
    JSON file) remembers each file's sha256 under its path, size, mtime, ctime and inode, and a later load only
    stats the files. Size and mtime alone would not be safe: copies that keep timestamps (cp -p, rsync -a, tar)
    or reset them can give two different checkpoints the same pair, and a fine-tune keeps the size. ctime cannot
    be set from user space and changes with every write, so a remembered hash never outlives its bytes.
    """
    src = Path(src)
    try:
        known = _read_json(memo) if memo is not None else {}
    except ValueError:  # an unreadable memo only costs the hashing again
        known = {}
    digest = hashlib.sha256(json.dumps({"version": VERSION, "roles": detect_roles(src)[0]}).encode())
    files = sorted(p for p in src.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(src).parts))
    for path in files:
        digest.update(str(path.relative_to(src)).encode() + b"\0" + _file_sha256(path, known).encode())
    if memo is not None:
        _write_memo(memo, known)
    return f"{src.resolve().name}-{digest.hexdigest()[:16]}"


def _file_sha256(path: Path, known: dict) -> str:
    """sha256 of a file's bytes, from `known` ({resolved path: {stat, sha256}}) while its stat is unchanged."""
    st = path.stat()  # a hub snapshot's symlink: the blob's own stat
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
    where = str(path.resolve())
    if known.get(where, {}).get("stat") != stamp:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        known[where] = {"stat": stamp, "sha256": digest.hexdigest()}
    return known[where]["sha256"]


def _write_memo(memo: Path, known: dict) -> None:
    """Replace the memo atomically (ranks may write it together). It only saves time: a cache we cannot write
    is left alone, and the conversion that needs it will fail with its own error."""
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, memo)
    except OSError:
        pass


# -------------------------------------------------------------------- the conversion
def convert_original_janus(src, dst, roles: tuple[str, str] | None = None) -> Path:
    """Convert the original-format Janus folder `src` into a transformers-format folder `dst`; returns dst."""
    from transformers import JanusForConditionalGeneration

    src, dst = Path(src), Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ValueError(f"{dst} exists and is not empty: refusing to overwrite it")
    if not is_original_janus(src):
        raise ValueError(f"{src} is not an original-format Janus folder (config.json of model_type 'multi_modality')")
    original = _read_json(src / "config.json")

    tokenizer = build_tokenizer(src)
    ids = {name: tokenizer.convert_tokens_to_ids(t) for name, t in
           dict(bos=tokenizer.bos_token, eos=tokenizer.eos_token, pad=PAD, image=IMAGE, boi=BOI).items()}
    weights = load_original_weights(src)
    config = build_config(original, weights, ids)
    roles, why = detect_roles(src, roles)
    processor = build_processor(src, tokenizer, config.vision_config, roles)

    # Build on the meta device (no memory, no init), then adopt the loaded tensors as the parameters.
    with torch.device("meta"):
        model = JanusForConditionalGeneration(config)
    expected = {name: t.shape for name, t in model.state_dict().items()}
    model.load_state_dict(rename_weights(weights, expected), strict=True, assign=True)
    model.config.dtype = model.lm_head.weight.dtype  # the source dtype (bf16 for DeepSeek's uploads); no casting
    model.generation_config = build_generation_config(ids)

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if dst.exists():
            dst.rmdir()  # empty, checked above
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"converted {src} -> {dst}: {len(expected)} tensors ({len(weights)} in the source), dtype "
          f"{model.config.dtype}, text {config.text_config.num_hidden_layers}x{config.text_config.hidden_size}, "
          f"chat roles {roles[0]!r}/{roles[1]!r} ({why})")
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="folder of an original-format Janus checkpoint (deepseek-ai/Janus-*)")
    parser.add_argument("dst", help="new folder for the transformers-format checkpoint (must not exist, or be empty)")
    parser.add_argument("--roles", nargs=2, metavar=("USER", "ASSISTANT"), default=None,
                        help="chat role strings; default: detected (Janus-1.3B: User Assistant, else <|User|> <|Assistant|>)")
    args = parser.parse_args()
    convert_original_janus(args.src, args.dst, roles=args.roles)


if __name__ == "__main__":
    main()
