"""Module layout equals the official checkpoints; configs are parsed strictly."""

import json

import pytest
import torch
from support import KEYS_DIR

from fourm_ros.model import DEFAULT_OUTPUTS, FourM, FourMConfig

# 4M-21_L config.json values (4m21.md §2.1); B and XL differ only in dim / depths / heads.
L_CONFIG = {
    "act_layer": "SiLU",
    "decoder_depth": 24,
    "dim": 1024,
    "domains_in": [
        "caption",
        "t5_caption",
        "det",
        "metadata",
        "human_poses",
        "color_palette",
        "sam_instance",
        "rgb@224",
        "tok_rgb@224",
        "tok_normal@224",
        "tok_depth@224",
        "tok_semseg@224",
        "tok_clip@224",
        "tok_dinov2@224",
        "tok_dinov2_global",
        "tok_imagebind@224",
        "tok_imagebind_global",
        "tok_sam_edge@224",
        "tok_canny_edge@224",
    ],
    "encoder_depth": 24,
    "gated_mlp": True,
    "image_size": 224,
    "mlp_bias": False,
    "mlp_ratio": 4,
    "norm_bias": False,
    "num_heads": 16,
    "patch_size": 16,
    "proj_bias": False,
    "qkv_bias": False,
    "share_modality_embeddings": False,
}
L_CONFIG["domains_out"] = [name for name in L_CONFIG["domains_in"] if name != "rgb@224"]


def _layout(module: torch.nn.Module) -> dict[str, tuple[list[int], str]]:
    layout = {name: (list(p.shape), "param") for name, p in module.named_parameters()}
    layout.update({name: (list(b.shape), "buffer") for name, b in module.named_buffers()})
    return layout


@pytest.mark.parametrize("size", ["B", "L", "XL"])
def test_all_modalities_module_has_exactly_the_official_keys_shapes_and_kinds(size):
    config = FourMConfig.preset(size)
    model = FourM(config, config.encoder_modalities, config.decoder_modalities, device="meta")
    official = {
        name: (shape, kind)
        for name, shape, kind in json.loads((KEYS_DIR / f"fm21_{size}_keys.json").read_text())
    }
    assert _layout(model) == official
    assert set(model.state_dict()) == set(official)


def test_default_job_holds_only_its_modalities_and_fits_1gb_in_fp16():
    config = FourMConfig.preset("B")
    model = FourM(config, device="meta", dtype=torch.float16)
    official = {
        name: (shape, kind) for name, shape, kind in json.loads((KEYS_DIR / "fm21_B_keys.json").read_text())
    }
    layout = _layout(model)
    assert all(official[name] == entry for name, entry in layout.items())
    embedded = {
        name.split(".")[1]
        for name in layout
        if name.startswith(("encoder_embeddings.", "decoder_embeddings."))
    }
    assert embedded == {"rgb@224", *DEFAULT_OUTPUTS}
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert 0.5e9 < size < 1.0e9  # 4m21.md: ~0.61 GB of parameters


def test_l_config_json_parses_and_round_trips():
    config = FourMConfig.from_dict(L_CONFIG)
    assert (config.dim, config.encoder_depth, config.num_heads, config.mlp_hidden) == (1024, 24, 16, 2730)
    assert config == FourMConfig.preset("L")
    assert "t5_caption" not in config.decoder_modalities and "rgb@224" in config.encoder_modalities
    assert FourMConfig.from_dict(config.to_dict()) == config
    assert FourMConfig.preset("XL").mlp_hidden == 5461 and FourMConfig.preset("B").mlp_hidden == 2048


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"act_layer": "GELU"}, "act_layer='GELU' is not supported"),
        ({"gated_mlp": False}, "gated_mlp=False is not supported"),
        ({"qkv_bias": True}, "qkv_bias=True is not supported"),
        ({"norm_bias": True}, "norm_bias=True"),
        ({"qk_norm": True}, "qk_norm=True"),
        ({"share_modality_embeddings": None}, "share_modality_embeddings=True"),  # 4M-7 default: shared
        ({"image_size": 448}, "image_size 448"),
        ({"new_field": 1}, r"unknown config fields \['new_field'\]"),
        ({"dim": None}, r"missing required fields \['dim'\]"),
        ({"num_heads": 7}, "not divisible by num_heads"),
        ({"domains_in": ["rgb@448"]}, "unknown 4M-21 modality 'rgb@448'"),
    ],
)
def test_unsupported_or_unknown_config_values_are_rejected(change, message):
    values = {**L_CONFIG, **change}
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises((ValueError, KeyError), match=message):
        FourMConfig.from_dict(values)


def test_training_only_fields_are_ignored():
    extra = {"drop_path_rate_encoder": 0.1, "decoder_sep_mask": True, "use_act_checkpoint": False}
    assert FourMConfig.from_dict({**L_CONFIG, **extra}) == FourMConfig.preset("L")


def test_unknown_preset_and_bad_selection_are_clear_errors():
    with pytest.raises(ValueError, match="unknown 4M-21 size 'M'"):
        FourMConfig.preset("M")
    config = FourMConfig.preset("B")
    with pytest.raises(ValueError, match=r"outputs \['rgb@224'\] are not decoder modalities"):
        FourM(config, outputs=("rgb@224",), device="meta")
    with pytest.raises(KeyError, match="unknown 4M-21 modality 'x'"):
        FourM(config, inputs=("rgb@224", "x"), device="meta")
    small = FourMConfig(dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, domains_in=("rgb@224",))
    with pytest.raises(ValueError, match=r"inputs \['tok_depth@224'\] are not encoder modalities"):
        FourM(small, inputs=("rgb@224", "tok_depth@224"), device="meta")
    with pytest.raises(TypeError, match="sequences of modality names"):
        FourM(config, inputs="rgb@224", device="meta")
