"""Show-o network, masks, prompts and checkpoints (models/showo.py). Tiny random models, CPU, no hub."""

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root, when run as plain `pytest`
from models.showo import (BLOCKED, Showo, ShowoConfig, config_from_json, encode_texts, load_showo,
                          mmu_attention_mask, mmu_prompt, mmu_question, save_showo, showo_256_config,
                          showo_512_config, showo_tiny_config, t2i_attention_mask, t2i_prompt,
                          tiny_text_tokenizer, uncond_t2i_prompt)

torch.set_num_threads(1)
REFERENCE = Path(__file__).resolve().parent / "data"  # the released checkpoints' parameter names and shapes
TINY = showo_tiny_config()  # pad 257, soi 258, eoi 259, t2i 262, mmu 263, bos/eos 256, codes 267.., mask 331
PAD, SOI, EOI, T2I, MMU, BOS, M = 257, 258, 259, 262, 263, 256, 331


def tiny_model(seed=0) -> Showo:
    torch.manual_seed(seed)
    model = Showo(TINY).eval()
    with torch.no_grad():  # random non-trivial norms and biases, so a dropped/misplaced one shows up
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
    return model


def allowed_from_rows(rows: list) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in r] for r in rows])


# ---------------------------------------------------------------------------------------------- names


def test_real_configs_match_released_parameter_names_and_shapes():
    want = json.loads((REFERENCE / "showo_512_params.json").read_text())
    for config in (showo_512_config(), showo_256_config()):  # the 256 model has the same tensors
        with torch.device("meta"):
            model = Showo(config)
        got = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert got == want
    assert sum(p.numel() for p in model.parameters()) == 1_448_176_770


def test_released_config_json_parses_to_the_presets():
    hub = {"_class_name": "Showo", "_diffusers_version": "0.30.1", "codebook_size": 8192,
           "llm_model_path": "microsoft/phi-1_5", "llm_vocab_size": 50295, "load_from_showo": True,
           "mask_token_id": 58497, "num_vq_tokens": 1024, "vocab_size": 58498, "w_clip_vit": False}
    assert config_from_json(hub) == showo_512_config()
    assert config_from_json({**hub, "num_vq_tokens": 256}) == showo_256_config()
    c = showo_512_config()
    ids = (c.pad_id, c.soi_id, c.eoi_id, c.t2i_id, c.mmu_id, c.image_offset, c.mask_token_id, c.bos_token_id)
    assert ids == (50295, 50296, 50297, 50300, 50301, 50305, 58497, 50256)
    with pytest.raises(NotImplementedError):
        config_from_json({**hub, "w_clip_vit": True})
    with pytest.raises(ValueError):
        config_from_json({**hub, "not_a_field": 1})
    with pytest.raises(ValueError):
        ShowoConfig(vocab_size=58499)


# ---------------------------------------------------------------------------------------------- masks


def test_t2i_mask_with_and_without_left_padding():
    ids = torch.tensor([[PAD, PAD, T2I, BOS, 5, BOS, SOI, M, M, EOI],
                        [T2I, BOS, 5, 6, 7, BOS, SOI, 300, M, EOI]])
    padded = allowed_from_rows([  # pads causal among pads; text after the pads causal and blind to them;
        "1000000000",             # soi / image / eoi rows see every non-pad column
        "1100000000",
        "0010000000",
        "0011000000",
        "0011100000",
        "0011110000",
        "0011111111",
        "0011111111",
        "0011111111",
        "0011111111"])
    unpadded = allowed_from_rows([
        "1000000000",
        "1100000000",
        "1110000000",
        "1111000000",
        "1111100000",
        "1111110000",
        "1111111111",
        "1111111111",
        "1111111111",
        "1111111111"])
    mask = t2i_attention_mask(ids, TINY)
    assert mask.shape == (2, 1, 10, 10) and mask.dtype == torch.float32
    assert torch.equal(mask[0, 0] == 0, padded) and torch.equal(mask[1, 0] == 0, unpadded)
    assert set(mask.unique().tolist()) == {0.0, BLOCKED} and BLOCKED == -9223372036854775808.0


def test_mmu_mask_prefix_bidirectional_text_causal():
    ids = torch.tensor([[MMU, SOI, 300, 301, EOI, BOS, 5, 6],
                        [MMU, SOI, 302, 303, EOI, BOS, 7, PAD]])  # right padding needs no special case
    want = allowed_from_rows([
        "11111000",
        "11111000",
        "11111000",
        "11111000",
        "11111000",
        "11111100",
        "11111110",
        "11111111"])
    mask = mmu_attention_mask(ids, TINY)
    assert mask.shape == (2, 1, 8, 8)
    assert torch.equal(mask[0, 0] == 0, want) and torch.equal(mask[1, 0] == 0, want)
    grown = mmu_attention_mask(torch.cat([ids, ids[:, -1:]], 1), TINY)  # one decoding step later
    assert torch.equal(grown[:, :, :8, :8], mask) and (grown[:, :, :8, 8] == BLOCKED).all()


def test_mmu_mask_can_hide_left_padding():  # an option of ours, not in the original
    ids = torch.tensor([[PAD, PAD, MMU, SOI, 300, EOI, BOS, 5]])
    want = allowed_from_rows([
        "10111100",  # no row sees a pad column but its own; the prefix mmu..eoi stays bidirectional
        "01111100",
        "00111100",
        "00111100",
        "00111100",
        "00111100",
        "00111110",
        "00111111"])
    assert torch.equal(mmu_attention_mask(ids, TINY, hide_pads=True)[0, 0] == 0, want)


# ---------------------------------------------------------------------------------------------- prompts


def test_prompt_layout_of_the_real_model():
    c = showo_512_config()
    text = list(range(100, 110))
    ids = t2i_prompt([text], c)
    assert ids.shape == (1, 128 + 3 + 1024)
    row = ids[0].tolist()
    assert row[:116] == [50295] * 116 and row[116:130] == [50300, 50256] + text + [50256, 50296]
    assert row[130:1154] == [58497] * 1024 and row[1154] == 50297
    assert uncond_t2i_prompt(1, c)[0, :129].tolist() == [50295] * 126 + [50300, 50256, 50256]
    long = t2i_prompt([list(range(200))], c)[0, :129].tolist()  # cut to [t2i, bos, 126 ids, eos]
    assert long == [50300, 50256] + list(range(126)) + [50256]
    short = t2i_prompt([text], c, max_text_len=64)  # UniRL GenEval's value moves the image
    assert short.shape == (1, 64 + 3 + 1024) and short[0, 65] == 50296
    codes = torch.arange(1024)[None] * 8
    assert torch.equal(t2i_prompt([text], c, image_codes=codes)[0, 130:1154], codes[0] + 50305)
    mmu = mmu_prompt(codes, [[7, 8, 9]], c)[0].tolist()
    assert mmu[:2] == [50301, 50296] and mmu[2:1026] == (codes[0] + 50305).tolist()
    assert mmu[1026:] == [50297, 50256, 7, 8, 9]
    assert t2i_prompt([[50256, 100]], c)[0, 125:129].tolist() == [50300, 50256, 100, 50256]  # bos kept once
    ragged = mmu_prompt(codes.repeat(2, 1), [[7, 8, 9], [7]], c)  # right-padded with [PAD]
    assert ragged[:, 1026:].tolist() == [[50297, 50256, 7, 8, 9], [50297, 50256, 7, 50295, 50295]]


def test_tiny_tokenizer_follows_the_layout():
    tok = tiny_text_tokenizer(TINY)
    assert len(tok) == TINY.image_offset and tok.pad_token_id == PAD
    assert tok.convert_tokens_to_ids(["<|soi|>", "<|t2i|>", "<|mmu|>", "<|lvg|>"]) == [SOI, T2I, MMU, 266]
    question = mmu_question("What is this?")
    assert question == "USER: \nWhat is this? ASSISTANT:"
    (ids,) = encode_texts(tok, [question])
    assert len(ids) == len(question.encode()) and max(ids) < BOS and tok.decode(ids) == question
    prompt = t2i_prompt(encode_texts(tok, ["hi", ""]), TINY)
    assert prompt.shape == (2, 16 + 3 + 16)
    assert prompt[0, :17].tolist() == [PAD] * 12 + [T2I, BOS] + encode_texts(tok, ["hi"])[0] + [BOS]
    assert prompt[1, :17].tolist() == [PAD] * 14 + [T2I, BOS, BOS]


# ---------------------------------------------------------------------------------------------- forward


def reference_logits(model: Showo, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Show-o's Phi block written out by hand: parallel attention and MLP, q/k LayerNorm per head before the
    partial RoPE."""
    c, sd = model.config, model.state_dict()
    B, L = ids.shape
    H, D = c.num_attention_heads, c.hidden_size // c.num_attention_heads
    rot = int(D * c.partial_rotary_factor)
    angles = torch.arange(L).float()[:, None] / c.rope_theta ** (torch.arange(0, rot, 2).float() / rot)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def rope(t):  # rotate-half on the first `rot` dims, pairs (j, j + rot/2)
        r, rest = t[..., :rot], t[..., rot:]
        half = torch.cat([-r[..., rot // 2:], r[..., :rot // 2]], -1)
        return torch.cat([r * cos + half * sin, rest], -1)

    def ln(x, name, n):
        return F.layer_norm(x, (n,), sd[name + ".weight"], sd[name + ".bias"], c.layer_norm_eps)

    def lin(x, name):
        return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])

    x = sd["showo.model.embed_tokens.weight"][ids]
    for i in range(c.num_hidden_layers):
        p = f"showo.model.layers.{i}."
        h = ln(x, p + "input_layernorm", c.hidden_size)
        q, k, v = (lin(h, p + f"self_attn.{n}_proj").view(B, L, H, D).transpose(1, 2) for n in "qkv")
        q, k = rope(ln(q, p + "self_attn.q_layernorm", D)), rope(ln(k, p + "self_attn.k_layernorm", D))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + mask, -1) @ v
        attn_out = lin(att.transpose(1, 2).reshape(B, L, -1), p + "self_attn.dense")
        mlp = lin(F.gelu(lin(h, p + "mlp.fc1"), approximate="tanh"), p + "mlp.fc2")
        x = x + attn_out + mlp
    return lin(ln(x, "showo.model.final_layernorm", c.hidden_size), "showo.lm_head")


def test_forward_matches_the_spec_and_all_input_paths_agree():
    model, tok = tiny_model(), tiny_text_tokenizer(TINY)
    torch.manual_seed(1)
    codes = torch.where(torch.rand(2, 16) < 0.5, torch.randint(0, 64, (2, 16)), M)
    ids = t2i_prompt(encode_texts(tok, ["a red cube", ""]), TINY, image_codes=codes)  # cond + uncond rows
    mask = t2i_attention_mask(ids, TINY)
    with torch.no_grad():
        logits = model(ids, mask)
        assert logits.shape == (2, 35, TINY.vocab_size) and logits.dtype == torch.float32
        torch.testing.assert_close(logits, reference_logits(model, ids, mask), atol=1e-5, rtol=1e-5)
        assert torch.equal(model(ids, mask == 0), logits)  # bool masks are converted, not added
        onehot = F.one_hot(ids, TINY.vocab_size).float()
        torch.testing.assert_close(model(inputs_embeds=model.embed_soft(onehot), attention_mask=mask), logits,
                                   atol=1e-6, rtol=1e-6)
        image = model.image_logits(logits)
        assert image.shape == (2, 16, 64) and torch.equal(image, logits[:, 18:34, 267:331])
        mmu = mmu_prompt(codes.clamp(max=63), encode_texts(tok, [mmu_question("what?")] * 2), TINY)
        causal = torch.full((mmu.shape[1],) * 2, BLOCKED).triu(1)
        torch.testing.assert_close(model(mmu), model(mmu, causal.expand(2, 1, -1, -1)))  # None = causal


def test_embed_soft_carries_gradients():
    model = tiny_model()
    weights = torch.softmax(torch.randn(1, 6, TINY.vocab_size), -1).requires_grad_()
    model(inputs_embeds=model.embed_soft(weights)).sum().backward()
    assert weights.grad is not None and weights.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- checkpoints


def test_hand_written_hub_checkpoint_loads(tmp_path):
    model = tiny_model(seed=3)
    folder = tmp_path / "show-o-tiny"
    folder.mkdir()
    released_keys = {"_class_name": "Showo", "_diffusers_version": "0.30.1", "llm_model_path": "microsoft/phi-1_5",
                     "load_from_showo": True, "w_clip_vit": False}
    (folder / "config.json").write_text(json.dumps({**released_keys, **TINY.__dict__}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "pytorch_model.safetensors")
    loaded = load_showo(str(folder))
    assert all(k.startswith("showo.") for k in loaded.state_dict())
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    ids = uncond_t2i_prompt(1, TINY)
    with torch.no_grad():
        assert torch.equal(loaded(ids, t2i_attention_mask(ids, TINY)), model(ids, t2i_attention_mask(ids, TINY)))
    half = load_showo(str(folder), dtype=torch.bfloat16)
    assert half.embed_tokens.weight.dtype == torch.bfloat16
    assert half.showo.model.rotary_emb.inv_freq.dtype == torch.float32  # RoPE tables stay fp32
    assert half(ids, t2i_attention_mask(ids, TINY)).dtype == torch.float32


def test_save_then_load_is_exact(tmp_path):
    model = tiny_model(seed=4)
    save_showo(model, tmp_path / "ckpt")
    save_showo(model, tmp_path / "ckpt")  # overwriting an existing checkpoint also works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "pytorch_model.safetensors"]
    loaded = load_showo(str(tmp_path / "ckpt"))
    assert loaded.config == model.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def released_layout(folder: Path, model: Showo, llm_model_path: str, llm_config: dict | None = None) -> Path:
    """A hub-layout folder as released: config.json names its LLM but not the LLM's sizes or a text block length;
    llm_config, if given, is written as that LLM's config.json (llm_model_path relative to the folder)."""
    c = model.config
    folder.mkdir()
    meta = {"_class_name": "Showo", "_diffusers_version": "0.30.1", "llm_model_path": llm_model_path,
            "load_from_showo": True, "w_clip_vit": False, "codebook_size": c.codebook_size,
            "llm_vocab_size": c.llm_vocab_size, "mask_token_id": c.mask_token_id, "num_vq_tokens": c.num_vq_tokens,
            "vocab_size": c.vocab_size, "bos_token_id": c.bos_token_id}
    (folder / "config.json").write_text(json.dumps(meta))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "pytorch_model.safetensors")
    if llm_config is not None:
        (folder / llm_model_path).mkdir()
        (folder / llm_model_path / "config.json").write_text(json.dumps(llm_config))
    return folder


def test_released_layout_takes_the_llm_sizes_from_the_llm_it_names(tmp_path):
    config = dataclasses.replace(TINY, intermediate_size=96, rope_theta=500.0, partial_rotary_factor=0.25,
                                 layer_norm_eps=1e-6, max_text_len=ShowoConfig.max_text_len)
    torch.manual_seed(5)
    model = Showo(config).eval()
    # phi-1_5's own config.json format, at toy sizes (rope settings flat, no GQA, untied, no dropout)
    phi = {"model_type": "phi", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": None, "intermediate_size": 96, "hidden_act": "gelu_new", "layer_norm_eps": 1e-6,
           "max_position_embeddings": 128, "partial_rotary_factor": 0.25, "rope_theta": 500.0, "rope_scaling": None,
           "qk_layernorm": False, "tie_word_embeddings": False, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
           "attention_dropout": 0.0, "vocab_size": 51200}
    loaded = load_showo(str(released_layout(tmp_path / "a", model, "phi-tiny", phi)))
    assert loaded.config == config
    ids = uncond_t2i_prompt(1, config)
    with torch.no_grad():  # the rope settings are honoured too (no tensor shows them)
        assert torch.equal(loaded(ids, t2i_attention_mask(ids, config)), model(ids, t2i_attention_mask(ids, config)))
    # transformers 5's format (rope settings in rope_parameters), the LLM folder given by its full path
    llm = tmp_path / "phi-tiny-v5"
    config.phi_config().save_pretrained(llm)
    released_layout(tmp_path / "b", model, str(llm))
    assert load_showo(str(tmp_path / "b")).config == config


def test_loader_refuses_what_it_cannot_honour(tmp_path):
    model = tiny_model()
    phi = dataclasses.asdict(TINY)
    with pytest.raises(ValueError, match="grouped-query attention"):
        load_showo(str(released_layout(tmp_path / "gqa", model, "phi", {**phi, "num_key_value_heads": 2})))
    with pytest.raises(ValueError, match="RoPE scaling"):
        load_showo(str(released_layout(tmp_path / "rope", model, "phi", {**phi, "rope_scaling": {"factor": 2.0}})))
    with pytest.raises(ValueError, match="names the LLM 'nowhere/phi'.*could not be read"):
        load_showo(str(released_layout(tmp_path / "gone", model, "nowhere/phi")))  # offline: no hub either
    with pytest.raises(ValueError, match="do not have the sizes its config.json describes"):  # tiny weights
        load_showo(str(released_layout(tmp_path / "phi15", model, "microsoft/phi-1_5")))  # named: phi-1_5's sizes
    with pytest.raises(ValueError, match="names no LLM"):
        config_from_json({"codebook_size": 64, "llm_vocab_size": 257, "vocab_size": 332, "mask_token_id": 331})


def test_loader_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_showo(str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text(json.dumps(TINY.__dict__))
    with pytest.raises(FileNotFoundError, match="pytorch_model.safetensors"):
        load_showo(str(tmp_path))
    state = {k.removeprefix("showo."): v.contiguous() for k, v in tiny_model().state_dict().items()}
    save_file(state, tmp_path / "pytorch_model.safetensors")  # keys without the showo. prefix
    with pytest.raises(KeyError, match="missing"):
        load_showo(str(tmp_path))
