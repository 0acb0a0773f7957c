"""FourM.from_pretrained loads synthetic checkpoints in the official layout strictly and safely."""

import json

import pytest
import torch
from safetensors.torch import save_file

from fourm_ros.checkpoint import CheckpointError
from fourm_ros.model import FourM, FourMConfig
from fourm_ros.model.layers import sincos_1d, sincos_2d

CONFIG = FourMConfig(
    dim=32,
    encoder_depth=1,
    decoder_depth=1,
    num_heads=2,
    domains_in=("rgb@224", "tok_depth@224", "caption"),
    domains_out=("tok_depth@224", "tok_semseg@224", "caption"),
)
ALL_IN, ALL_OUT = CONFIG.encoder_modalities, CONFIG.decoder_modalities


def _official(seed=1) -> dict[str, torch.Tensor]:
    """A full checkpoint state (parameters and buffers) of CONFIG with random weights."""
    return {k: v.clone() for k, v in FourM(CONFIG, ALL_IN, ALL_OUT, seed=seed).state_dict().items()}


def _write(directory, tensors, config=None):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config or CONFIG.to_dict()))
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


@pytest.fixture(scope="module")
def official():
    return _official()


def test_save_load_round_trip_restores_every_tensor_and_output(tmp_path, official):
    model = FourM.from_pretrained(_write(tmp_path / "ckpt", official), ALL_IN, ALL_OUT)
    loaded = model.state_dict()
    assert set(loaded) == set(official)
    assert all(torch.equal(loaded[k], official[k]) for k in official)
    reference = FourM(CONFIG, ALL_IN, ALL_OUT, seed=1)
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(image), reference.encode(image), atol=0, rtol=0)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_a_subset_of_modalities_loads_from_a_full_checkpoint(tmp_path, official):
    model = FourM.from_pretrained(_write(tmp_path / "ckpt", official), ("rgb@224",), ("tok_semseg@224",))
    loaded = model.state_dict()
    assert not any("tok_depth" in k or "caption" in k for k in loaded)
    assert all(torch.equal(v, official[k]) for k, v in loaded.items())


def test_absent_sincos_tables_and_norm_biases_are_computed(tmp_path, official):
    buffers = {name for name, _ in FourM(CONFIG, ALL_IN, ALL_OUT, device="meta").named_buffers()}
    weights = {k: v for k, v in official.items() if k not in buffers}
    model = FourM.from_pretrained(_write(tmp_path / "ckpt", weights), ALL_IN, ALL_OUT)
    assert torch.equal(model.encoder_embeddings["rgb@224"].pos_emb, sincos_2d(14, 32))
    assert torch.equal(model.decoder_embeddings["caption"].pos_emb, sincos_1d(512, 32))
    assert torch.equal(model.encoder[0].norm1.bias, torch.zeros(32))
    assert all(torch.equal(model.state_dict()[k], official[k]) for k in buffers)


def test_load_in_bfloat16(tmp_path, official):
    model = FourM.from_pretrained(
        _write(tmp_path / "ckpt", official), dtype=torch.bfloat16, outputs=("caption",)
    )
    assert {t.dtype for t in model.state_dict().values()} == {torch.bfloat16}
    torch.testing.assert_close(model.mask_token.float(), official["mask_token"], atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.pop("decoder.0.mlp.fc1.weight"), r"missing keys \(1\): decoder\.0\.mlp\.fc1\.weight"),
        (
            lambda t: t.update({"mask_token": torch.zeros(1, 1, 16)}),
            r"mask_token: file \[1, 1, 16\] vs module",
        ),
        (lambda t: t.update({"encoder_embeddings.det.mod_emb": torch.zeros(1)}), "unexpected keys"),
        (lambda t: t.update({"head.weight": torch.zeros(1)}), r"unexpected keys \(1\): head\.weight"),
    ],
)
def test_key_and_shape_mismatches_are_named(tmp_path, official, edit, message):
    tensors = dict(official)
    edit(tensors)
    with pytest.raises(CheckpointError, match=message):
        FourM.from_pretrained(_write(tmp_path / "ckpt", tensors), ALL_IN, ALL_OUT)


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    directory = _write(tmp_path / "ckpt", {"x": torch.zeros(1)})
    (directory / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        FourM.from_pretrained(directory, ALL_IN, ALL_OUT)


def test_pickle_checkpoint_is_refused_without_unpickling(tmp_path):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(CONFIG.to_dict()))
    (directory / "pytorch_model.bin").write_bytes(b"not even a pickle")
    with pytest.raises(CheckpointError, match="pickle-based"):
        FourM.from_pretrained(directory)


def test_unsupported_architecture_in_config_is_a_checkpoint_error(tmp_path, official):
    directory = _write(tmp_path / "ckpt", official, {**CONFIG.to_dict(), "act_layer": "GELU"})
    with pytest.raises(CheckpointError, match=r"config\.json: config act_layer='GELU' is not supported"):
        FourM.from_pretrained(directory)


def test_selecting_a_modality_the_checkpoint_lacks_is_an_error(tmp_path, official):
    with pytest.raises(ValueError, match=r"outputs \['human_poses'\] are not decoder modalities"):
        FourM.from_pretrained(_write(tmp_path / "ckpt", official), outputs=("human_poses",))


def test_random_init_is_deterministic_in_the_seed():
    a, b, c = (FourM(CONFIG, ALL_IN, ALL_OUT, seed=s).state_dict() for s in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["decoder.0.mlp.fc1.weight"], c["decoder.0.mlp.fc1.weight"])
    assert torch.equal(a["encoder_norm.weight"], torch.ones(32))
