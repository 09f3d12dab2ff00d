"""Janus / Janus-Pro behind the unirl policy contract (see models/__init__.py).

We wrap transformers' own `JanusForConditionalGeneration`; nothing of the network is re-implemented.
What this file adds is the plumbing UniRL needs and generate() does not give:

- one teacher-forced pass that returns the image-token logits of both CFG branches (for GRPO and SFT),
- answer logits for an image and a question (understanding SFT and GRPO),
- single steps of the language model over a static KV cache, so that generate.py and understand.py
  can write their sampling loops in the open,
- the end-to-end path: straight-through one-hot image tokens -> VQ decoder -> pixels -> SigLIP.

Weights come from a transformers-format folder or hub id (`deepseek-community/Janus-Pro-1B`, `-7B`),
or from DeepSeek's original format (`deepseek-ai/Janus-1.3B`, the model of the paper's Janus run),
converted on first use by models/convert_janus.py. `janus-tiny` is built here from a seed: the real
architecture at toy width, with its own small BPE tokenizer, for tests and CPU runs.

Traps of transformers 5.23 that this file avoids:
- JanusConfig ties lm_head to the input embeddings by default; Janus-Pro's head is untied.
- A generation config saved with `_from_model_config=True` loses `generation_kwargs` on reload.
- The VQ tokenizer is frozen by intent, but `eval()` alone does not stop its gradients.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.common import restrict_to_answer_vocab
from models.kv_cache import WindowedStaticCache, autocast_dtype
from support.parallel import rank0_fills

# DeepSeek's special-token strings: full-width bars and U+2581 in BOS / EOS / PAD.
BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
PAD = "<\uff5c\u2581pad\u2581\uff5c>"
IMAGE, BOI, EOI = "<image_placeholder>", "<begin_of_image>", "<end_of_image>"

HUB_IDS = {
    "janus-pro-1b": "deepseek-community/Janus-Pro-1B",
    "janus-pro-7b": "deepseek-community/Janus-Pro-7B",
    "janus-1.3b": "deepseek-ai/Janus-1.3B",  # original format only: converted on first load
}


def chat_template(user: str = "<|User|>", assistant: str = "<|Assistant|>") -> str:
    """Janus' conversation format as a Jinja template: `{user}: text\\n\\n{assistant}: answer<eos>`.

    Janus-Pro uses `<|User|>` / `<|Assistant|>`; Janus-1.3B used plain `User` / `Assistant`.
    """
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}{{ '" + user + ": ' }}{%- else -%}{{ '" + assistant + ": ' }}{%- endif -%}"
        "{%- for c in message['content'] -%}"
        "{%- if c['type'] == 'image' -%}{{ '" + IMAGE + "' }}{%- if not loop.last -%}{{ '\\n' }}{%- endif -%}"
        "{%- else -%}{{ c['text'] | trim }}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if message['role'] == 'user' -%}{{ '\\n\\n' }}{%- else -%}{{ '" + EOS + "' }}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '" + assistant + ":' }}{%- endif -%}"
    )


class JanusPolicy(nn.Module):
    """A Janus model plus its processor, speaking the unirl contract."""

    family = "janus"
    decoding = "ar"  # one image token per step, left to right
    default_cfg_scale = 5.0  # Janus' sampler: uncond + 5 * (cond - uncond)
    kv_bucket = 128  # sampling caches: attention reads the filled slots rounded up to this (0: all slots)
    _image_step = None  # the compiled one-token step, set by compile_decode()

    def __init__(self, model, processor, codec=None):
        super().__init__()
        self.model = model
        self.processor = processor
        # tokens <-> pixels. Janus' own VQ-16 by default; the shapes world plugs in its exact renderer.
        self.codec = codec if codec is not None else VQCodec(model.model.vqmodel)
        self.tokenizer = processor.tokenizer
        # The VQ tokenizer is never trained (Janus freezes it); eval() alone keeps its grads on.
        model.model.vqmodel.requires_grad_(False)
        model.config.tie_word_embeddings = False  # never let a later tie_weights() overwrite lm_head
        model.generation_config._from_model_config = False  # keep generation_kwargs through save/load
        tok = self.tokenizer
        self.bos_id = tok.convert_tokens_to_ids(BOS)
        self.eos_id = tok.convert_tokens_to_ids(EOS)
        self.pad_id = tok.convert_tokens_to_ids(PAD)
        self.boi_id = tok.convert_tokens_to_ids(BOI)
        self.image_token_id = model.config.image_token_id
        self.num_image_tokens = model.config.vision_config.num_image_tokens  # 576 at 384 px
        self.codebook_size = model.config.vq_config.num_embeddings  # 16384 for VQ-16
        self.image_size = model.config.vision_config.image_size
        self.answer_vocab_mask = self._answer_vocab_mask()  # (V,) bool: the tokens an answer may hold

    def _answer_vocab_mask(self) -> torch.Tensor:
        """(V,) bool over lm_head's rows: True for the text tokens an answer may contain, EOS included. Out: every
        special or added control token (image slot, BOI / EOI, PAD, BOS, ...) and head rows past the tokenizer."""
        tok = self.tokenizer
        allowed = torch.zeros(self.model.lm_head.out_features, dtype=torch.bool)
        allowed[: len(tok)] = True  # lm_head rows past len(tok) stay False: they are padding, no token
        special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
        special |= {self.image_token_id, self.boi_id, tok.convert_tokens_to_ids(EOI), self.pad_id, self.bos_id}
        allowed[[i for i in special if 0 <= i < len(allowed)]] = False
        allowed[self.eos_id] = True  # EOS is special but ends every answer
        return allowed

    def guide(self, cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
        """Janus' classifier-free guidance on logits: uncond + s * (cond - uncond)."""
        return guide(cond, uncond, scale)

    # ---------------------------------------------------------------- text in, ids out (no grad)
    def tokenize_gen_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded t2i prompts `<bos><|User|>: p\\n\\n<|Assistant|>:<begin_of_image>`: ids, mask (N, L)."""
        texts = [self._chat(p, image=False) + BOI for p in prompts]
        # left, whatever side the tokenizer was saved with: the samplers read the logits at the last
        # position and append after it, so right padding would put pads before the first image token
        enc = self.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def uncond_prompt_ids(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """The CFG branch without the prompt: every token but BOS and BOI becomes PAD (Janus' rule).

        Left padding stays masked; these PADs are attended to, as in the original sampler.
        """
        keep = (prompt_ids == self.bos_id) | (prompt_ids == self.boi_id)
        return torch.where(keep, prompt_ids, torch.full_like(prompt_ids, self.pad_id))

    def tokenize_und_prompts(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded understanding prompts with the image's placeholder slots: ids, mask (N, L)."""
        system = ""
        if getattr(self.processor, "use_default_system_prompt", False):
            from transformers.models.janus.processing_janus import DEFAULT_SYSTEM_PROMPT

            system = DEFAULT_SYSTEM_PROMPT
        slots = BOI + IMAGE * self.num_image_tokens + EOI  # one placeholder per SigLIP patch
        texts = [system + self._chat(q, image=True).replace(IMAGE, slots) for q in questions]
        enc = self.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")  # see tokenize_gen_prompts
        counts = (enc["input_ids"] == self.image_token_id).sum(1)
        if bool((counts != self.num_image_tokens).any()):  # a question spelling out an image token itself
            bad = questions[int((counts != self.num_image_tokens).nonzero()[0])]
            raise ValueError(f"question {bad!r} contains an image token ({IMAGE}, {BOI} or {EOI}): remove it from "
                             f"the prompt records")
        return enc["input_ids"], enc["attention_mask"]

    def tokenize_answers(self, answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded answer ids ending in EOS, as the assistant turn continues `<|Assistant|>:`."""
        ids = self.tokenizer([" " + a for a in answers], add_special_tokens=False)["input_ids"]  # one batched call
        rows = [row + [self.eos_id] for row in ids]
        return pad_right(rows, self.pad_id)

    def decode_answers(self, answer_ids: torch.Tensor) -> list[str]:
        """Answer ids (N, A) -> text, cut at the first EOS."""
        texts = []
        for row in answer_ids.tolist():
            row = row[: row.index(self.eos_id)] if self.eos_id in row else row
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts

    def _chat(self, text: str, image: bool) -> str:
        content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
        msgs = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(msgs, add_generation_prompt=True)

    # ---------------------------------------------------------------- the gradient path
    def forward(self, gen: dict | None = None, und: dict | None = None, couple: dict | None = None) -> dict:
        """Every gradient-carrying computation, in one call so that DDP syncs it.

        gen:    prompt_ids, prompt_mask (N, L); image_ids (N, T); cfg_scale (float or None).
                -> gen_logits (N, T, K): the guided logits when cfg_scale is set, else the conditional;
                   gen_cond_logits (N, T, K). Float32.
        und:    images (model input for understanding), prompt_ids, prompt_mask (N, L),
                answer_ids, answer_mask (N, A).  -> und_logits (N, A, V), position a predicts answer_ids[:, a].
        couple: tau, noise (N, T, K) Gumbel noise or None. Needs gen and und: the understanding images
                are rebuilt from the straight-through one-hot of gen_logits, so the answer loss reaches
                the generation head (UniRL's end-to-end regime).
        """
        from models.common import training_forward

        return training_forward(self, gen, und, couple)

    def _gen_logits(self, prompt_ids, prompt_mask, image_ids, cfg_scale=None):
        """One teacher-forced pass over [cond; uncond] rows: the logits the sampler saw at every step."""
        n, length = prompt_ids.shape
        rows, masks = prompt_ids, prompt_mask
        if cfg_scale is not None:  # both CFG branches in one batch
            rows = torch.cat([prompt_ids, self.uncond_prompt_ids(prompt_ids)])
            masks = torch.cat([prompt_mask, prompt_mask])
        b = rows.shape[0]
        # teacher forcing: the last image token is never fed, as in the sampler
        image_embeds = self.model.prepare_embeddings_for_image_generation(image_ids[:, :-1])  # (N, T-1, H)
        # both CFG branches read the same image tokens
        embeds = torch.cat([self.model.get_input_embeddings()(rows), image_embeds.repeat(b // n, 1, 1)], 1)
        mask = torch.cat([masks, masks.new_ones(b, image_ids.shape[1] - 1)], 1)
        hidden = self._lm(embeds, mask)[:, length - 1 :]  # position L-1 (the BOI) predicts token 0
        # float32 before any softmax: bf16 log-probs drift by ~1e-3
        logits = self.model.model.generation_head(hidden).float()  # (B, T, K)
        cond = logits[:n]
        if cfg_scale is None:
            return cond, cond
        return guide(cond, logits[n:], cfg_scale), cond

    def _und_logits(self, images, prompt_ids, prompt_mask, answer_ids, answer_mask):
        """Teacher-forced answer logits: [prompt with image slots][answer[:-1]] -> (N, A, V), restricted to the
        answer vocabulary as und_step's are (so grpo.py and sft.py score the distribution answers come from)."""
        length = prompt_ids.shape[1]
        ids = torch.cat([prompt_ids, answer_ids[:, :-1]], 1)
        mask = torch.cat([prompt_mask, answer_mask[:, :-1]], 1)
        hidden = self._lm(self._und_embeds(ids, images, question_len=length), mask)[:, length - 1 :]
        return restrict_to_answer_vocab(self.model.lm_head(hidden).float(), self.answer_vocab_mask)

    def _und_embeds(self, ids, images, question_len: int | None = None):
        """Text embeddings with the aligned SigLIP features scattered into the question's image slots.

        The slots are the placeholder ids among the first `question_len` tokens (default: all of `ids` are the
        question). The answer part is never searched: an answer token equal to the placeholder stays text."""
        embeds = self.model.get_input_embeddings()(ids)
        if images is None:
            return embeds
        # masked_scatter fills the True slots in row-major order: row i's slots take image i's features
        features = self.model.model.get_image_features(images).pooler_output  # (N, 576, H)
        slots = torch.zeros_like(ids, dtype=torch.bool)
        length = ids.shape[1] if question_len is None else question_len
        slots[:, :length] = ids[:, :length] == self.image_token_id
        return embeds.masked_scatter(slots.unsqueeze(-1).expand_as(embeds), features.to(embeds.dtype))

    def _lm(self, embeds, mask, cache=None):
        """The Llama trunk. Positions are arange over the row, left pads included, as generate() does;
        RoPE only sees offsets, so the pads do not change any logit."""
        if isinstance(cache, WindowedStaticCache):  # sampling: positions and window kept on the host
            pos, mask = cache.advance(embeds.shape[1], mask, embeds.device)
        else:
            start = cache.get_seq_length() if cache is not None else 0
            pos = torch.arange(start, start + embeds.shape[1], device=embeds.device).unsqueeze(0)
        return self._trunk(embeds, mask, pos, cache)

    def _trunk(self, embeds, mask, pos, cache):
        out = self.model.model.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=pos, cache=cache, use_cache=cache is not None
        )  # `cache` (transformers >= 5.24) replaces `past_key_values`, which 5.40 removes
        return out.last_hidden_state

    # ---------------------------------------------------------------- sampling helpers (no grad)
    def new_cache(self, batch: int, max_len: int):
        """A KV cache allocated once for `batch` rows of up to `max_len` tokens (no copying as it grows).
        Attention reads only the filled slots, rounded up to `kv_bucket` (0: all slots); models/kv_cache.py."""
        dtype = autocast_dtype(self.model.device.type)  # bf16 under autocast
        fresh = lambda: WindowedStaticCache(self.model.config.text_config, max_len,  # noqa: E731
                                            bucket=self.kv_bucket, dtype=dtype)
        if self._image_step is None:  # eager: a fresh cache, freed after the rollout (training needs the memory)
            return fresh()
        # compiled: one cache per shape, reset and reused, so the graphs' inputs keep their addresses and
        # the next rollout replays the graphs instead of compiling them again
        key = (batch, max_len, dtype, self.kv_bucket)
        if key not in self._caches:
            self._caches[key] = fresh()
        self._caches[key].reset()
        return self._caches[key]

    def compile_decode(self, mode: str = "default", backend: str = "inductor") -> None:
        """torch.compile the one-token image step (embed -> trunk -> head), one graph per cache window.
        mode "reduce-overhead" adds CUDA graphs: the ~300 kernel launches of a step become one replay.
        mode "off" goes back to the eager step and frees the kept caches."""
        import torch._dynamo

        self._caches = {}  # (batch, max_len, dtype, bucket) -> the cache the graphs were built on
        if mode == "off":
            self._image_step = None
            return
        # one graph per window and batch shape; a 1B rollout at bucket 128 has 5 windows, a bucket of 0 has 1
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        self._image_step = torch.compile(self._image_step_eager, backend=backend, fullgraph=True, dynamic=False,
                                         mode=mode if backend == "inductor" else None)

    def _image_step_eager(self, image_ids, mask, pos, cache):
        """One image token per row -> next-token logits (B, K). The cache's host-side bookkeeping (window,
        positions) happened before: inside a compiled region a changing Python int would recompile every step."""
        embeds = self.model.prepare_embeddings_for_image_generation(image_ids[:, None])
        return self.model.model.generation_head(self._trunk(embeds, mask, pos, cache)[:, -1]).float()

    @torch.no_grad()
    def gen_step(self, cache, mask, prompt_ids=None, image_ids=None) -> torch.Tensor:
        """Feed a prompt (prefill) or one image token per row; return next-token logits (B, K), float32."""
        if prompt_ids is None and isinstance(cache, WindowedStaticCache):
            pos, mask = cache.advance(1, mask, image_ids.device)
            step = self._image_step or self._image_step_eager  # compiled by compile_decode(), if asked
            return step(image_ids, mask, pos, cache)
        if prompt_ids is None:  # any other cache (the benchmarks' growing one)
            embeds = self.model.prepare_embeddings_for_image_generation(image_ids[:, None])
        else:
            embeds = self.model.get_input_embeddings()(prompt_ids)
        hidden = self._lm(embeds, mask, cache)[:, -1]
        return self.model.model.generation_head(hidden).float()

    @torch.no_grad()
    def und_step(self, cache, mask, ids, images=None) -> torch.Tensor:
        """Feed the understanding prompt (with images) or one answer token per row; next-token logits (B, V),
        restricted to the answer vocabulary (image and control tokens get probability 0)."""
        hidden = self._lm(self._und_embeds(ids, images), mask, cache)[:, -1]
        return restrict_to_answer_vocab(self.model.lm_head(hidden).float(), self.answer_vocab_mask)

    @torch.no_grad()
    def decode_images(self, image_ids: torch.Tensor) -> torch.Tensor:
        """Image tokens (N, T) -> pixels (N, 3, S, S) in [0, 1], through the image codec."""
        return self.codec.decode(image_ids)

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (N, 3, S, S) in [0, 1] -> SigLIP input. With mean = std = 0.5 this is 2x - 1; we skip the
        round trip through uint8 that the processor would make (it moves a pixel by at most 1/127.5)."""
        if pixels.shape[-1] != self.image_size:
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        dtype = self.model.model.vision_model.embeddings.patch_embedding.weight.dtype
        return (pixels * 2 - 1).clamp(-1, 1).to(dtype)

    def images_for_understanding(self, image_ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Janus understands through SigLIP on the decoded pixels, as the real model does."""
        return self.encode_images(pixels)

    def onehot_to_und_images(self, onehot: torch.Tensor) -> torch.Tensor:
        """Differentiable: one-hot image tokens (N, T, K) -> decoded pixels -> SigLIP input (the coupling path)."""
        dtype = self.model.model.vision_model.embeddings.patch_embedding.weight.dtype
        return (self.codec.decode_onehot(onehot) * 2 - 1).clamp(-1, 1).to(dtype)

    def enable_activation_checkpointing(self) -> None:
        """Recompute each block's activations in backward instead of storing them (--grad-ckpt)."""
        self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    # ---------------------------------------------------------------- saving
    def save(self, folder: str | os.PathLike, state_dict: dict | None = None) -> None:
        """Write a transformers-format folder that `--model-path` (and from_pretrained) loads back.
        state_dict: this policy's whole state, when it had to be gathered (FSDP). Call it on rank 0: under a
        process group, transformers 5.x writes the weights and config.json on global rank 0 only, whatever
        the caller asks (the tokenizer files are written everywhere)."""
        self.model.generation_config._from_model_config = False
        if state_dict is not None:
            state_dict = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
        self.model.save_pretrained(folder, state_dict=state_dict)
        self.processor.save_pretrained(folder)


class VQCodec:
    """Janus' VQ-16 decoder as the image codec: tokens or one-hot rows -> pixels in [0, 1]."""

    def __init__(self, vq):
        self.vq = vq

    def decode(self, image_ids: torch.Tensor) -> torch.Tensor:
        pixels = self.vq.decode(image_ids)  # about [-1, 1], not clamped
        return ((pixels.float() + 1) / 2).clamp(0, 1)

    def decode_onehot(self, onehot: torch.Tensor) -> torch.Tensor:
        """One-hot (or soft) rows (N, T, K) @ the L2-normalised codebook -> decoder, with gradients."""
        codebook = F.normalize(self.vq.quantize.embedding.weight, dim=-1)  # (K, D), as vq.decode does
        side = int(round(onehot.shape[1] ** 0.5))
        z = (onehot.to(codebook.dtype) @ codebook).view(onehot.shape[0], side, side, -1).permute(0, 3, 1, 2)
        return ((self.vq.decoder(self.vq.post_quant_conv(z)) + 1) / 2).clamp(0, 1)


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Janus' classifier-free guidance: uncond + s * (cond - uncond); s = 1 is the conditional model."""
    return uncond + scale * (cond - uncond)


def pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> right-padded ids and mask (N, max_len)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


# -------------------------------------------------------------------- loading
def load_janus(name: str, path: str | None = None, dtype=torch.float32) -> JanusPolicy:
    """Build or load a Janus policy: `janus-tiny` from a seed, else a folder or hub id (converted if original)."""
    from transformers import JanusForConditionalGeneration, JanusProcessor

    if path is None and name == "janus-tiny":
        model, processor = build_tiny_janus()
        return JanusPolicy(model.to(dtype), processor)
    source = path or HUB_IDS[name]
    folder = resolve_folder(source)
    from models.convert_janus import is_original_janus

    if is_original_janus(folder):  # DeepSeek's own layout: convert once into the cache, then load
        converted = conversion_folder(folder)
        # Under torchrun rank 0 converts (or finds the conversion) while the others wait. Every rank calls this,
        # cached or not: a rank that skipped it on seeing rank 0's finished conversion left rank 0 waiting forever.
        rank0_fills(converted, lambda: convert_once(folder, converted),
                    how_to_share="point UNIRL_CACHE at a folder every machine shares, or convert once on each "
                                 "machine first (python -m models.convert_janus SRC DST, then --model-path DST)")
        folder = converted
    kind = json.loads(Path(folder, "config.json").read_text()).get("model_type")
    if kind != "janus":
        raise ValueError(f"{folder} is not a Janus checkpoint (model_type {kind!r}): pass a transformers-format "
                         f"Janus folder, DeepSeek's original one, or a unirl checkpoint of a Janus run")
    model = JanusForConditionalGeneration.from_pretrained(folder, dtype=dtype)
    processor = JanusProcessor.from_pretrained(folder)
    return JanusPolicy(model, processor)


def convert_once(folder, converted: Path) -> None:
    """Convert `folder` into the cache unless it is there already (rank 0 may find it filled meanwhile)."""
    from models.convert_janus import convert_original_janus

    if not (converted / "config.json").exists():
        print(f"converting original-format Janus at {folder} -> {converted}")
        convert_original_janus(folder, converted)


def conversion_folder(folder) -> Path:
    """Where the cache keeps the conversion of the original-format Janus `folder`. Keyed by the source's content
    (models.convert_janus.source_key): another folder of the same name gets its own conversion."""
    from models.convert_janus import source_key

    return cache_dir() / "converted" / source_key(folder, memo=cache_dir() / "converted" / "file_hashes.json")


def cache_to_fill(name: str, path: str | None) -> Path | None:
    """models.cache_to_fill for Janus: the conversion an original-format --model-path folder would get first."""
    return conversion_to_fill(path) if path is not None and os.path.isdir(path) else None


def conversion_to_fill(folder) -> Path | None:
    """The conversion folder that loading `folder` would write, or None (not original-format, or converted)."""
    from models.convert_janus import is_original_janus

    if not is_original_janus(folder):
        return None
    converted = conversion_folder(folder)
    return None if (converted / "config.json").exists() else converted


def resolve_folder(source: str) -> str:
    """A local folder as is (checked), or a hub id downloaded by huggingface_hub into its cache."""
    if os.path.isdir(source):
        if not os.path.exists(os.path.join(source, "config.json")):
            raise ValueError(f"{source} has no config.json: pass a folder saved by unirl or a Janus checkpoint folder")
        return source
    if os.path.exists(source) or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ValueError(f"--model-path {source!r} is not a folder: pass an existing checkpoint folder or a hub id org/name")
    from models.common import fetch_from_hub

    return str(fetch_from_hub(source))


def cache_dir() -> Path:
    return Path(os.environ.get("UNIRL_CACHE", Path.home() / ".cache" / "unirl"))


# -------------------------------------------------------------------- janus-tiny
def build_tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = 1024):
    """A small byte-level BPE with DeepSeek's special tokens, trained on prompt and answer text
    (by default our GenEval-style records)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if corpus is None:
        import prompts

        corpus = [r["prompt"] + " " + r["question"] + " " + r["answer"] for r in prompts.make_records(600, seed=0)]
    corpus = list(corpus) + ["<|User|>: hi\n\n<|Assistant|>: ok", "You are a helpful language and vision assistant."]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[BOS, EOS, PAD, IMAGE, BOI, EOI],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    # Janus' tokenizer prepends BOS to every text.
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left",
        extra_special_tokens={"image_token": IMAGE, "boi_token": BOI, "eoi_token": EOI},  # JanusProcessor needs these
    )


def build_tiny_janus(image_size: int = 128, seed: int = 0, codebook_size: int = 512, tokenizer=None,
                     hidden: int = 64, layers: int = 2):
    """The real Janus architecture at toy width: 64 image tokens at 128 px, deterministic for a seed."""
    from transformers import (JanusConfig, JanusForConditionalGeneration, JanusImageProcessorPil, JanusProcessor,
                              JanusVisionConfig, JanusVQVAEConfig, LlamaConfig)

    tok = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in dict(bos=BOS, eos=EOS, pad=PAD, img=IMAGE, boi=BOI).items()}
    tokens = (image_size // 16) ** 2
    text = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                       bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"], tie_word_embeddings=False)
    vision = JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2.0,
                               image_size=image_size, patch_size=16, projection_dim=hidden, depth=2, num_image_tokens=tokens)
    vq = JanusVQVAEConfig(embed_dim=8, num_embeddings=codebook_size, latent_channels=32, base_channels=32,
                          channel_multiplier=[1, 1, 1, 1, 1], num_res_blocks=1,  # 5 levels keep the x16 downsampling
                          projection_dim=hidden, image_token_embed_dim=hidden, num_hidden_layers=2)
    config = JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=ids["img"], tie_word_embeddings=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = JanusForConditionalGeneration(config)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = ids["bos"], ids["eos"], ids["pad"]
    gc.generation_kwargs = {"boi_token_id": ids["boi"]}  # where generate() reads it
    gc.guidance_scale, gc.temperature, gc.do_sample, gc.top_k = 5.0, 1.0, True, 0  # full softmax, as the original
    image_processor = JanusImageProcessorPil(size={"height": image_size, "width": image_size},
                                             image_mean=[0.5] * 3, image_std=[0.5] * 3, min_size=14)
    processor = JanusProcessor(image_processor=image_processor, tokenizer=tok, chat_template=chat_template(),
                               use_default_system_prompt=True, num_image_tokens=tokens)
    return model.eval(), processor
