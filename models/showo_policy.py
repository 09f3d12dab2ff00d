"""Show-o behind the unirl policy contract (see models/__init__.py).

The network is models/showo.py (Phi-1.5 with Show-o's changes), the image tokenizer models/magvitv2.py.
This file adds what UniRL's loop needs on top:

- t2i logits of an image under CFG, computed only at the image positions and only over the codebook
  columns of the head (the rest of the 58,498-way vocabulary is never materialised), for the two GRPO
  estimators of a masked-decoding model (see `forward` and grpo.py):
    re-mask     the finished image, re-masked at one ratio shared by the group, scored at the masked
                positions in one pass (the default, as UniRL's code suggests);
    trajectory  every token scored under the sampler's state at the step that committed it
                (Mask-GRPO), one pass per distinct step: exactly the sampling-time log-probs.
- understanding on the image tokens themselves (the generated ids, no decode and re-encode), batched
  with a KV cache. The original answers one image at a time without a cache. Left padding sits between
  the image block and the question, is masked out, and positions skip it (cumsum of the mask), so a
  batched answer equals the batch-1 answer.
- the end-to-end path: straight-through one-hot image tokens enter understanding as one-hot @ embedding
  rows, the way UniRL's `mmu_prompt_one_hot` feeds them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.common import restrict_to_answer_vocab
from models import showo as S
from models.kv_cache import WindowedStaticCache, autocast_dtype
from models.magvitv2 import MAGVITv2, load_magvitv2, magvitv2_tiny_config, save_magvitv2

HUB = {  # preset -> (Show-o weights, MAGVIT-v2 weights, text tokenizer)
    "showo": ("showlab/show-o-512x512", "showlab/magvitv2", "microsoft/phi-1_5"),
    "showo-256": ("showlab/show-o", "showlab/magvitv2", "microsoft/phi-1_5"),
}
# preset -> text block length (max_text_len) when the checkpoint's config.json does not store one: the released
# files do not; ours do, so a checkpoint reloads with the length it was trained with. It moves the image's RoPE
# positions, so it must not depend on where the weights come from (hub id or --model-path folder).
TEXT_BLOCK = {
    "showo": 64,  # UniRL's GenEval config (Show-o's demos use 128)
    "showo-256": 128,  # Show-o's demos
    "showo-tiny": S.showo_tiny_config().max_text_len,
}


class MagvitCodec:
    """MAGVIT-v2 as the image codec: codes <-> pixels in [0, 1] (the model itself works in [-1, 1])."""

    def __init__(self, vq: MAGVITv2):
        self.vq = vq

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        return ((self.vq.decode_codes(ids).float() + 1) / 2).clamp(0, 1)

    def decode_onehot(self, onehot: torch.Tensor) -> torch.Tensor:
        return ((self.vq.decode_onehot(onehot).float() + 1) / 2).clamp(0, 1)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vq.encode_images(pixels * 2 - 1)


class ShowoPolicy(nn.Module):
    family = "showo"
    decoding = "masked"  # MaskGIT-style parallel decoding
    default_cfg_scale = 5.0  # w in (1 + w) * cond - w * uncond; UniRL's GenEval setting
    default_timesteps = 18  # training rollouts (see --timesteps)
    kv_bucket = 128  # answering cache: attention reads the filled slots rounded up to this (0: all slots)
    eval_timesteps = 50  # evaluation, as UniRL's GenEval runs

    def __init__(self, model: S.Showo, tokenizer, vq: MAGVITv2 | None = None, codec=None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.vq = vq  # registered as a submodule so .to(device) moves it; frozen
        if vq is not None:
            vq.requires_grad_(False).eval()
        self.codec = codec if codec is not None else MagvitCodec(vq)
        c = model.config
        self.config = c
        self.num_image_tokens = c.num_vq_tokens
        self.codebook_size = c.codebook_size
        self.mask_code = c.codebook_size  # "still masked" in codebook space (ids are code + offset)
        self.eos_id = self.bos_id = c.bos_token_id  # <|endoftext|> is bos, eos, <|sot|> and <|eot|>
        self.pad_id = c.pad_id
        self.prefix = 3 + c.num_vq_tokens  # [<|mmu|>, <|soi|>, image, <|eoi|>] before the question
        # answers hold text only: [PAD], Show-o's specials, the image codes and [MASK] all sit past the text ids
        self.answer_vocab_mask = torch.arange(c.vocab_size) < c.llm_vocab_size  # (V,) bool; EOS is text

    def guide(self, cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
        """Show-o's (MUSE-style) guidance: (1 + w) * cond - w * uncond."""
        return (1 + scale) * cond - scale * uncond

    # ---------------------------------------------------------------- text in, ids out
    def tokenize_gen_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The text block of t2i rows: [pad.., <|t2i|>, bos, text, eos] (N, max_text_len + 1) and its mask."""
        # t2i_prompt appends [<|soi|>, image, <|eoi|>]: keep only the text block; _t2i_rows adds the rest
        ids = S.t2i_prompt(S.encode_texts(self.tokenizer, prompts), self.config)[:, : self.config.max_text_len + 1]
        return ids, (ids != self.pad_id).long()

    def uncond_prompt_ids(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """The empty prompt's text block, Show-o's unconditional CFG row."""
        rows = S.uncond_t2i_prompt(prompt_ids.shape[0], self.config, device=prompt_ids.device)
        return rows[:, : self.config.max_text_len + 1]

    def tokenize_und_prompts(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded [<|sot|>, "USER: \\n{q} ASSISTANT:"] ids and mask; the image block goes in front."""
        rows = [[self.bos_id] + ids for ids in S.encode_texts(self.tokenizer, [S.mmu_question(q) for q in questions])]
        width = max(len(r) for r in rows)
        # left padding: the answer must follow the question's last token, so pads sit between the image block and the
        # question, masked and skipped by the positions
        ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows])
        return ids, (ids != self.pad_id).long()

    def tokenize_answers(self, answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from models.janus import pad_right

        # a leading space: the answer follows "ASSISTANT:" as a word in running text would
        rows = [ids + [self.eos_id] for ids in S.encode_texts(self.tokenizer, [" " + a for a in answers])]
        return pad_right(rows, self.pad_id)

    def decode_answers(self, answer_ids: torch.Tensor) -> list[str]:
        texts = []
        for row in answer_ids.tolist():
            row = row[: row.index(self.eos_id)] if self.eos_id in row else row
            # only text ids decode: PAD, the specials and the image codes all sit past llm_vocab_size
            texts.append(self.tokenizer.decode([t for t in row if t < self.config.llm_vocab_size]).strip())
        return texts

    # ---------------------------------------------------------------- t2i
    def _t2i_rows(self, prompt_ids, codes, cfg_scale):
        """[text block, <|soi|>, image ids, <|eoi|>] for cond (and uncond) rows. codes (N, T), mask_code = masked."""
        c = self.config
        # codebook space -> vocabulary ids: [MASK] where still masked, else code + image_offset
        image = torch.where(codes == self.mask_code, torch.full_like(codes, c.mask_token_id), codes + c.image_offset)
        n = prompt_ids.shape[0]
        soi = torch.full((n, 1), c.soi_id, dtype=torch.long, device=codes.device)
        eoi = torch.full((n, 1), c.eoi_id, dtype=torch.long, device=codes.device)
        rows = torch.cat([prompt_ids, soi, image, eoi], 1)
        if cfg_scale is not None:  # the uncond row shares the current image tokens (the original rebuilds it every step)
            rows = torch.cat([rows, torch.cat([self.uncond_prompt_ids(prompt_ids), soi, image, eoi], 1)])
        return rows

    def image_logits(self, prompt_ids, codes, cfg_scale, prefix=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits over the codebook at every image position: (guided, cond), each (N, T, K), float32.

        prefix: the text block's keys and values from `prefix_cache` (sampling only); then only the
        image part of the rows runs."""
        rows = self._t2i_rows(prompt_ids, codes, cfg_scale)
        mask = S.t2i_attention_mask(rows, self.config, dtype=self.model.embed_tokens.weight.dtype)
        if prefix is None:
            hidden = self.model.showo.model(input_ids=rows, attention_mask=mask, use_cache=False).last_hidden_state
        else:
            text = prompt_ids.shape[1]
            positions = torch.arange(text, rows.shape[1], device=rows.device)[None]  # arange, as without the cache
            hidden = self.model.showo.model(input_ids=rows[:, text:], attention_mask=mask[:, :, text:],
                                            position_ids=positions, cache=prefix, use_cache=True).last_hidden_state
            prefix.crop(-(rows.shape[1] - text))  # drop this step's image keys: the next step has new image tokens
        t = self.num_image_tokens
        logits = self._codebook_head(hidden[:, -(t + 1) : -1])  # the positions between soi and eoi
        n = prompt_ids.shape[0]
        cond = logits[:n]
        return (self.guide(cond, logits[n:], cfg_scale) if cfg_scale is not None else cond), cond

    def _codebook_head(self, hidden):
        """lm_head restricted to the code columns: the same numbers as slicing the full logits, 7x less work."""
        head, c = self.model.showo.lm_head, self.config
        rows = slice(c.image_offset, c.image_offset + c.codebook_size)
        return F.linear(hidden, head.weight[rows], head.bias[rows]).float()  # float32 logits, as the original returns

    @torch.no_grad()
    def masked_logits(self, prompt_ids, codes, cfg_scale, prefix=None) -> torch.Tensor:
        """The sampler's step: guided logits (N, T, K) for the current partly-masked codes."""
        return self.image_logits(prompt_ids, codes, cfg_scale, prefix)[0]

    @torch.no_grad()
    def prefix_cache(self, prompt_ids, cfg_scale):
        """Keys and values of the text block of the [cond; uncond] rows, computed once per rollout.

        Text rows are causal and never see the image, so their keys and values are the same at every
        sampler step; only the soi/image/eoi rows need to run again (the rest of each step's work)."""
        from transformers import DynamicCache

        # any image will do: the text rows never attend to it
        codes = torch.full((prompt_ids.shape[0], self.num_image_tokens), self.mask_code, device=prompt_ids.device)
        rows = self._t2i_rows(prompt_ids, codes, cfg_scale)
        text = prompt_ids.shape[1]
        mask = S.t2i_attention_mask(rows, self.config, dtype=self.model.embed_tokens.weight.dtype)[:, :, :text, :text]
        cache = DynamicCache(config=self.model.showo.config)
        self.model.showo.model(input_ids=rows[:, :text], attention_mask=mask, cache=cache, use_cache=True)
        return cache

    # ---------------------------------------------------------------- the gradient path
    def forward(self, gen: dict | None = None, und: dict | None = None, couple: dict | None = None) -> dict:
        """Same contract as Janus (models/__init__.py). For this masked family, gen may also carry:

        token_mask  (N, T) bool: re-mask estimator, the positions masked in the input (and scored);
        commit_step (N, T) long: trajectory estimator, the step that committed each token; the state
                    at step s reveals exactly the tokens with commit_step < s. Scored positions are
                    token_mask (all, or a subsample of steps).
        """
        from models.common import training_forward

        return training_forward(self, gen, und, couple)

    def _gen_logits(self, prompt_ids, prompt_mask, image_ids, cfg_scale=None, token_mask=None, commit_step=None):
        if commit_step is None:  # re-mask (or, with no mask, the finished image as input)
            codes = image_ids if token_mask is None else torch.where(token_mask, self.mask_code, image_ids)
            return self.image_logits(prompt_ids, codes, cfg_scale)
        guided = cond = None
        steps = commit_step if token_mask is None else commit_step[token_mask]
        for s in torch.unique(steps).tolist():  # one pass per sampler state that committed a scored token
            # the sampler's state at step s: the tokens committed before it visible, the rest masked
            codes = torch.where(commit_step < s, image_ids, self.mask_code)
            g, c = self.image_logits(prompt_ids, codes, cfg_scale)
            # each token takes its logits from the pass of the step that committed it
            here = (commit_step == s).unsqueeze(-1)
            guided = torch.where(here, g, guided if guided is not None else torch.zeros_like(g))
            cond = torch.where(here, c, cond if cond is not None else torch.zeros_like(c))
        return guided, cond

    # ---------------------------------------------------------------- understanding
    def onehot_to_und_images(self, onehot: torch.Tensor) -> torch.Tensor:
        """Show-o reads one-hot image tokens as one-hot @ embedding rows (see _und_embeds), as UniRL does."""
        return onehot

    def _und_embeds(self, images, ids):
        """[<|mmu|>, <|soi|>, image, <|eoi|>] + ids as embeddings. images: codes (N, T) or one-hot (N, T, K)."""
        c, table = self.config, self.model.embed_tokens.weight
        n = ids.shape[0]
        head = self.model.embed_tokens(torch.tensor([c.mmu_id, c.soi_id], device=ids.device)).expand(n, -1, -1)
        eoi = self.model.embed_tokens(torch.tensor([c.eoi_id], device=ids.device)).expand(n, -1, -1)
        if images.dim() == 3:  # straight-through one-hot rows over the codebook (the end-to-end path)
            # one-hot @ the code rows equals the embedding lookup forward, and is differentiable in the one-hot
            image = images.to(table.dtype) @ table[c.image_offset : c.image_offset + c.codebook_size]
        else:
            image = self.model.embed_tokens(images + c.image_offset)
        return torch.cat([head, image, eoi, self.model.embed_tokens(ids)], 1)

    def _und_mask(self, mask, queries, keys=None):
        """Additive (N, 1, q, keys) mask for the last `queries` rows: the image prefix is bidirectional, text
        causal, pads invisible. mask (N, L) 2-D over the whole sequence so far, prefix included; keys >= L
        when a windowed cache hands attention more slots than are filled (the extra ones are hidden)."""
        n, length = mask.shape
        keys = keys or length
        pos = torch.arange(keys, device=mask.device)
        rows = torch.arange(length - queries, length, device=mask.device)
        # causal, except that every row sees the whole image prefix (omni-attention)
        allowed = (rows[:, None] >= pos[None, :]) | (pos[None, :] < self.prefix)  # (q, keys)
        # pads hidden; window slots past the filled ones padded with False
        allowed = allowed[None] & F.pad(mask.bool(), (0, keys - length))[:, None, :]
        allowed = allowed | (rows[:, None] == pos[None, :])[None]  # a pad row sees itself: never all blocked
        return S.additive_mask(allowed[:, None], self.model.embed_tokens.weight.dtype)

    def _und_forward(self, embeds, mask, cache=None):
        queries = embeds.shape[1]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -queries:]  # pads take no position
        keys = None
        if isinstance(cache, WindowedStaticCache):  # sampling: set the window; positions stay the pad-skipping ones
            keys = cache.advance(queries, mask, embeds.device)[1].shape[1]
        out = self.model.showo.model(inputs_embeds=embeds, attention_mask=self._und_mask(mask, queries, keys),
                                     position_ids=positions, cache=cache, use_cache=cache is not None)
        return out.last_hidden_state

    def _full_mask(self, mask):
        return torch.cat([mask.new_ones(mask.shape[0], self.prefix), mask], 1)  # the image prefix is never padding

    def _und_logits(self, images, prompt_ids, prompt_mask, answer_ids, answer_mask):
        length = self.prefix + prompt_ids.shape[1]
        ids = torch.cat([prompt_ids, answer_ids[:, :-1]], 1)  # teacher forcing: the last answer token predicts nothing
        mask = self._full_mask(torch.cat([prompt_mask, answer_mask[:, :-1]], 1))
        # (N, A, D): the question's last position predicts answer token 0
        hidden = self._und_forward(self._und_embeds(images, ids), mask)[:, length - 1 :]
        # the answer vocabulary, as und_step's: grpo.py and sft.py score the distribution answers come from
        return restrict_to_answer_vocab(self.model.showo.lm_head(hidden).float(), self.answer_vocab_mask)

    def new_cache(self, batch: int, max_len: int):
        """A KV cache allocated once for the image prefix plus `max_len` text tokens; attention reads only its
        filled slots rounded up to `kv_bucket` (models/kv_cache.py)."""
        dtype = autocast_dtype(self.model.embed_tokens.weight.device.type)  # bf16 under autocast
        return WindowedStaticCache(self.model.showo.config, self.prefix + max_len, bucket=self.kv_bucket, dtype=dtype)

    @torch.no_grad()
    def und_step(self, cache, mask, ids, images=None) -> torch.Tensor:
        """Prefill (images given) or one token per row. mask: the 2-D mask of the text part so far.
        Next-token logits (B, V) restricted to the answer vocabulary (non-text tokens get probability 0)."""
        embeds = self._und_embeds(images, ids) if images is not None else self.model.embed_tokens(ids)
        hidden = self._und_forward(embeds, self._full_mask(mask), cache)[:, -1]
        return restrict_to_answer_vocab(self.model.showo.lm_head(hidden).float(), self.answer_vocab_mask)

    # ---------------------------------------------------------------- images
    @torch.no_grad()
    def decode_images(self, image_ids: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(image_ids)

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """External pixels (N, 3, H, W) in [0, 1] -> image codes, Show-o's understanding input."""
        return self.codec.encode(pixels)

    def images_for_understanding(self, image_ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Show-o reads its own generated ids directly (as UniRL's evaluation does): no lossy re-encode."""
        return image_ids

    def enable_activation_checkpointing(self) -> None:
        """Recompute each block's activations in backward instead of storing them (--grad-ckpt)."""
        self.model.showo.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    def save(self, folder, state_dict: dict | None = None) -> None:
        """Show-o's hub layout at the top, the tokenizer next to it, MAGVIT-v2 in magvitv2/.
        state_dict: this policy's whole state, when it had to be gathered (FSDP)."""
        folder = Path(folder)
        part = (lambda prefix: None if state_dict is None else
                {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
        S.save_showo(self.model, folder, part("model."))
        self.tokenizer.save_pretrained(folder)
        if self.vq is not None:
            save_magvitv2(self.vq, folder / "magvitv2", part("vq."))


# -------------------------------------------------------------------- loading
def build_tiny_showo(seed: int = 0) -> ShowoPolicy:
    """showo-tiny: the real layout at toy width, a byte-level tokenizer and a tiny MAGVIT-v2, from a seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = S.Showo(S.showo_tiny_config()).eval()
        vq = MAGVITv2(magvitv2_tiny_config()).eval()
    return ShowoPolicy(model, S.tiny_text_tokenizer(model.config), vq)


def load_showo_policy(name: str, path: str | None = None, dtype=torch.float32) -> ShowoPolicy:
    """showo | showo-256 from the hub ids (or `path`), showo-tiny built locally, or any folder save() wrote."""
    if name == "showo-tiny" and path is None:
        return build_tiny_showo().to(dtype)
    weights, vq_source, tok_source = HUB.get(name, (None, None, None))
    source = path or weights
    if path is not None and not os.path.isdir(path):
        raise ValueError(f"--model-path {path!r} is not a folder: pass a Show-o checkpoint folder")
    text_block = TEXT_BLOCK[name]  # outside the try: an unknown preset is not a broken checkpoint
    try:
        model = S.load_showo(source, dtype=dtype, max_text_len=text_block)
    except (FileNotFoundError, NotADirectoryError, KeyError) as err:
        raise ValueError(f"{source}: not a Show-o checkpoint ({err}); pass a folder with config.json and "
                         f"{S.WEIGHTS_NAME} in the hub layout") from err
    folder = Path(S.resolve_checkpoint_dir(source, ["config.json", S.WEIGHTS_NAME]))
    if (folder / "magvitv2").is_dir():
        vq = load_magvitv2(str(folder / "magvitv2"), dtype=dtype)
    elif name == "showo-tiny":
        vq = build_tiny_showo().vq
    else:
        vq = load_magvitv2(vq_source, dtype=dtype)
    if (folder / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    elif name == "showo-tiny":
        tokenizer = S.tiny_text_tokenizer(model.config)
    else:
        tokenizer = S.load_text_tokenizer(tok_source, model.config)
    return ShowoPolicy(model, tokenizer, vq)
