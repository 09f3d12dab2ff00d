"""MAGVIT-v2 (showlab/magvitv2): the image tokenizer Show-o reads and writes.

An image in [-1, 1] goes through a taming-style convolutional encoder (x16 downsampling) to 13
channels; the lookup-free quantizer (LFQ) keeps only the SIGN of each channel, and the 13 bits
(MSB = channel 0) are the code, 0..8191. Decoding looks the bits up as a ±1 vector per position
and runs the mirror-image decoder. 512 px <-> 32x32 = 1024 codes, 256 px <-> 256 codes (fully
convolutional, so the resolution is only set by the input).

Parameter names and shapes equal the released checkpoint (`magvitv2_params.json`): `encoder.*`
(its `quant_conv` included), `decoder.*` (`post_quant_conv` included), and two quantizer buffers
`quantize.embedding` / `quantize.power_vals` that we recompute and check instead of trusting.
Simplified on purpose: no training losses (the original quantizer computes entropy/commitment
losses on every encode and throws them away), no attention outside the middle blocks (the released
`attn_resolutions=[5]` never matches a resolution, so only `mid.attn_1` exists).

    vq = load_magvitv2("showlab/magvitv2")     # or a local folder with pytorch_model.safetensors
    codes = vq.encode_images(pixels)           # (B, 3, 512, 512) in [-1, 1] -> (B, 1024) in [0, 8192)
    pixels = vq.decode_codes(codes)            # -> (B, 3, 512, 512), roughly [-1, 1]
    pixels = vq.decode_onehot(probs)           # (B, 1024, 8192) soft/one-hot rows, differentiable
"""

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

WEIGHTS_NAME = "pytorch_model.safetensors"


@dataclass
class MagvitConfig:
    ch: int = 128  # base width; GroupNorm always uses 32 groups, so widths must be multiples of 32
    encoder_ch_mult: tuple = (1, 2, 2, 4, 4)  # one level per entry; all but the last downsample x2
    encoder_num_res_blocks: tuple = (4, 3, 4, 3, 4)
    decoder_ch_mult: tuple = (1, 1, 2, 2, 4)  # stored high -> low resolution, run from the last level
    decoder_num_res_blocks: tuple = (4, 4, 3, 4, 3)
    z_channels: int = 13  # = bits per code: codebook_size = 2 ** z_channels = 8192

    @property
    def codebook_size(self) -> int:
        return 2 ** self.z_channels


def magvitv2_config() -> MagvitConfig:
    return MagvitConfig()


def magvitv2_tiny_config() -> MagvitConfig:
    """3 levels (x4 down), a width change in both halves (nin_shortcut), 6 bits = 64 codes."""
    return MagvitConfig(ch=32, encoder_ch_mult=(1, 1, 2), encoder_num_res_blocks=(1, 1, 1),
                        decoder_ch_mult=(1, 1, 2), decoder_num_res_blocks=(1, 1, 1), z_channels=6)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)  # as the original (torch's silu kernel differs in the last bit)


class ResnetBlock(nn.Module):
    """norm -> swish -> conv3x3, twice, plus a 1x1 `nin_shortcut` when the width changes (no time embedding)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = group_norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))  # (dropout p=0 omitted)
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all h*w positions with 1x1-conv q, k, v (taming style)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = group_norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).reshape(b, c, h * w).transpose(1, 2)  # (b, hw, c)
        k, v = self.k(y).reshape(b, c, h * w), self.v(y).reshape(b, c, h * w)  # (b, c, hw)
        attn = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)  # (b, hw_q, hw_k); no fp32 upcast, as the original
        y = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(y)


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric zero pad: right and bottom only


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution: `block` (ResnetBlocks, the first one changes the width) then an optional resample."""

    def __init__(self, cin: int, cout: int, num_blocks: int, downsample=False, upsample=False):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(cin if i == 0 else cout, cout) for i in range(num_blocks))
        if downsample:
            self.downsample = Downsample(cout)
        if upsample:
            self.upsample = Upsample(cout)

    def forward(self, x):
        for block in self.block:
            x = block(x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


class Mid(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: MagvitConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.encoder_ch_mult]
        last = len(widths) - 1
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList(
            Level(([cfg.ch] + widths)[i], w, n, downsample=i != last)
            for i, (w, n) in enumerate(zip(widths, cfg.encoder_num_res_blocks)))
        self.mid = Mid(widths[-1])
        self.norm_out = group_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], cfg.z_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)

    def forward(self, x):  # (B, 3, H, W) -> (B, z, H/16, W/16)
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.conv_out(swish(self.norm_out(self.mid(h))))
        return self.quant_conv(h)


class Decoder(nn.Module):
    def __init__(self, cfg: MagvitConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.decoder_ch_mult]
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, widths[-1], 3, padding=1)
        self.mid = Mid(widths[-1])
        # up[i] takes the width of level i+1 (the previous one executed) and upsamples unless i == 0
        self.up = nn.ModuleList(
            Level((widths + widths[-1:])[i + 1], w, n, upsample=i != 0)
            for i, (w, n) in enumerate(zip(widths, cfg.decoder_num_res_blocks)))
        self.norm_out = group_norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, z):  # (B, z, h, w) -> (B, 3, 16h, 16w)
        h = self.mid(self.conv_in(self.post_quant_conv(z)))
        for level in reversed(self.up):  # lowest resolution first
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))


class LFQuantizer(nn.Module):
    """Lookup-free quantizer: code = bits of sign(z), MSB first; entry i = bits of i mapped {0,1} -> {-1,+1}."""

    def __init__(self, bits: int):
        super().__init__()
        power_vals = 2 ** torch.arange(bits - 1, -1, -1)  # (bits,) int64 [4096, ..., 2, 1]
        codes = torch.arange(2 ** bits)
        self.register_buffer("embedding", ((codes[:, None] // power_vals) % 2).float() * 2 - 1)  # (K, bits)
        self.register_buffer("power_vals", power_vals)

    def codes_from_latents(self, z: torch.Tensor) -> torch.Tensor:
        """(B, bits, h, w) -> (B, h*w) raster order. z > 0 -> bit 1; z == 0 -> bit 0 (as the original,
        whose straight-through sum z + (q - z) keeps the sign for every |z| < 2^23)."""
        bits = (z > 0).long()
        return (bits * self.power_vals.view(1, -1, 1, 1)).sum(1).flatten(1)

    def latents_from_codes(self, codes: torch.Tensor, hw=None) -> torch.Tensor:
        """(B, N) codes -> (B, bits, h, w); a square grid unless hw = (h, w) is given."""
        return self._to_grid(self.embedding[codes], hw)

    def latents_from_probs(self, probs: torch.Tensor, hw=None) -> torch.Tensor:
        """(B, N, K) one-hot or soft rows -> (B, bits, h, w) = probs @ embedding (UniRL's decode_code_gs)."""
        return self._to_grid(probs @ self.embedding.to(probs.dtype), hw)

    @staticmethod
    def _to_grid(z: torch.Tensor, hw) -> torch.Tensor:  # (B, N, bits) -> (B, bits, h, w)
        b, n, _ = z.shape
        h, w = hw if hw is not None else (math.isqrt(n), math.isqrt(n))
        if h * w != n:
            raise ValueError(f"{n} codes do not fill a {h}x{w} grid; pass hw=(h, w)")
        return z.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()


class MAGVITv2(nn.Module):
    def __init__(self, cfg: MagvitConfig):
        super().__init__()
        self.config = cfg
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.quantize = LFQuantizer(cfg.z_channels)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> codes (B, H/16 * W/16) in [0, codebook_size), long."""
        return self.quantize.codes_from_latents(self.encoder(pixels))

    def decode_codes(self, codes: torch.Tensor, hw=None) -> torch.Tensor:
        """(B, N) codes -> pixels (B, 3, 16h, 16w), roughly in [-1, 1]."""
        z = self.quantize.latents_from_codes(codes, hw)
        return self.decoder(z.to(self.decoder.conv_in.weight.dtype))

    def decode_onehot(self, probs: torch.Tensor, hw=None) -> torch.Tensor:
        """(B, N, K) rows over the codebook -> pixels; gradients flow into probs (straight-through path)."""
        z = self.quantize.latents_from_probs(probs, hw)
        return self.decoder(z.to(self.decoder.conv_in.weight.dtype))


# ---------------------------------------------------------------------------------------------
# Pixels in and out, as Show-o's training/utils.py image_transform and its post-processing.


def preprocess_image(image: Image.Image, resolution: int, resample=Image.BICUBIC) -> torch.Tensor:
    """PIL -> (3, R, R) in [-1, 1]: resize the SHORT side to R (torchvision Resize), centre crop, scale.

    Show-o's training/utils.py uses bicubic; its inference_mmu.py has a bilinear copy (pass resample).
    """
    image = image.convert("RGB")
    w, h = image.size
    short, long = min(w, h), max(w, h)
    size = (resolution, int(resolution * long / short))  # (short, long) as torchvision computes it
    size = size if w <= h else size[::-1]
    if (w, h) != size:
        image = image.resize(size, resample)
    w, h = image.size
    top, left = int(round((h - resolution) / 2.0)), int(round((w - resolution) / 2.0))
    image = image.crop((left, top, left + resolution, top + resolution))
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255)  # ToTensor
    return x.sub(0.5).div(0.5)  # Normalize(mean 0.5, std 0.5)


def pixels_to_pil(pixels: torch.Tensor) -> list:
    """(B, 3, H, W) decoder output -> PIL images: clamp((x + 1) / 2, 0, 1) * 255, truncated to uint8."""
    x = torch.clamp((pixels.detach().float() + 1.0) / 2.0, 0.0, 1.0) * 255.0
    arrays = x.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)  # truncation, not rounding
    return [Image.fromarray(a) for a in arrays]


# ---------------------------------------------------------------------------------------------
# Checkpoints: hub layout (config.json + pytorch_model.safetensors; keys encoder./decoder./quantize.).


# Keys of a MAGVIT-v2 config.json that carry no architecture (the released file, 66 bytes, holds only the first
# two: its sizes are MagvitConfig's defaults).
_IGNORED_KEYS = {"_class_name", "_diffusers_version", "_name_or_path"}
# Nested settings, named as the arguments of the original classes: "encoder" / "decoder" (VQGANEncoder /
# VQGANDecoder) and "quantize" (LFQuantizer). _PART_FIXED are the values we build; others are refused.
# `resolution` only decides which level `attn_resolutions` names; the quantizer's loss weights only matter in
# training.
_PART_SIZES = ("ch", "ch_mult", "num_res_blocks", "z_channels")
_PART_FIXED = {"dropout": 0.0, "in_ch": 3, "out_ch": 3, "double_z": False}
_QUANTIZER_TRAINING = ("num_codebook_entry", "beta", "entropy_multiplier", "commit_loss_multiplier")


def _part_fields(part: str, settings: dict) -> dict:
    """One nested "encoder" / "decoder" dict -> the MagvitConfig fields it sets; refuses what we do not build."""
    unknown = set(settings) - {*_PART_SIZES, *_PART_FIXED, "attn_resolutions", "resolution"}
    if unknown:
        raise ValueError(f"unknown {part} settings {sorted(unknown)}")
    refused = [f"{k}={settings[k]}" for k, v in _PART_FIXED.items() if settings.get(k, v) != v]
    levels = len(settings.get("ch_mult", getattr(MagvitConfig, f"{part}_ch_mult")))
    sides = {settings.get("resolution", 256) // 2 ** i for i in range(levels)}  # each level's feature-map side
    if sides & set(settings.get("attn_resolutions", [])):  # the released [5] matches none: mid attention only
        refused.append("attention outside the middle block (attn_resolutions)")
    if refused:
        raise ValueError(f"{part} sets {', '.join(refused)}, which this MAGVIT-v2 does not implement")
    return {(k if k in ("ch", "z_channels") else f"{part}_{k}"): tuple(v) if isinstance(v, list) else v
            for k, v in settings.items() if k in _PART_SIZES}


def config_from_json(meta: dict) -> MagvitConfig:
    """A MAGVIT-v2 config.json -> MagvitConfig: our flat fields (save_magvitv2 writes them) and/or the original
    classes' nested settings; absent sizes keep the released architecture. Refuses keys it cannot honour and
    settings that disagree (the encoder and decoder share ch and z_channels; LFQ codes are z_channels bits)."""
    meta = {k: v for k, v in meta.items() if k not in _IGNORED_KEYS}
    known = {f.name for f in fields(MagvitConfig)}
    unknown = set(meta) - known - {"encoder", "decoder", "quantize"}
    if unknown:
        raise ValueError(f"unknown MAGVIT-v2 config keys {sorted(unknown)}")
    values = {}  # field -> (value, where it was set)
    settings = [(k, {k: tuple(v) if isinstance(v, list) else v}) for k, v in meta.items() if k in known]
    settings += [(part, _part_fields(part, meta[part])) for part in ("encoder", "decoder") if part in meta]
    quantize = dict(meta.get("quantize", {}))
    if set(quantize) - {"codebook_dim", *_QUANTIZER_TRAINING}:
        raise ValueError(f"unknown quantize settings {sorted(set(quantize) - {'codebook_dim', *_QUANTIZER_TRAINING})}")
    if "codebook_dim" in quantize:
        settings.append(("quantize", {"z_channels": quantize["codebook_dim"]}))  # LFQ: one bit per latent channel
    for where, fields_set in settings:
        for name, value in fields_set.items():
            if name in values and values[name][0] != value:
                raise ValueError(f"{name} is {values[name][0]} in {values[name][1]} but {value} in {where}")
            values.setdefault(name, (value, where))
    return MagvitConfig(**{name: value for name, (value, _) in values.items()})


def load_magvitv2(path_or_hub_id: str, device=None, dtype=None) -> MAGVITv2:
    """Released MAGVIT-v2 (or one saved by save_magvitv2) -> MAGVITv2 in eval mode."""
    folder = Path(path_or_hub_id)
    if not folder.exists():  # a hub id: fetch it (the tests reach this only offline, to check the error)
        if path_or_hub_id.count("/") != 1 or path_or_hub_id.startswith((".", "/")):
            raise FileNotFoundError(f"no checkpoint folder at {path_or_hub_id}")
        from models.common import fetch_from_hub
        from models.showo import SHOWO_OFFLINE

        folder = fetch_from_hub(path_or_hub_id, ["config.json", WEIGHTS_NAME], where=SHOWO_OFFLINE)
    if not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{folder} has no {WEIGHTS_NAME} (the pickled .bin is not read)")
    meta = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    try:
        cfg = config_from_json(meta)
    except ValueError as err:
        raise ValueError(f"{folder / 'config.json'}: {err}") from err
    state = load_file(folder / WEIGHTS_NAME)
    with torch.device("meta"):
        model = MAGVITv2(cfg)
    want = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (config: {tuple(want[k].shape)})" for k, v in state.items()
             if k in want and v.shape != want[k].shape]
    if wrong:
        raise ValueError(f"{folder}: the weights do not have the sizes its config.json describes: "
                         f"{', '.join(wrong[:3])}")
    model.quantize = LFQuantizer(cfg.z_channels)  # real buffers: recomputed, not trusted
    for name, value in model.quantize.state_dict().items():
        stored = state.pop("quantize." + name, None)
        if stored is not None and not torch.equal(stored.to(value.dtype), value):
            raise ValueError(f"stored quantize.{name} differs from the LFQ rule")
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    state.update({"quantize." + k: v for k, v in model.quantize.state_dict().items()})
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise KeyError(f"{folder / WEIGHTS_NAME}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    model.load_state_dict(state, strict=True, assign=True)
    if dtype is not None:
        model.quantize.embedding = model.quantize.embedding.to(dtype)  # ±1 is exact in any float dtype
    return (model if device is None else model.to(device)).eval()


def save_magvitv2(model: MAGVITv2, directory, state_dict: dict | None = None) -> None:
    """Write config.json + pytorch_model.safetensors atomically (temp folder, then rename)."""
    from models.common import atomic_folder

    with atomic_folder(directory) as tmp:
        (tmp / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2", **asdict(model.config)}, indent=2))
        source = model.state_dict() if state_dict is None else state_dict  # a gathered one under FSDP
        state = {k: v.detach().contiguous().cpu() for k, v in source.items()}
        save_file(state, tmp / WEIGHTS_NAME, metadata={"format": "pt"})
