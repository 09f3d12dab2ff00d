"""Show-o: the Phi-1.5 language model that reads and writes MAGVIT-v2 image tokens.

Show-o (showlab/Show-o) is one transformer for both directions of UniRL's loop:
  * t2i: [<|t2i|>, text, <|soi|>, N image tokens, <|eoi|>]; image tokens start as [MASK] and are
    filled in by MaskGIT-style parallel decoding (the sampler is generate.py's `sample_images_masked`,
    reached through models/showo_policy.py; `Showo.image_logits` records the original's slice and quirks);
  * mmu: [<|mmu|>, <|soi|>, N image tokens, <|eoi|>, <|sot|>, question...] and ordinary next-token
    text generation.
Both share the "omni-attention" masks built below: text is causal, the image block is bidirectional.

The network is transformers' own `PhiForCausalLM`, kept under the attribute `showo` so that the
state dict keys are exactly the released ones (`showo.model.layers.0.self_attn.q_layernorm.weight`, ...).
Transformers >= 4.48.1 implements Show-o's only change to Phi (a per-head LayerNorm on q and k,
applied after the head split and before RoPE) and passes a custom 4-D mask through unchanged, so it
reproduces the original patched copy exactly (a random tiny model gives identical logits under SDPA;
4.48.0 drops lm_head's bias and <= 4.47 normalises q and k before the head split). Show-o's other
changes, all applied here: vocabulary 58,498, untied lm_head WITH bias, positions = arange(L) even over
left padding, logits returned in float32, and the caller's 4-D mask used as-is.

What is simplified on purpose: no CLIP-ViT variant (`show-o-w-clip-vit`), no training losses, no
sampler. Usage:
    model = load_showo("showlab/show-o-512x512")              # or a local folder in that layout
    tok = load_text_tokenizer("microsoft/phi-1_5", model.config)
    ids = t2i_prompt(encode_texts(tok, ["a red cube"]), model.config)  # (1, 128 + 3 + 1024)
    logits = model(ids, t2i_attention_mask(ids, model.config))         # (1, 1155, 58498) float32
    image_logits = model.image_logits(logits)                           # (1, 1024, 8192)
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from transformers import PhiConfig, PhiForCausalLM
from transformers.models.phi.modeling_phi import PhiRotaryEmbedding

WEIGHTS_NAME = "pytorch_model.safetensors"  # Show-o's diffusers-style name, not model.safetensors
SPECIAL_TOKENS = ("<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>", "<|lvg|>")
# The original adds the float version of int64 min, not -inf, for blocked positions.
BLOCKED = float(torch.iinfo(torch.int64).min)  # -9.2234e18


@dataclass
class ShowoConfig:
    # Phi-1.5 backbone (microsoft/phi-1_5 config.json; the Show-o config.json does not repeat these)
    hidden_size: int = 2048
    num_hidden_layers: int = 24
    num_attention_heads: int = 32  # head_dim 64; q/k LayerNorms are LayerNorm(head_dim)
    intermediate_size: int = 8192
    partial_rotary_factor: float = 0.5  # RoPE on the first half of each head (32 of 64 dims)
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-5
    max_position_embeddings: int = 2048
    hidden_act: str = "gelu_new"  # tanh-approximated GELU
    # vocabulary layout: [text 0..llm_vocab_size) [PAD] 9 specials [image codes] [MASK]
    llm_vocab_size: int = 50295  # len(phi-1_5 tokenizer), incl. its 38 added whitespace tokens
    num_new_special_tokens: int = 10  # [PAD] + SPECIAL_TOKENS (from the YAML, not config.json)
    codebook_size: int = 8192  # MAGVIT-v2 codes, ids image_offset + code
    vocab_size: int = 58498  # = llm_vocab_size + 10 + codebook_size + 1
    mask_token_id: int = 58497  # image [MASK] = vocab_size - 1
    bos_token_id: int = 50256  # <|endoftext|>: serves as bos, eos, <|sot|> and <|eot|>
    # sequence layout
    num_vq_tokens: int = 1024  # image tokens per image: 1024 at 512 px, 256 at 256 px
    max_text_len: int = 128  # dataset.preprocessing.max_seq_length: 128 in Show-o demos, 64 in
    # UniRL's GenEval config. It moves the image's RoPE positions, so it changes outputs: use the reproduced run's.

    def __post_init__(self):
        if self.vocab_size != self.image_offset + self.codebook_size + 1:
            raise ValueError(f"vocab_size {self.vocab_size} != llm_vocab_size + new specials + codebook + 1")
        if self.mask_token_id != self.vocab_size - 1:
            raise ValueError(f"mask_token_id must be vocab_size - 1 = {self.vocab_size - 1}")

    # special ids follow from the layout: [PAD] first, then SPECIAL_TOKENS in order
    @property
    def pad_id(self) -> int:  # 50295
        return self.llm_vocab_size

    @property
    def soi_id(self) -> int:  # 50296
        return self.llm_vocab_size + 1

    @property
    def eoi_id(self) -> int:  # 50297
        return self.llm_vocab_size + 2

    @property
    def t2i_id(self) -> int:  # 50300
        return self.llm_vocab_size + 5

    @property
    def mmu_id(self) -> int:  # 50301
        return self.llm_vocab_size + 6

    @property
    def image_offset(self) -> int:  # 50305 = code 0
        return self.llm_vocab_size + self.num_new_special_tokens

    def phi_config(self) -> PhiConfig:
        return PhiConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_attention_heads, hidden_act=self.hidden_act,
            max_position_embeddings=self.max_position_embeddings, layer_norm_eps=self.layer_norm_eps,
            partial_rotary_factor=self.partial_rotary_factor, rope_theta=self.rope_theta,
            qk_layernorm=True, tie_word_embeddings=False, use_cache=False,  # Show-o forces both
            pad_token_id=None,  # phi-1_5 has none: no nn.Embedding padding_idx (its row still trains)
            attn_implementation="sdpa",  # what the original auto-selected; eager is also exact
        )


def showo_512_config() -> ShowoConfig:
    return ShowoConfig()  # showlab/show-o-512x512


def showo_256_config() -> ShowoConfig:
    return ShowoConfig(num_vq_tokens=256)  # showlab/show-o


def showo_tiny_config() -> ShowoConfig:
    """Same layout rules at toy size: byte-level text (256 bytes + <|endoftext|>), 64 codes, 4x4 image."""
    return ShowoConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                       max_position_embeddings=128, llm_vocab_size=257, codebook_size=64, vocab_size=332,
                       mask_token_id=331, bos_token_id=256, num_vq_tokens=16, max_text_len=16)


class Showo(nn.Module):
    """Phi-1.5 with Show-o's changes. State dict keys carry the released `showo.` prefix (kept, not
    stripped, so a released or UniRL state dict loads with no renaming). To save activation memory in
    training: model.showo.activation_checkpointing_enable()."""

    def __init__(self, config: ShowoConfig):
        super().__init__()
        self.config = config
        self.showo = PhiForCausalLM(config.phi_config())

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.showo.model.embed_tokens

    def embed_soft(self, weights: torch.Tensor) -> torch.Tensor:
        """(B, S, vocab) one-hot or soft rows -> (B, S, hidden) inputs_embeds, differentiable in weights."""
        table = self.embed_tokens.weight
        return weights.to(table.dtype) @ table

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None) -> torch.Tensor:
        """input_ids (B, L) or inputs_embeds (B, L, D); attention_mask (B, 1, L, L) -> logits (B, L, V) fp32.

        attention_mask: additive float (0 / large negative, as built below) or bool (True = attend).
        None means plain causal attention (the original's SDPA path; its eager path would have been
        bidirectional). Positions are always arange(L), left padding included, as in the original: pads
        take positions, so the image's positions depend on max_text_len, not on the prompt's length.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        dtype = self.embed_tokens.weight.dtype
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:  # eager attention ADDS the mask: never pass bools down
                attention_mask = additive_mask(attention_mask, dtype)
            attention_mask = attention_mask.to(dtype)  # SDPA needs mask dtype == query dtype
        out = self.showo(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                         use_cache=False)
        return out.logits.float()  # the original returns float32 logits

    def image_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, L, V) logits of a t2i sequence -> (B, N, codebook_size): the image slice the sampler uses.

        Exactly the original `t2i_generate` slice `logits[:, -(N+1):-1, llm_vocab_size+10:-1]`: the N
        positions between <|soi|> and <|eoi|> (the last N+1..2 of the row) and only the code columns,
        so text ids AND the [MASK] column are excluded before the softmax. Quirks of the original
        sampler that a sampler must copy to draw its tokens (generate.py's `sample_images_masked` does):
          * CFG is logits = (1 + w) * cond - w * uncond (MUSE style, not diffusers' u + w (c - u));
            the uncond row is rebuilt every step as uncond[:, :max_text_len+1] + cond[:, max_text_len+1:]
            (current image tokens) and both run as one batch [cond; uncond] with one mask.
          * probs = softmax(image_logits) with NO temperature; one multinomial per position, then one
            uniform draw [B, N] for Gumbel noise (that order of RNG use).
          * mask_len = floor(N * cos(pi/2 * (s+1)/T)) clamped to [1, unknown - 1] with N the TOTAL
            image length, even when some tokens are given (inpainting).
          * the temperature compounds: tau <- tau * (1 - (s+1)/T) every step (tau_s = tau0 * prod).
          * confidence = log(p_sampled) + tau * Gumbel; known tokens get float max so never re-mask.
          * the last step still re-masks one token, yet returns the sampled value for it: the
            returned codes are the last step's `sampled`, not the sequence's ids.
          * the image's RoPE positions depend on max_text_len (pads count as positions).
        """
        n, start = self.config.num_vq_tokens, self.config.image_offset
        return logits[:, -(n + 1):-1, start:start + self.config.codebook_size]


# ---------------------------------------------------------------------------------------------
# Omni-attention masks. Built as boolean "allowed" [B, 1, L, L], returned in the original's form:
# float32 additive, 0 = attend, float(int64 min) = blocked (the original computes 1.0 - int_mask).


def additive_mask(allowed: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """bool (True = attend) -> additive mask: 0 where allowed, -9.22e18 (-inf in fp16) where blocked."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, BLOCKED)


def t2i_attention_mask(input_ids: torch.Tensor, config: ShowoConfig, dtype=torch.float32) -> torch.Tensor:
    """(B, L) t2i/uncond ids -> (B, 1, L, L) additive mask, as `create_attention_mask_predict_next(
    ..., rm_pad_in_image=True)`: text rows causal; <|soi|>..<|eoi|> rows see every column; then pad
    removal: rows after the LAST pad see no column <= that pad, image rows see no pad column. Pad
    rows stay causal among pads, so no row is ever fully blocked. For CFG build it once for the
    stacked [cond; uncond] rows and reuse it at every step: only image-token values change.
    """
    B, L = input_ids.shape
    is_soi, is_eoi = input_ids == config.soi_id, input_ids == config.eoi_id
    if not bool((is_soi.sum(1) == 1).all()):
        raise ValueError("each t2i row needs exactly one <|soi|>")  # the original indexes soi per row
    in_image = (is_soi.cumsum(1) > is_eoi.cumsum(1)) | is_soi | is_eoi  # (B, L) soi..eoi inclusive
    is_pad = input_ids == config.pad_id
    pos = torch.arange(L, device=input_ids.device)
    causal = pos[None, :, None] >= pos[None, None, :]  # (1, L, L)
    last_pad = torch.where(is_pad, pos, -1).max(1).values[:, None, None]  # (B, 1, 1), -1 if no pad
    text_rows = causal & ~((pos[None, :, None] > last_pad) & (pos[None, None, :] <= last_pad))
    image_rows = (~is_pad)[:, None, :].expand(B, L, L)
    allowed = torch.where(in_image[:, :, None], image_rows, text_rows)  # (B, L, L)
    return additive_mask(allowed[:, None], dtype)


def mmu_attention_mask(input_ids: torch.Tensor, config: ShowoConfig, dtype=torch.float32,
                       hide_pads: bool = False) -> torch.Tensor:
    """(B, L) mmu ids -> (B, 1, L, L) additive mask, as `create_attention_mask_for_mmu`: causal, plus
    columns 0..eoi visible to every row, so [<|mmu|>, <|soi|>, image, <|eoi|>] is bidirectional (even
    <|mmu|> sees the image) and the text after it is causal. The original has no pad handling: right
    padding is harmless (no real token sees a later pad). Rebuilding this mask for a sequence grown by
    one token gives exactly the mask `mmu_generate` grows step by step, so causal KV-cache decoding
    is equivalent. Deviations: eoi is found per row (the original takes the first eoi of the
    flattened batch: the same whenever rows share a layout, as they always do there); hide_pads=True
    (not in the original, for left-padded batches) blocks every pad column except a pad's own.
    """
    B, L = input_ids.shape
    is_eoi = input_ids == config.eoi_id
    if not bool(is_eoi.any(1).all()):
        raise ValueError("each mmu row needs an <|eoi|>")
    eoi = is_eoi.int().argmax(1)[:, None, None]  # (B, 1, 1) first eoi per row
    pos = torch.arange(L, device=input_ids.device)
    allowed = (pos[None, :, None] >= pos[None, None, :]) | (pos[None, None, :] <= eoi)  # (B, L, L)
    if hide_pads:
        own = torch.eye(L, dtype=torch.bool, device=input_ids.device)  # a pad row keeps its diagonal
        allowed = (allowed & (input_ids != config.pad_id)[:, None, :]) | own
    return additive_mask(allowed[:, None], dtype)


# ---------------------------------------------------------------------------------------------
# Prompts (UniversalPrompting). Text ids come from the tokenizer WITHOUT special tokens.


def _image_ids(image_codes, batch: int, config: ShowoConfig, device=None) -> torch.Tensor:
    """(B, N) codes in [0, codebook) or == mask_token_id (still masked) -> vocabulary ids."""
    if image_codes is None:
        return torch.full((batch, config.num_vq_tokens), config.mask_token_id, dtype=torch.long, device=device)
    codes = torch.as_tensor(image_codes, dtype=torch.long, device=device)
    masked = codes == config.mask_token_id
    out_of_range = ((codes < 0) | (codes >= config.codebook_size)) & ~masked
    if codes.shape != (batch, config.num_vq_tokens) or bool(out_of_range.any()):
        raise ValueError(f"image codes must be ({batch}, {config.num_vq_tokens}) in [0, {config.codebook_size})")
    return torch.where(masked, codes, codes + config.image_offset)


def t2i_prompt(text_ids: list, config: ShowoConfig, image_codes=None, max_text_len=None,
               device=None) -> torch.Tensor:
    """B id lists -> (B, max_text_len + 3 + N): [pad.., <|t2i|>, bos, text, eos, <|soi|>, image, <|eoi|>].

    As `t2i_gen_prompt`: bos is prepended unless present (empty text -> [bos]); the task token +
    text + eos is left-padded to max_text_len + 1, or cut to max_text_len and closed with eos.
    image_codes=None starts from all [MASK]. Empty text ([]) gives the unconditional row for CFG.
    """
    max_text_len = config.max_text_len if max_text_len is None else max_text_len
    bos, width = config.bos_token_id, max_text_len + 1  # +1: room for the task token
    rows = []
    for ids in text_ids:
        ids = list(ids)
        if not ids or ids[0] != bos:
            ids = [bos] + ids
        row = [config.t2i_id] + ids + [bos]  # eos is the same <|endoftext|>
        row = [config.pad_id] * (width - len(row)) + row if len(row) <= width else row[:width - 1] + [bos]
        rows.append(row)
    text = torch.tensor(rows, dtype=torch.long, device=device)
    image = _image_ids(image_codes, len(rows), config, device)
    soi, eoi = (torch.full((len(rows), 1), i, dtype=torch.long, device=device) for i in (config.soi_id, config.eoi_id))
    return torch.cat([text, soi, image, eoi], dim=1)


def uncond_t2i_prompt(batch: int, config: ShowoConfig, image_codes=None, max_text_len=None,
                      device=None) -> torch.Tensor:
    """The CFG row: the prompt "" -> [pad.., <|t2i|>, bos, eos, <|soi|>, image, <|eoi|>]."""
    return t2i_prompt([[]] * batch, config, image_codes, max_text_len, device)


def mmu_question(question: str) -> str:
    """The text Show-o's inference_mmu.py tokenizes after <|sot|> (non-CLIP checkpoints)."""
    return "USER: \n" + question + " ASSISTANT:"


def mmu_prompt(image_codes, text_ids: list, config: ShowoConfig, device=None) -> torch.Tensor:
    """(B, N) codes + B id lists -> (B, N + 4 + T): [<|mmu|>, <|soi|>, image, <|eoi|>, <|sot|>, text],
    right-padded with [PAD] to the longest row (the original runs batch 1 at inference; its mmu
    training rows are right-padded the same way). text_ids = ids of mmu_question(q), plus an answer
    if you want its log-probs.
    """
    image = _image_ids(image_codes, len(text_ids), config, device)
    width = max(len(t) for t in text_ids)
    text = [[config.bos_token_id] + list(t) + [config.pad_id] * (width - len(t)) for t in text_ids]
    head = torch.tensor([[config.mmu_id, config.soi_id]] * len(text_ids), dtype=torch.long, device=device)
    text = torch.tensor(text, dtype=torch.long, device=device)
    return torch.cat([head, image, torch.full_like(head[:, :1], config.eoi_id), text], dim=1)


# ---------------------------------------------------------------------------------------------
# Text tokenizer hook: phi-1_5's BPE for the real model, a byte-level stand-in for the tiny preset.


def add_showo_tokens(tokenizer, config: ShowoConfig):
    """Add [PAD] then the 9 specials as Show-o does (that order fixes the ids) and check the layout."""
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    tokenizer.add_tokens(list(SPECIAL_TOKENS))  # plain added tokens, as in the original
    got = tokenizer.convert_tokens_to_ids(["[PAD]", *SPECIAL_TOKENS])
    want = list(range(config.pad_id, config.image_offset))
    if got != want or len(tokenizer) != config.image_offset or tokenizer.bos_token_id != config.bos_token_id:
        raise ValueError(f"tokenizer does not match the Show-o layout: special ids {got}, want {want}")
    if tokenizer("a")["input_ids"][:1] == [config.bos_token_id]:
        raise ValueError("tokenizer adds BOS itself; Show-o's prompts would get it twice: "
                         "use phi-1_5's tokenizer, which adds none")
    return tokenizer


def load_text_tokenizer(path: str, config: ShowoConfig):
    """phi-1_5 tokenizer (local folder or hub id) with Show-o's tokens added."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:  # transformers' way of saying the folder or hub id cannot be read
        raise ValueError(f"could not load the text tokenizer {path!r} ({err}). {SHOWO_OFFLINE}") from err
    return add_showo_tokens(tokenizer, config)


def tiny_text_tokenizer(config: ShowoConfig):
    """GPT-2-style byte-level BPE with no merges and phi-1_5's layout: 256 byte symbols, <|endoftext|> at
    bos_token_id, never-produced fillers up to llm_vocab_size (none for showo-tiny's 257), then Show-o's
    [PAD] and specials. Also stands in for phi-1_5 at the real sizes where the hub is out of reach."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    while len(vocab) < config.llm_vocab_size:
        vocab["<|endoftext|>" if len(vocab) == config.bos_token_id else f"<|filler{len(vocab)}|>"] = len(vocab)
    if vocab.get("<|endoftext|>") != config.bos_token_id:
        raise ValueError(f"the byte-level tokenizer needs bos_token_id in [256, {config.llm_vocab_size})")
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    return add_showo_tokens(tok, config)


def encode_texts(tokenizer, texts: list) -> list:
    """Texts -> id lists with no special tokens added (phi-1_5 adds none anyway)."""
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


# ---------------------------------------------------------------------------------------------
# Checkpoints in the hub layout: config.json + pytorch_model.safetensors with `showo.` keys.

# Keys of the released config.json that carry no architecture information here (llm_model_path is read
# apart: it names the LLM whose sizes the released file does not repeat).
_IGNORED_KEYS = {"_class_name", "_diffusers_version", "_name_or_path", "load_from_showo", "use_mod"}
# ShowoConfig fields that come from the LLM's own config.json (Phi's names, the same in ours).
LLM_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "partial_rotary_factor",
              "rope_theta", "layer_norm_eps", "max_position_embeddings", "hidden_act")
# The LLM every released Show-o names. Its sizes are ShowoConfig's defaults, so it is never fetched.
PHI_1_5 = "microsoft/phi-1_5"

# Without a hub, Show-o loads from one folder: the Show-o checkpoint, with MAGVIT-v2 in a magvitv2/ subfolder
# and phi-1_5's tokenizer files beside config.json (the layout ShowoPolicy.save writes).
SHOWO_OFFLINE = ("pass the Show-o folder with --model-path, with showlab/magvitv2 in its magvitv2/ subfolder and "
                 "microsoft/phi-1_5's tokenizer files (tokenizer_config.json, vocab.json, merges.txt, ...) beside "
                 "its config.json")


def resolve_checkpoint_dir(path_or_hub_id: str, files: list) -> Path:
    """A local folder, or a hub id fetched with huggingface_hub (only if no such local path exists)."""
    path = Path(path_or_hub_id)
    if not path.exists():
        if path_or_hub_id.count("/") != 1 or path_or_hub_id.startswith((".", "/")):
            raise FileNotFoundError(f"no checkpoint folder at {path_or_hub_id}")
        from models.common import fetch_from_hub

        path = fetch_from_hub(path_or_hub_id, files, where=SHOWO_OFFLINE)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder (expected the hub layout: {', '.join(files)})")
    return path


def llm_fields(phi: dict) -> dict:
    """A Phi config.json (microsoft/phi-1_5's format, rope settings flat or in transformers 5's rope_parameters)
    -> the ShowoConfig fields it sets. Refuses what Show-o's Phi cannot honour; keys it leaves out keep Phi's
    defaults, which are ShowoConfig's."""
    if phi.get("model_type", "phi") != "phi":
        raise ValueError(f"the LLM config has model_type {phi['model_type']!r}: Show-o's backbone is Phi")
    heads = phi.get("num_attention_heads", ShowoConfig.num_attention_heads)
    hidden = phi.get("hidden_size", ShowoConfig.hidden_size)
    rope = {k: phi[k] for k in ("rope_theta", "partial_rotary_factor") if phi.get(k) is not None}
    rope.update(phi.get("rope_parameters") or {})
    refusals = {
        "grouped-query attention": phi.get("num_key_value_heads") not in (None, heads),
        "a head_dim other than hidden_size / num_attention_heads": phi.get("head_dim") not in (None, hidden // heads),
        "RoPE scaling": bool(phi.get("rope_scaling")) or rope.get("rope_type", "default") != "default",
        "tied input and output embeddings": bool(phi.get("tie_word_embeddings")),
        "dropout": any(phi.get(k) for k in ("resid_pdrop", "embd_pdrop", "attention_dropout")),
    }
    if any(refusals.values()):
        raise ValueError(f"the LLM config asks for {', '.join(k for k, v in refusals.items() if v)}, which this "
                         f"Show-o does not implement (its Phi has none)")
    sizes = {k: phi[k] for k in LLM_FIELDS if phi.get(k) is not None}
    return {**sizes, **{k: v for k, v in rope.items() if k in LLM_FIELDS}}


def needs_llm_config(meta: dict) -> bool:
    """Whether a Show-o config.json leaves out LLM sizes that only the named LLM's config.json gives
    (phi-1_5's are known)."""
    return meta.get("llm_model_path") != PHI_1_5 and not set(LLM_FIELDS) <= set(meta)


def config_from_json(d: dict, llm_config: dict | None = None, max_text_len: int | None = None) -> ShowoConfig:
    """Show-o's config.json -> ShowoConfig. The released files name the LLM (llm_model_path) but not its sizes:
    those come from `llm_config`, the named LLM's config.json (None: phi-1_5's sizes, the only ones allowed then).
    Sizes the file itself holds (save_showo writes them all) win. max_text_len: the text block length when the
    file does not store one (the released ones do not); None keeps ShowoConfig's 128."""
    d = {k: v for k, v in d.items() if k not in _IGNORED_KEYS}
    llm_path = d.pop("llm_model_path", None)
    if d.pop("w_clip_vit", False):
        raise NotImplementedError("show-o-w-clip-vit (CLIP-ViT mmu variant) is not supported")
    names = {f.name for f in fields(ShowoConfig)}
    if set(d) - names:
        raise ValueError(f"unknown Show-o config keys: {sorted(set(d) - names)}")
    if llm_config is None and needs_llm_config({**d, "llm_model_path": llm_path}):
        named = f"names the LLM {llm_path!r}" if llm_path else "names no LLM (llm_model_path)"
        raise ValueError(f"config.json {named} and leaves out its sizes {sorted(set(LLM_FIELDS) - set(d))}: "
                         f"give that LLM's config.json")
    sizes = llm_fields(llm_config) if llm_config is not None else {}
    defaults = {} if max_text_len is None else {"max_text_len": max_text_len}
    return ShowoConfig(**{**sizes, **defaults, **d})


def read_llm_config(llm_path: str, folder: Path) -> dict:
    """The config.json of the LLM a Show-o config names: a folder (as given, or beside the checkpoint) or a hub id."""
    for local in (Path(llm_path), folder / llm_path):
        if (local / "config.json").is_file():
            return json.loads((local / "config.json").read_text())
    try:
        return json.loads((resolve_checkpoint_dir(llm_path, ["config.json"]) / "config.json").read_text())
    except (OSError, ValueError) as err:  # no such folder, or no hub: say which file is needed
        raise ValueError(f"the Show-o config names the LLM {llm_path!r}, whose config.json gives its sizes, and it "
                         f"could not be read ({err}). Put that folder at {llm_path} or beside config.json") from err


def load_showo(path_or_hub_id: str, device=None, dtype=None, max_text_len: int | None = None) -> Showo:
    """Released Show-o (or one saved by save_showo) -> Showo in eval mode, fp32 unless dtype given.

    max_text_len: the text block length when config.json does not store one (see config_from_json)."""
    folder = resolve_checkpoint_dir(path_or_hub_id, ["config.json", WEIGHTS_NAME])
    if not (folder / "config.json").is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{folder} needs config.json and {WEIGHTS_NAME} (pickled .bin is not read)")
    meta = json.loads((folder / "config.json").read_text())
    llm_path = meta.get("llm_model_path")
    llm_config = read_llm_config(llm_path, folder) if llm_path and needs_llm_config(meta) else None
    try:
        config = config_from_json(meta, llm_config, max_text_len)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{folder / 'config.json'}: {err}") from err
    state = load_file(folder / WEIGHTS_NAME, device=str(device or "cpu"))
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    with torch.device("meta"):  # no 1.4B-parameter random init: the weights are assigned below
        model = Showo(config)
    check_shapes(model.state_dict(), state, folder)
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise KeyError(f"{folder / WEIGHTS_NAME}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    # assign=True: the meta parameters become the loaded tensors (copying into meta tensors would drop the values)
    model.load_state_dict(state, strict=True, assign=True)
    # RoPE tables are non-persistent buffers (never in the file): rebuild them for real, in fp32.
    model.showo.model.rotary_emb = PhiRotaryEmbedding(model.showo.config)
    return (model if device is None else model.to(device)).eval()


def check_shapes(want: dict, state: dict, folder: Path) -> None:
    """Refuse weights whose shapes are not the ones the config describes, naming the first few."""
    wrong = [f"{k} {tuple(v.shape)} (config: {tuple(want[k].shape)})" for k, v in state.items()
             if k in want and tuple(v.shape) != tuple(want[k].shape)]
    if wrong:
        raise ValueError(f"{folder}: the weights do not have the sizes its config.json describes: "
                         f"{', '.join(wrong[:3])}")


def save_showo(model: Showo, directory, state_dict: dict | None = None) -> None:
    """Write config.json + pytorch_model.safetensors (`showo.` keys) atomically: temp folder, then rename.

    config.json keeps the released keys (the original loader ignores extra ones) plus our
    architecture fields, so tiny models round-trip through load_showo.
    """
    from models.common import atomic_folder

    with atomic_folder(directory) as tmp:
        meta = {"_class_name": "Showo", "_diffusers_version": "0.30.1", "llm_model_path": "microsoft/phi-1_5",
                "load_from_showo": True, "w_clip_vit": False, **asdict(model.config)}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        source = model.state_dict() if state_dict is None else state_dict  # a gathered one under FSDP
        state = {k: v.detach().contiguous().cpu() for k, v in source.items()}
        save_file(state, tmp / WEIGHTS_NAME, metadata={"format": "pt"})
