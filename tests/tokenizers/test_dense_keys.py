"""The full-size depth/normal/semseg decoders match the official checkpoints key for key.

Built on the meta device from the official config.json: our decoder's keys plus the declared encoder half
must be exactly the official key set, with the same shapes and the same parameter/buffer kinds.
"""

import pytest
import torch

from fourm_ros.tokenizers.divae import DiVAEConfig, DiVAEDecoder
from fourm_ros.tokenizers.semseg import SemsegConfig, SemsegDecoder


def _full_size(kind: str, config: dict) -> torch.nn.Module:
    with torch.device("meta"):
        if kind == "semseg":
            return SemsegDecoder(SemsegConfig.from_json(config))
        return DiVAEDecoder(DiVAEConfig.from_json(config))


def _entries(module: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    entries = {name: (tuple(p.shape), "param") for name, p in module.named_parameters()}
    entries.update({name: (tuple(b.shape), "buffer") for name, b in module.named_buffers()})
    return entries


@pytest.mark.parametrize("kind", ["depth", "normal", "semseg"])
def test_decoder_plus_encoder_half_is_exactly_the_official_key_set(kind, synthetic):
    official = {name: (shape, role) for name, shape, role in synthetic.official_keys(kind)}
    is_encoder_key = synthetic.is_encoder_key(kind)
    ours = _entries(_full_size(kind, synthetic.official_config(kind)))

    assert not [name for name in ours if is_encoder_key(name)], "a decoder key is classed as encoder half"
    encoder_half = {name for name in official if is_encoder_key(name)}
    assert set(ours) | encoder_half == set(official)
    assert {name: official[name] for name in ours} == ours


@pytest.mark.parametrize(
    ("kind", "decoder_params"), [("depth", 196_202_768), ("normal", 196_350_256), ("semseg", 116_785_664)]
)
def test_full_size_decoders_have_the_official_parameter_count(kind, decoder_params, synthetic):
    module = _full_size(kind, synthetic.official_config(kind))
    assert sum(p.numel() for p in module.parameters()) == decoder_params
    official = sum(
        torch.Size(shape).numel()
        for name, shape, role in synthetic.official_keys(kind)
        if role == "param" and not synthetic.is_encoder_key(kind)(name)
    )
    assert official == decoder_params
