"""The shapes world's models: an exact image codec, a small Janus and a small Show-o that draw and read
4x4 boards.

shapes/__init__.py is the world (scenes, renderer, GenEval's judge). This file puts the real Janus and Show-o
architectures into it, behind the unirl policy contract (models/__init__.py), so every stage file runs
unchanged:

- `ShapesCodec` is the image tokenizer: one code per cell (codebook 37, code 0 = empty), 16 codes
  per 64 px image. decode = render, and shapes.parse_image inverts it exactly.
- `build_shapes_janus` (`--model shapes-janus`, the default) is `janus-tiny` at the world's sizes, with a
  BPE trained on the world's text. Janus generates the 16 codes one by one and *reads* its images through
  SigLIP on the rendered pixels, as the real model does. At 64 px with patch 16, SigLIP sees one patch
  per cell: 16 understanding tokens for 16 generation tokens.
- `build_shapes_showo` (`--model shapes-showo`) is `showo-tiny` at the world's sizes: Show-o's network and
  vocabulary layout (text, [PAD] and specials, the 37 codes, [MASK]) with a BPE trained on the world's
  text. It draws the 16 codes by MaskGIT-style parallel decoding and reads its images as Show-o does,
  through the image tokens themselves, so the codec stands in for MAGVIT-v2 only to render pixels (for
  the judge and the sample grids) and to parse external pixels back to codes.
- Both start from random weights; shapes/pretrain.py teaches them the world. Its `load_shapes_policy` is the
  preset loader: a folder (a pretrained base, a train.py checkpoint) or, without one, the cached pretrained
  base of the preset's family, pretraining it on first use.
- evaluate.py's `evaluate_world` scores a policy with the exact judge on fresh samples, its self-QA on those same
  images, and its understanding of true scenes; `format_table` prints two such results side by side.

Another family needs its own `build_shapes_<family>` and `load_shapes_<family>` in BUILDERS and LOADERS;
the codec, pretraining and evaluation only use the contract.
"""

from __future__ import annotations

from pathlib import Path

import torch

import shapes

TAGS = shapes.TAGS


class ShapesCodec:
    """Cell codes <-> pixels, exactly. Not an nn.Module (nothing to train or save): its tile table moves
    to the input's device and dtype on first use there."""

    num_codes = shapes.NUM_CODES  # K = 37
    num_tokens = shapes.NUM_CELLS  # T = 16

    def __init__(self):
        self._tiles = {}  # (device, dtype) -> (K, CELL * CELL * 3) pixels of every code, in [0, 1]

    def tiles(self, device, dtype) -> torch.Tensor:
        key = (torch.device(device), dtype)
        if key not in self._tiles:
            table = torch.from_numpy(shapes.code_tiles()).float().div(255)  # the renderer's values, to the bit
            self._tiles[key] = table.reshape(self.num_codes, -1).to(device=device, dtype=dtype)
        return self._tiles[key]

    def decode(self, image_ids: torch.Tensor) -> torch.Tensor:
        """Codes (N, T) -> pixels (N, 3, 64, 64) in [0, 1]; equal to shapes.render_tensor."""
        tiles = self.tiles(image_ids.device, torch.float32)
        return shapes.tiles_to_canvas(tiles[image_ids])  # (N, T, C*C*3) -> (N, 3, S, S)

    def decode_onehot(self, onehot: torch.Tensor) -> torch.Tensor:
        """One-hot (or soft) codes (N, T, K) -> pixels, differentiable: each cell is onehot @ tiles, so a
        hard one-hot gives exactly the rendered tile and a soft row a blend of tiles."""
        tiles = self.tiles(onehot.device, onehot.dtype if onehot.is_floating_point() else torch.float32)
        return shapes.tiles_to_canvas(onehot.to(tiles.dtype) @ tiles)  # (N, T, C*C*3) -> (N, 3, S, S)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (N, 3, 64, 64) in [0, 1] -> codes (N, T): the nearest tile per cell (exact on renders)."""
        return shapes.parse_image(pixels.float().cpu()).to(pixels.device)


# ------------------------------------------------------------------------------------------- building
def world_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """The text a shapes model ever reads or writes: prompts, questions, answers (for its BPE)."""
    return [r["prompt"] + " " + r["question"] + " " + r["answer"] for r in shapes.make_shape_records(n, seed=seed)]


def build_shapes_janus(seed: int = 0, hidden: int = 64, layers: int = 2, vocab_size: int = 512):
    """janus-tiny at the world's sizes, random weights: 64 px, patch 16, 16 image tokens, codebook 37.

    Janus' own VQ model still sits inside (transformers builds it; the codebook size comes from it) but
    is never used: the codec replaces it. We drop Janus' default system prompt: it is ~40 words the
    world's BPE never saw, and would triple the length of every understanding prompt."""
    from models.janus import JanusPolicy, build_tiny_janus, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(world_corpus(), vocab_size)
    model, processor = build_tiny_janus(image_size=shapes.SIZE, seed=seed, codebook_size=shapes.NUM_CODES,
                                        tokenizer=tokenizer, hidden=hidden, layers=layers)
    processor.use_default_system_prompt = False
    rescale_init(model, seed)
    return JanusPolicy(model, processor, codec=ShapesCodec())


def rescale_init(model: torch.nn.Module, seed: int) -> None:
    """Redraw every linear layer (the unused VQ model aside) with std 1 / sqrt(fan_in).

    transformers draws them with std 0.02, right for width 2048 (1 / sqrt(2048) = 0.022) but 3 to 6 times
    too small at widths 32 to 128: signals then barely pass through attention, and learning to read
    one cell among 16 stalls for thousands of steps (measured). Biases keep their zeros."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and "vqmodel" not in name:
                module.weight.normal_(0.0, module.in_features ** -0.5, generator=gen)


def load_shapes_janus(folder: str, dtype=torch.float32):
    """A shapes-janus folder (pretrained base or train.py checkpoint) -> JanusPolicy with the exact codec."""
    from transformers import JanusForConditionalGeneration, JanusProcessor

    from models.janus import JanusPolicy, resolve_folder

    folder = resolve_folder(folder)
    model = JanusForConditionalGeneration.from_pretrained(folder, dtype=dtype)
    size, codes = model.config.vision_config.image_size, model.config.vq_config.num_embeddings
    if (size, codes) != (shapes.SIZE, shapes.NUM_CODES):
        raise ValueError(f"{folder} is not a shapes-world Janus ({size} px, codebook {codes}; the world needs "
                         f"{shapes.SIZE} px and {shapes.NUM_CODES} codes): pass a folder written by shapes/pretrain.py "
                         f"or by a shapes-janus run")
    processor = JanusProcessor.from_pretrained(folder)
    processor.use_default_system_prompt = False  # as built (not every transformers version saves it)
    return JanusPolicy(model, processor, codec=ShapesCodec())


def build_world_tokenizer(vocab_size: int = 512):
    """Show-o's text side for the world: a byte-level BPE trained on the world's text as Show-o reads it
    (t2i prompts, then "USER: \n{question} ASSISTANT: {answer}"), laid out as phi-1_5 is: text ids first,
    <|endoftext|> among them (here id 0: bos, eos, <|sot|> and <|eot|> at once). Show-o's [PAD] and
    specials go after the text, so build_shapes_showo adds them once it knows the text vocabulary's size.
    No BOS is prepended: Show-o's prompt builders put it where it belongs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from models.showo import mmu_question

    records = shapes.make_shape_records(2000, seed=0)
    corpus = [r["prompt"] for r in records] + [mmu_question(r["question"]) + " " + r["answer"] for r in records]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


SHOWO_MAX_TEXT_LEN = 16  # the longest world prompt is 10 BPE tokens, 13 with its task token, bos and eos


def showo_world_config(text_vocab: int, bos_id: int, hidden: int, layers: int):
    """showo-tiny's layout rules at the world's sizes: 16 image tokens, codebook 37, a text block that holds
    the longest world prompt ([<|t2i|>, bos, text, eos] <= max_text_len + 1)."""
    from models.showo import ShowoConfig

    vocab = text_vocab + 10 + shapes.NUM_CODES + 1  # text, [PAD] + 9 specials, the codes, [MASK]
    return ShowoConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                       intermediate_size=2 * hidden, max_position_embeddings=128, llm_vocab_size=text_vocab,
                       codebook_size=shapes.NUM_CODES, vocab_size=vocab, mask_token_id=vocab - 1, bos_token_id=bos_id,
                       num_vq_tokens=shapes.NUM_CELLS, max_text_len=SHOWO_MAX_TEXT_LEN)


def build_shapes_showo(seed: int = 0, hidden: int = 64, layers: int = 2, vocab_size: int = 512):
    """showo-tiny at the world's sizes, random weights: Show-o's network and vocabulary layout, 16 image
    tokens, codebook 37, the world's BPE, and `ShapesCodec` instead of MAGVIT-v2.

    Show-o understands through the image tokens themselves (their embedding rows), so no image model
    sits inside: the codec only renders codes to pixels (for the judge and the samples) and parses
    external pixels back to codes."""
    from models import showo as S
    from models.showo_policy import ShowoPolicy

    tokenizer = build_world_tokenizer(vocab_size)
    config = showo_world_config(len(tokenizer), tokenizer.bos_token_id, hidden, layers)
    S.add_showo_tokens(tokenizer, config)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = S.Showo(config).eval()
    rescale_init(model, seed)
    return ShowoPolicy(model, tokenizer, codec=ShapesCodec())


def load_shapes_showo(folder: str, dtype=torch.float32):
    """A shapes-showo folder (pretrained base or train.py checkpoint) -> ShowoPolicy with the exact codec."""
    from transformers import AutoTokenizer

    from models import showo as S
    from models.showo_policy import ShowoPolicy

    fix = "pass a folder written by shapes/pretrain.py --family showo or by a shapes-showo run"
    path = Path(folder)
    if not (path / "config.json").is_file() or not (path / S.WEIGHTS_NAME).is_file():
        raise ValueError(f"{folder} is not a shapes-world Show-o (it needs config.json and {S.WEIGHTS_NAME}): {fix}")
    try:
        model = S.load_showo(str(path), dtype=dtype)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{folder} is not a shapes-world Show-o ({err}): {fix}") from err
    c = model.config
    if (c.num_vq_tokens, c.codebook_size) != (shapes.NUM_CELLS, shapes.NUM_CODES):
        raise ValueError(f"{folder} is not a shapes-world Show-o ({c.num_vq_tokens} image tokens, codebook "
                         f"{c.codebook_size}; the world needs {shapes.NUM_CELLS} and {shapes.NUM_CODES}): {fix}")
    return ShowoPolicy(model, AutoTokenizer.from_pretrained(str(path)), codec=ShapesCodec())


BUILDERS = {"janus": build_shapes_janus, "showo": build_shapes_showo}  # family -> f(seed, hidden, layers, vocab_size)
LOADERS = {"janus": load_shapes_janus, "showo": load_shapes_showo}  # family -> f(folder, dtype)
FAMILIES = {"shapes-janus": "janus", "shapes-showo": "showo"}  # preset name -> family


# ------------------------------------------------------------------------------------------- evaluation
