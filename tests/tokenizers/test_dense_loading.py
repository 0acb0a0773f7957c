"""Loading the decoder half of a tokenizer checkpoint: strict, explicit about the encoder half."""

import pytest
import torch

from fourm_ros.checkpoint import CheckpointError

KINDS = ["depth", "normal", "semseg"]


def _decode(kind: str, module: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    if kind == "semseg":
        return module.logits(tokens)
    return module.decode(tokens, steps=2, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_round_trips_and_sets_the_encoder_half_aside(kind, synthetic, tmp_path):
    state = synthetic.checkpoint_state(kind, seed=7)
    loaded = synthetic.load(kind, synthetic.write(tmp_path, state, synthetic.config(kind)))

    expected = synthetic.decoder_state(kind, seed=7)
    assert loaded.state_dict().keys() == expected.keys()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert not any(p.requires_grad for p in loaded.parameters())
    assert not loaded.training
    convolutions = [t for t in loaded.state_dict().values() if t.dim() == 4]
    assert convolutions and all(t.is_contiguous(memory_format=torch.channels_last) for t in convolutions), (
        "loaded in the layout the torch backend computes in, so it never converts (copies) them"
    )
    tokens = torch.tensor([[[0, 15], [3, 9]]])
    reference = synthetic.decoder(kind, seed=7).to(memory_format=torch.channels_last)
    assert torch.equal(_decode(kind, loaded, tokens), _decode(kind, reference, tokens))


@pytest.mark.parametrize("kind", KINDS)
def test_a_key_outside_decoder_and_encoder_half_is_an_error(kind, synthetic, tmp_path):
    state = synthetic.checkpoint_state(kind)
    state["loss.perceptual.weight"] = torch.zeros(3)
    directory = synthetic.write(tmp_path, state, synthetic.config(kind))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): loss\.perceptual\.weight"):
        synthetic.load(kind, directory)


@pytest.mark.parametrize(
    ("kind", "key"), [("depth", "decoder.out.2.bias"), ("semseg", "post_quant_proj.weight")]
)
def test_a_missing_decoder_key_is_an_error(kind, key, synthetic, tmp_path):
    state = synthetic.checkpoint_state(kind)
    del state[key]
    directory = synthetic.write(tmp_path, state, synthetic.config(kind))
    with pytest.raises(CheckpointError, match=rf"missing keys \(1\): {key}"):
        synthetic.load(kind, directory)


def test_a_codebook_of_another_size_is_a_shape_error(synthetic, tmp_path):
    state = synthetic.checkpoint_state("normal")
    state["quantize._codebook.embed"] = torch.zeros(32, 8)
    directory = synthetic.write(tmp_path, state, synthetic.config("normal"))
    with pytest.raises(
        CheckpointError, match=r"quantize\._codebook\.embed: file \[32, 8\] vs module \[16, 8\]"
    ):
        synthetic.load("normal", directory)


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        (
            "depth",
            {"prediction_type": "epsilon"},
            r"prediction_type='epsilon' is not supported; expected 'sample'",
        ),
        ("depth", {"dec_type": "uvit_b"}, r"dec_type='uvit_b' is not supported"),
        ("normal", {"beta_schedule": "squaredcos_cap_v2"}, r"beta_schedule='squaredcos_cap_v2'"),
        ("normal", {"scheduler": "ddpm"}, r"scheduler='ddpm' is not supported; expected 'ddim'"),
        (
            "depth",
            {"thresholding": None},
            r"thresholding=True \(the reference's default: thresholding is absent\)",
        ),
        ("depth", {"n_channels": "1"}, r"n_channels='1' is not supported; expected a positive integer"),
        ("depth", {"clip_sample": "yes"}, r"clip_sample='yes' is not supported; expected true or false"),
        ("semseg", {"out_conv": True}, r"out_conv=True is not supported; expected False"),
        ("semseg", {"post_mlp": None}, r"post_mlp=False \(the reference's default"),
        ("semseg", {"n_labels": None}, r"n_labels=None \(the reference's default: n_labels is absent\)"),
        ("semseg", {"image_size": 30}, r"image size 30 is not a multiple of the patch size 4"),
    ],
)
def test_unsupported_config_values_are_refused_by_name(kind, change, message, synthetic, tmp_path):
    config = synthetic.config(kind)
    for field, value in change.items():
        if value is None:
            del config[field]
        else:
            config[field] = value
    directory = synthetic.write(tmp_path, synthetic.checkpoint_state(kind), config)
    with pytest.raises(CheckpointError, match=message):
        synthetic.load(kind, directory)


def test_decoder_image_size_overrides_the_encoder_one(synthetic, tmp_path):
    config = {**synthetic.config("semseg"), "image_size": 448, "image_size_dec": 32}
    directory = synthetic.write(tmp_path, synthetic.checkpoint_state("semseg"), config)
    assert synthetic.load("semseg", directory).decoder.pos_emb.shape[-1] == 8


@pytest.mark.parametrize("kind", ["depth", "semseg"])
def test_bfloat16_loading_decodes_close_to_float32(kind, synthetic, tmp_path):
    directory = synthetic.write(tmp_path, synthetic.checkpoint_state(kind), synthetic.config(kind))
    half = synthetic.load(kind, directory, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    tokens = torch.tensor([[[1, 2], [3, 4]]])
    full = _decode(kind, synthetic.load(kind, directory), tokens).float()
    low = _decode(kind, half, tokens).float()
    assert low.shape == full.shape
    assert (low - full).abs().max() < 0.1 * full.abs().max()
