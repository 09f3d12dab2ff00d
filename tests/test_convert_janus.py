"""models/convert_janus.py: original-format Janus (DeepSeek's remote-code layout) -> transformers format.

No hub here, so the test makes its own original-format checkpoints: a tiny random transformers Janus is
written back in DeepSeek's layout (original names, fused qkv, (1, N, D) pos_embed, DeepSeek's config.json
and tokenizer files), once as Janus-1.3B ships (model.safetensors) and once as Janus-Pro-7B ships (.bin shards
plus an index). The original names are checked against an independent enumeration of DeepSeek's module tree,
then the folder is converted and reloaded with from_pretrained.

Run: python -m pytest -q tests/test_convert_janus.py
"""

import json
import os
import re

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (JanusConfig, JanusForConditionalGeneration, JanusProcessor, JanusVisionConfig,
                          JanusVQVAEConfig, LlamaConfig, LlamaForCausalLM)

from conftest import run_group
from models.convert_janus import convert_original_janus, detect_roles, is_original_janus

BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
PAD = "<\uff5c\u2581pad\u2581\uff5c>"
IMAGE, BOI, EOI = "<image_placeholder>", "<begin_of_image>", "<end_of_image>"
IMAGE_SIZE, VIT_LAYERS, CH_MULT, RES_BLOCKS, BASE = 128, 2, [1, 1, 2, 2, 2], 1, 32
# What the real checkpoints hold besides the model's weights; the converter must drop them.
EXTRAS = {"vision_model.vision_tower.attn_pool.latent": (1, 1, 64),
          "vision_model.vision_tower.attn_pool.q.weight": (64, 64),
          "gen_vision_model.quantize.codebook_used": (65536,)}


# -------------------------------------------------------------------- a tiny Janus, written in DeepSeek's layout
def build_raw_tokenizer(bos_post_processor: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[BOS, EOS, PAD, IMAGE, BOI, EOI],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["a red cube on a table", "User: hi\n\nAssistant: ok", "What color is it?"] * 3, trainer)
    if bos_post_processor:  # as DeepSeek's tokenizer.json does; without it the converter must add it
        tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return tok


def build_tiny_janus(tok: Tokenizer) -> JanusForConditionalGeneration:
    ids = {name: tok.token_to_id(t) for name, t in dict(bos=BOS, eos=EOS, pad=PAD, image=IMAGE).items()}
    text = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                       bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"], tie_word_embeddings=False)
    vision = JanusVisionConfig(hidden_size=64, num_hidden_layers=VIT_LAYERS, num_attention_heads=16,  # SigLIP-L's heads
                               mlp_ratio=2.0, image_size=IMAGE_SIZE, patch_size=16, projection_dim=64, depth=2,
                               num_image_tokens=(IMAGE_SIZE // 16) ** 2)
    vq = JanusVQVAEConfig(embed_dim=8, num_embeddings=512, latent_channels=32, base_channels=BASE,
                          channel_multiplier=CH_MULT, num_res_blocks=RES_BLOCKS, projection_dim=64,
                          image_token_embed_dim=64, num_hidden_layers=2)
    config = JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=ids["image"],
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    return JanusForConditionalGeneration(config).eval()


# The reverse of transformers' own Janus key mapping (original -> transformers, as its conversion script renames
# the keys): one substitution per row, applied in order.
TO_ORIGINAL = [
    (r"^model\.language_model\.", "language_model.model."),
    (r"^lm_head\.", "language_model.lm_head."),
    (r"^model\.vision_model\.embeddings\.patch_embedding\.", "vision_model.vision_tower.patch_embed.proj."),
    (r"^model\.vision_model\.embeddings\.position_embedding\.weight$", "vision_model.vision_tower.pos_embed"),
    (r"^model\.vision_model\.post_layernorm\.", "vision_model.vision_tower.norm."),
    (r"^model\.vision_model\.encoder\.layers\.", "vision_model.vision_tower.blocks."),
    (r"\.self_attn\.projection_layer\.", ".attn.proj."),
    (r"\.self_attn\.qkv\.", ".attn.qkv."),
    (r"\.layer_norm([12])\.", r".norm\1."),
    (r"^model\.aligner\.fc1\.", "aligner.layers.0."),
    (r"^model\.aligner\.hidden_layers\.0\.", "aligner.layers.2."),
    (r"^model\.generation_aligner\.fc1\.", "gen_aligner.layers.0."),
    (r"^model\.generation_aligner\.hidden_layers\.0\.", "gen_aligner.layers.2."),
    (r"^model\.generation_head\.proj_out\.", "gen_head.output_mlp_projector."),
    (r"^model\.generation_head\.vision_head\.", "gen_head.vision_head."),
    (r"^model\.generation_embeddings\.", "gen_embed."),
    (r"^model\.vqmodel\.", "gen_vision_model."),
    (r"\.(down|up)\.(\d+)\.block\.", r".conv_blocks.\2.res."),
    (r"\.(down|up)\.(\d+)\.", r".conv_blocks.\2."),
    (r"\.mid\.block_1\.", ".mid.0."), (r"\.mid\.attn_1\.", ".mid.1."), (r"\.mid\.block_2\.", ".mid.2."),
]


def original_state_dict(model) -> dict:
    """The tiny model's weights under DeepSeek's names: q/k/v fused into timm's qkv, pos_embed as (1, N, D)."""
    sd, out = model.state_dict(), {}
    for name, tensor in sd.items():
        vit_layer = name.startswith("model.vision_model.encoder.layers.")
        if vit_layer and re.search(r"self_attn\.[kv]_proj\.", name):
            continue
        if vit_layer and ".self_attn.q_proj." in name:
            tensor = torch.cat([sd[name], sd[name.replace("q_proj", "k_proj")], sd[name.replace("q_proj", "v_proj")]])
            name = name.replace("q_proj", "qkv")
        if name.endswith("position_embedding.weight"):
            tensor = tensor.unsqueeze(0)
        for pattern, repl in TO_ORIGINAL:
            name = re.sub(pattern, repl, name)
        out[name] = tensor.clone().contiguous()
    out.update({name: torch.randn(shape) for name, shape in EXTRAS.items()})
    return out


def deepseek_names(text_config) -> set:
    """Original weight names enumerated from DeepSeek's module tree, independently of any mapping table.

    Sources: deepseek-ai/Janus janus/models/modeling_vlm.py (language_model = LlamaForCausalLM, gen_head =
    VisionHead(output_mlp_projector, vision_head), gen_embed, MlpProjector `layers`), vq_model.py (Encoder /
    Decoder conv_blocks[i].res / .attn / .downsample / .upsample, mid = [Resnet, Attn, Resnet], quantize,
    quant_conv, post_quant_conv) and the timm ViT names that Sophgo's Janus reader loads from the real
    checkpoints (vision_tower.pos_embed, patch_embed.proj, blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
    mlp.fc2}, norm).
    """
    def wb(*prefixes):
        return {f"{p}.{s}" for p in prefixes for s in ("weight", "bias")}

    def resnet(p, c_in, c_out):
        return wb(*(f"{p}.{m}" for m in ("norm1", "conv1", "norm2", "conv2"))) | (wb(f"{p}.nin_shortcut") if c_in != c_out else set())

    def attn(p):
        return wb(*(f"{p}.{m}" for m in ("norm", "q", "k", "v", "proj_out")))

    with torch.device("meta"):
        names = {"language_model." + k for k in LlamaForCausalLM(text_config).state_dict()}
    vit = "vision_model.vision_tower"
    names |= {f"{vit}.pos_embed"} | wb(f"{vit}.patch_embed.proj", f"{vit}.norm")
    for i in range(VIT_LAYERS):
        names |= wb(*(f"{vit}.blocks.{i}.{m}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")))
    names |= wb("aligner.layers.0", "aligner.layers.2", "gen_aligner.layers.0", "gen_aligner.layers.2")
    names |= wb("gen_head.output_mlp_projector", "gen_head.vision_head") | {"gen_embed.weight"}
    vq, levels = "gen_vision_model", len(CH_MULT)
    names |= {f"{vq}.quantize.embedding.weight"} | wb(f"{vq}.quant_conv", f"{vq}.post_quant_conv")
    for side in ("encoder", "decoder"):
        c = BASE * CH_MULT[-1]
        names |= wb(f"{vq}.{side}.conv_in", f"{vq}.{side}.norm_out", f"{vq}.{side}.conv_out")
        names |= resnet(f"{vq}.{side}.mid.0", c, c) | attn(f"{vq}.{side}.mid.1") | resnet(f"{vq}.{side}.mid.2", c, c)
    c = BASE
    for i in range(levels):  # encoder: levels in order, downsample after all but the last
        for j in range(RES_BLOCKS):
            names |= resnet(f"{vq}.encoder.conv_blocks.{i}.res.{j}", c, BASE * CH_MULT[i])
            c = BASE * CH_MULT[i]
            names |= attn(f"{vq}.encoder.conv_blocks.{i}.attn.{j}") if i == levels - 1 else set()
        names |= wb(f"{vq}.encoder.conv_blocks.{i}.downsample.conv") if i != levels - 1 else set()
    for k, i in enumerate(reversed(range(levels))):  # decoder: levels reversed, one extra res block, upsample
        for j in range(RES_BLOCKS + 1):
            names |= resnet(f"{vq}.decoder.conv_blocks.{k}.res.{j}", c, BASE * CH_MULT[i])
            c = BASE * CH_MULT[i]
            names |= attn(f"{vq}.decoder.conv_blocks.{k}.attn.{j}") if i == levels - 1 else set()
        names |= wb(f"{vq}.decoder.conv_blocks.{k}.upsample.conv") if i != 0 else set()
    return names


def write_original(folder, model, tok: Tokenizer, layout: str, weights: dict | None = None) -> None:
    """An original-format folder as deepseek-ai ships it: layout "safetensors" (Janus-1.3B) or "sharded-bin" (Pro-7B)."""
    folder.mkdir(parents=True)
    text, vision, vq = model.config.text_config, model.config.vision_config, model.config.vq_config
    config = {
        "architectures": ["MultiModalityCausalLM"], "model_type": "multi_modality", "torch_dtype": "float32",
        "language_config": {"hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
                            "max_position_embeddings": text.max_position_embeddings, "model_type": "llama",
                            "num_attention_heads": text.num_attention_heads, "num_hidden_layers": text.num_hidden_layers,
                            "num_key_value_heads": text.num_key_value_heads, "torch_dtype": "bfloat16",
                            "vocab_size": text.vocab_size},
        "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision",
                          "params": {"image_size": vision.image_size, "model_name": "siglip_large_patch16_384",
                                     "select_feature": "same", "select_layer": -1}},
        "aligner_config": {"cls": "MlpProjector", "model_type": "aligner",
                           "params": {"depth": 2, "input_dim": vision.hidden_size, "n_embed": text.hidden_size,
                                      "projector_type": "mlp_gelu"}},
        "gen_vision_config": {"cls": "VQ-16", "model_type": "gen_vision",
                              "params": {"image_token_size": vq.num_embeddings, "n_embed": vq.embed_dim}},
        "gen_aligner_config": {"cls": "MlpProjector", "model_type": "gen_aligner",
                               "params": {"depth": 2, "input_dim": vq.embed_dim, "n_embed": text.hidden_size,
                                          "projector_type": "mlp_gelu"}},
        "gen_head_config": {"cls": "vision_head", "model_type": "gen_head",
                            "params": {"image_token_embed": text.hidden_size, "image_token_size": vq.num_embeddings,
                                       "n_embed": text.hidden_size}},
    }
    files = {
        "config.json": config,
        "tokenizer_config.json": {"add_bos_token": True, "add_eos_token": False, "legacy": True, "pad_token": None,
                                  "bos_token": {"__type": "AddedToken", "content": BOS, "lstrip": False,
                                                "normalized": True, "rstrip": False, "single_word": False},
                                  "eos_token": {"__type": "AddedToken", "content": EOS, "lstrip": False,
                                                "normalized": True, "rstrip": False, "single_word": False},
                                  "model_max_length": 16384, "tokenizer_class": "LlamaTokenizer"},
        "special_tokens_map.json": {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
                                    "additional_special_tokens": [IMAGE]},
        "preprocessor_config.json": {"background_color": [127, 127, 127], "do_normalize": True,
                                     "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                                     "image_processor_type": "VLMImageProcessor", "image_size": vision.image_size,
                                     "min_size": 14, "processor_class": "VLChatProcessor",
                                     "rescale_factor": 0.00392156862745098},
        "processor_config.json": {"add_special_token": False, "ignore_id": -100, "image_tag": IMAGE,
                                  "mask_prompt": True, "num_image_tokens": vision.num_image_tokens,
                                  "processor_class": "VLChatProcessor", "sft_format": "deepseek"},
    }
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content, indent=2, ensure_ascii=False))
    tok.save(str(folder / "tokenizer.json"))
    weights = original_state_dict(model) if weights is None else weights
    if layout == "safetensors":
        save_file(weights, str(folder / "model.safetensors"))
    else:
        keys = sorted(weights)
        shards = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
                  "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2:]}
        for shard, shard_keys in shards.items():
            torch.save({k: weights[k] for k in shard_keys}, folder / shard)
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in weights.values())},
                 "weight_map": {k: shard for shard, shard_keys in shards.items() for k in shard_keys}}
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))


# -------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The tiny model and two original-format copies of it: `Janus-1.3B` (safetensors), `Janus-Pro-7B` (sharded .bin)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("original")
    tok_13b, tok_pro = build_raw_tokenizer(bos_post_processor=True), build_raw_tokenizer(bos_post_processor=False)
    model = build_tiny_janus(tok_13b)
    write_original(root / "Janus-1.3B", model, tok_13b, "safetensors")
    write_original(root / "Janus-Pro-7B", model, tok_pro, "sharded-bin")
    return {"model": model, "tok": tok_13b, "janus13b": root / "Janus-1.3B", "pro7b": root / "Janus-Pro-7B"}


def user(text, image=False):
    return {"role": "user", "content": ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]}


# -------------------------------------------------------------------- tests
def test_original_names_are_deepseeks(source):
    """The test's original folders hold exactly DeepSeek's weight names (plus what the converter must drop)."""
    from safetensors import safe_open

    with safe_open(str(source["janus13b"] / "model.safetensors"), "pt") as f:
        written = set(f.keys())
    assert written == deepseek_names(source["model"].config.text_config) | EXTRAS.keys()
    assert is_original_janus(source["janus13b"]) and is_original_janus(source["pro7b"])


@pytest.mark.parametrize("flavour", ["janus13b", "pro7b"])
def test_convert_and_reload(source, tmp_path, flavour):
    src_model = source["model"]
    dst = tmp_path / "converted"
    dst.mkdir()  # an existing empty folder is fine
    assert convert_original_janus(source[flavour], dst) == dst
    assert not is_original_janus(dst)
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]  # no temporary folder left behind
    model = JanusForConditionalGeneration.from_pretrained(dst, dtype=torch.float32).eval()
    processor = JanusProcessor.from_pretrained(dst)

    # weights: equal tensor by tensor, lm_head its own tensor
    expected, got = src_model.state_dict(), model.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert not model.config.tie_word_embeddings and not model.config.text_config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert not torch.equal(model.lm_head.weight, model.get_input_embeddings().weight)

    # configs: every size the same (a wrong head count or eps would not show in the weights)
    for part in ("text_config", "vision_config", "vq_config"):
        a, b = getattr(src_model.config, part).to_dict(), getattr(model.config, part).to_dict()
        skip = {"dtype", "transformers_version", "_name_or_path", "architectures", "torch_dtype"}
        assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}, part
    assert model.config.image_token_id == source["tok"].token_to_id(IMAGE)

    # the same function: understanding logits on an image + question, and the VQ decoder
    prompt = processor.apply_chat_template([user("What color is it?", image=True)], add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (200, 30, 30))],
                       generation_mode="text", return_tensors="pt")
    codes = torch.randint(0, 512, (1, (IMAGE_SIZE // 16) ** 2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, src_model(**inputs).logits)
        torch.testing.assert_close(model.decode_image_tokens(codes), src_model.decode_image_tokens(codes))

    # generation config: the original sampler, BOI where generate() reads it
    tok = source["tok"]
    gc = model.generation_config
    assert gc.generation_kwargs["boi_token_id"] == tok.token_to_id(BOI)
    assert (gc.bos_token_id, gc.eos_token_id, gc.pad_token_id) == tuple(tok.token_to_id(t) for t in (BOS, EOS, PAD))
    assert (gc.guidance_scale, gc.temperature, gc.do_sample, gc.top_k) == (5.0, 1.0, True, 0)

    # processor: image tokens, left padding, BOS prepended (added by the converter for the .bin folder's tokenizer)
    tokenizer = processor.tokenizer
    assert (tokenizer.image_token, tokenizer.boi_token, tokenizer.eoi_token) == (IMAGE, BOI, EOI)
    assert tokenizer.padding_side == "left" and processor.use_default_system_prompt
    assert list(processor.image_processor.image_mean) == [0.5, 0.5, 0.5] and processor.num_image_tokens == 64
    gen = processor(text=[processor.apply_chat_template([user("a red cube")], add_generation_prompt=True)],
                    generation_mode="image", return_tensors="pt")["input_ids"][0].tolist()
    assert gen[0] == tok.token_to_id(BOS) and gen[-1] == tok.token_to_id(BOI)

    # chat template: Janus-1.3B's plain roles for the 1.3B folder, Janus-Pro's for the Pro folder
    u, a = ("User", "Assistant") if flavour == "janus13b" else ("<|User|>", "<|Assistant|>")
    chat = processor.apply_chat_template
    assert chat([user("a red cube")], add_generation_prompt=True) == f"{u}: a red cube\n\n{a}:"
    assert chat([user("What color?  ", image=True)], add_generation_prompt=True) == f"{u}: {IMAGE}\nWhat color?\n\n{a}:"
    sft = [user("What color?", image=True), {"role": "assistant", "content": [{"type": "text", "text": "Red."}]}]
    assert chat(sft) == f"{u}: {IMAGE}\nWhat color?\n\n{a}: Red.{EOS}"


def test_role_detection_rule(tmp_path):
    old = ("User", "Assistant")
    for folder, roles in [("models--deepseek-ai--Janus-1.3B/snapshots/56c70f4", old), ("janus_1.3b-sft", old),
                          ("Janus-Pro-1B", ("<|User|>", "<|Assistant|>")), ("renamed", old)]:
        (tmp_path / folder).mkdir(parents=True)
        if folder == "renamed":  # the later name of the 1.3B conversation template
            (tmp_path / folder / "processor_config.json").write_text(json.dumps({"sft_format": "deepseek_old"}))
        assert detect_roles(tmp_path / folder)[0] == roles, folder
    assert detect_roles(tmp_path / "Janus-Pro-1B", roles=old)[0] == old


def test_explicit_roles_win(source, tmp_path):
    convert_original_janus(source["pro7b"], tmp_path / "out", roles=("User", "Assistant"))
    processor = JanusProcessor.from_pretrained(tmp_path / "out")
    assert processor.apply_chat_template([user("hi")], add_generation_prompt=True) == "User: hi\n\nAssistant:"


def test_unknown_and_missing_keys_are_errors(source, tmp_path):
    weights = original_state_dict(source["model"])
    extra = dict(weights, **{"vision_model.vision_tower.blocks.0.attn.q_norm.weight": torch.ones(64)})
    write_original(tmp_path / "extra", source["model"], source["tok"], "safetensors", weights=extra)
    with pytest.raises(ValueError, match=r"unknown original weight 'vision_model\.vision_tower\.blocks\.0\.attn\.q_norm"):
        convert_original_janus(tmp_path / "extra", tmp_path / "out")
    missing = {k: v for k, v in weights.items() if k != "gen_embed.weight"}
    write_original(tmp_path / "missing", source["model"], source["tok"], "safetensors", weights=missing)
    with pytest.raises(ValueError, match=r"missing: no original weight becomes 'model\.generation_embeddings\.weight'"):
        convert_original_janus(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_empty_destination_is_refused(source, tmp_path):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        convert_original_janus(source["janus13b"], dst)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]


def test_cache_is_keyed_by_content_not_folder_name(source, tmp_path, monkeypatch):
    """Two different folders both called Janus-1.3B each load their own weights through the converted cache,
    and a folder whose weights change in place is converted again."""
    from models.janus import load_janus

    monkeypatch.setenv("UNIRL_CACHE", str(tmp_path / "cache"))
    first = original_state_dict(source["model"])
    second = dict(first, **{"language_model.lm_head.weight": first["language_model.lm_head.weight"] + 1.0})
    for parent, weights in (("a", first), ("b", second)):
        write_original(tmp_path / parent / "Janus-1.3B", source["model"], source["tok"], "safetensors", weights=weights)

    def head(parent):
        return load_janus("janus-1.3b", str(tmp_path / parent / "Janus-1.3B")).model.lm_head.weight

    assert torch.equal(head("a"), first["language_model.lm_head.weight"])
    assert torch.equal(head("b"), second["language_model.lm_head.weight"])
    assert len([p for p in (tmp_path / "cache" / "converted").iterdir() if p.is_dir()]) == 2
    # new bytes in place, same size, and the old mtime put back (as cp -p or rsync -a would): converted again
    weights_file = tmp_path / "a" / "Janus-1.3B" / "model.safetensors"
    old = weights_file.stat()
    save_file(second, str(weights_file))
    os.utime(weights_file, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert weights_file.stat().st_size == old.st_size
    assert torch.equal(head("a"), second["language_model.lm_head.weight"])


@pytest.mark.parametrize("rank1", ["together", "late"])
def test_torchrun_converts_once_and_every_rank_loads_the_conversion(source, tmp_path, rank1):
    """Under torchrun, rank 0 converts into the cache while rank 1 waits; both load the same weights. (Each rank
    converting on its own raced: transformers writes the weights on rank 0 alone, so rank 1's conversion was a
    folder without them.) late: rank 1 reaches the loader only after rank 0 converted; it once skipped the wait
    that rank 0 was in, and both hung until killed."""
    import sys

    (tmp_path / "cache").mkdir()
    proc = run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                      "tests/cache_fill_worker.py", "janus", str(tmp_path), str(source["janus13b"])]
                     + (["late"] if rank1 == "late" else []), env={**os.environ, "UNIRL_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    assert [r["filled"] for r in ranks] == [1, 0]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    folders = [p for p in (tmp_path / "cache" / "converted").iterdir() if p.is_dir()]
    assert len(folders) == 1 and (folders[0] / "config.json").exists()  # one conversion, no temporary folder left


def test_torchrun_stops_every_rank_when_rank_0_cannot_convert(source, tmp_path):
    """Rank 0's failure reaches rank 1 as an error naming it, instead of leaving rank 1 waiting at a barrier."""
    import shutil
    import sys

    broken = tmp_path / "Janus-1.3B"
    shutil.copytree(source["janus13b"], broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "cache").mkdir()
    proc = run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                      "tests/cache_fill_worker.py", "janus", str(tmp_path), str(broken)],
                     env={**os.environ, "UNIRL_CACHE": str(tmp_path / "cache")})
    assert proc.returncode != 0
    assert "rank 0 failed to fill" in proc.stderr and "[rank1]" in proc.stderr
    assert not list(tmp_path.glob("rank*.json"))
