"""MAGVIT-v2 tokenizer (models/magvitv2.py): names, the LFQ bit rule, tiny encode/decode, checkpoints."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root, when run as plain `pytest`
from models.magvitv2 import (LFQuantizer, MAGVITv2, load_magvitv2, magvitv2_config, magvitv2_tiny_config,
                             pixels_to_pil, preprocess_image, save_magvitv2)

torch.set_num_threads(1)
REFERENCE = Path(__file__).resolve().parent / "data"  # the released checkpoints' parameter names and shapes
TINY = magvitv2_tiny_config()  # 16 px <-> 4x4 codes, 64 codes


def tiny_model(seed=0) -> MAGVITv2:
    torch.manual_seed(seed)
    return MAGVITv2(TINY).eval()


def test_real_config_matches_released_names_and_shapes():
    with torch.device("meta"):
        model = MAGVITv2(magvitv2_config())
    want = json.loads((REFERENCE / "magvitv2_params.json").read_text())
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == want
    assert sum(p.numel() for p in model.parameters()) == 95_387_004


def test_lfq_bit_rule():
    q = LFQuantizer(13)
    assert q.power_vals.tolist() == [2 ** i for i in range(12, -1, -1)] and q.power_vals.dtype == torch.int64
    assert q.embedding.shape == (8192, 13) and q.embedding.dtype == torch.float32
    assert q.embedding[0].tolist() == [-1.0] * 13 and q.embedding[8191].tolist() == [1.0] * 13
    assert q.embedding[4096].tolist() == [1.0] + [-1.0] * 12  # column 0 is the most significant bit
    assert q.embedding[1].tolist() == [-1.0] * 12 + [1.0]
    z = -torch.ones(1, 13, 1, 3)
    z[0, 0, 0, 0] = 0.5                      # -> 4096
    z[0, 11, 0, 1], z[0, 12, 0, 1] = 2.0, 0.0  # -> 2: exactly zero counts as negative
    z[0, :, 0, 2] = 1e-3                     # -> 8191
    assert q.codes_from_latents(z).tolist() == [[4096, 2, 8191]]
    codes = torch.arange(8192)[None]  # every code survives latents -> codes, on a 64 x 128 grid
    assert torch.equal(q.codes_from_latents(q.latents_from_codes(codes, hw=(64, 128))), codes)


def test_tiny_encode_decode_shapes_and_ranges():
    model = tiny_model()
    pixels = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        codes = model.encode_images(pixels)
        assert codes.shape == (2, 16) and codes.dtype == torch.long
        assert 0 <= codes.min() and codes.max() < TINY.codebook_size == 64
        out = model.decode_codes(codes)
        assert out.shape == (2, 3, 16, 16)
        assert model.decode_codes(codes[:, :8], hw=(2, 4)).shape == (2, 3, 8, 16)  # non-square grid
        assert model.encode_images(torch.rand(1, 3, 32, 16)).shape == (1, 8 * 4)  # fully convolutional
        with pytest.raises(ValueError):
            model.decode_codes(codes[:, :8])  # 8 codes are no square


def test_decode_onehot_equals_decode_codes_and_is_differentiable():
    model = tiny_model()
    codes = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.decode_onehot(F.one_hot(codes, 64).float()), model.decode_codes(codes))
    probs = torch.softmax(torch.randn(1, 16, 64), -1).requires_grad_()
    model.decode_onehot(probs).square().mean().backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0


def test_hand_written_hub_checkpoint_loads(tmp_path):
    model = tiny_model(seed=1)
    folder = tmp_path / "magvitv2-tiny"
    folder.mkdir()
    config = {"_class_name": "MAGVITv2", "_diffusers_version": "0.30.1",
              **{k: list(v) if isinstance(v, tuple) else v for k, v in TINY.__dict__.items()}}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "pytorch_model.safetensors")
    loaded = load_magvitv2(str(folder))
    assert loaded.config == TINY
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    pixels = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.encode_images(pixels), model.encode_images(pixels))
    # quantizer buffers are optional in the file (recomputed) but must follow the rule when present
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("quantize.")}
    save_file(state, folder / "pytorch_model.safetensors")
    assert torch.equal(load_magvitv2(str(folder)).quantize.embedding, model.quantize.embedding)
    save_file({**state, "quantize.embedding": -model.quantize.embedding}, folder / "pytorch_model.safetensors")
    with pytest.raises(ValueError, match="quantize.embedding"):
        load_magvitv2(str(folder))
    with pytest.raises(FileNotFoundError):
        load_magvitv2(str(tmp_path / "missing"))


def hub_folder(folder: Path, model: MAGVITv2, config: dict) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2", "_diffusers_version": "0.30.1",
                                                    **config}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "pytorch_model.safetensors")
    return folder


# TINY in the original classes' own argument names (VQGANEncoder / VQGANDecoder / LFQuantizer)
NESTED = {"encoder": {"ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": [1, 1, 1], "attn_resolutions": [5],
                      "dropout": 0.0, "in_ch": 3, "out_ch": 3, "resolution": 256, "z_channels": 6, "double_z": False},
          "decoder": {"ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": [1, 1, 1], "z_channels": 6},
          "quantize": {"codebook_dim": 6, "beta": 0.25}}


def test_nested_settings_of_the_original_classes_build_their_sizes(tmp_path):
    model = tiny_model(seed=3)
    loaded = load_magvitv2(str(hub_folder(tmp_path / "nested", model, NESTED)))
    assert loaded.config == TINY
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("config,error", [
    ({**NESTED, "encoder": {**NESTED["encoder"], "double_z": True}}, "encoder sets double_z=True"),
    ({**NESTED, "decoder": {**NESTED["decoder"], "attn_resolutions": [64]}}, "attention outside the middle block"),
    ({**NESTED, "decoder": {**NESTED["decoder"], "z_channels": 5}}, "z_channels is 6 in encoder but 5 in decoder"),
    ({**NESTED, "quantize": {"codebook_dim": 13}}, "z_channels is 6 in encoder but 13 in quantize"),
    ({**NESTED, "encoder": {**NESTED["encoder"], "attn_type": "vanilla"}}, "unknown encoder settings"),
    ({**NESTED, "quantizer": {"codebook_dim": 6}}, "unknown MAGVIT-v2 config keys"),
    ({"quantize": {"codebook_dim": 6}}, "do not have the sizes its config.json describes"),  # the rest default
])
def test_loader_refuses_settings_it_cannot_honour(tmp_path, config, error):
    with pytest.raises(ValueError, match=error):
        load_magvitv2(str(hub_folder(tmp_path / "vq", tiny_model(), config)))


def test_save_then_load_is_exact(tmp_path):
    model = tiny_model(seed=2)
    save_magvitv2(model, tmp_path / "vq")
    save_magvitv2(model, tmp_path / "vq")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vq"]
    loaded = load_magvitv2(str(tmp_path / "vq"))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    half = load_magvitv2(str(tmp_path / "vq"), dtype=torch.bfloat16)
    assert half.quantize.embedding.dtype == torch.bfloat16 and half.quantize.power_vals.dtype == torch.int64
    assert half.decode_codes(torch.zeros(1, 16, dtype=torch.long)).dtype == torch.bfloat16


def test_pixel_conversions():
    flat = preprocess_image(Image.new("RGB", (40, 20), (255, 0, 128)), 16)
    assert flat.shape == (3, 16, 16) and flat[0].eq(1.0).all() and flat[1].eq(-1.0).all()
    assert torch.allclose(flat[2], torch.tensor(128 / 255 * 2 - 1), atol=1e-6)
    noise = np.random.default_rng(0).integers(0, 256, (20, 45, 3), dtype=np.uint8)
    image = Image.fromarray(noise)  # 45 x 20: short side 20 -> 16, long 45 -> int(36.0) = 36, left = 10
    want = np.asarray(image.resize((36, 16), Image.BICUBIC))[:, 10:26]
    want = torch.from_numpy(want.copy()).permute(2, 0, 1).float() / 255 * 2 - 1
    torch.testing.assert_close(preprocess_image(image, 16), want, atol=1e-6, rtol=0)
    pixels = torch.tensor([-1.5, -1.0, 0.0031, 1.0, 2.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    (pil,) = pixels_to_pil(pixels)
    rgb = np.asarray(pil)  # (1, 5, 3) uint8
    assert rgb[0, :, 0].tolist() == [0, 0, 127, 255, 255]  # 127.9 truncates to 127, not 128
    assert (rgb[0, 2] == 127).all()
