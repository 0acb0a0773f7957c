"""What the pipeline receives: semseg labels and class table, relative depth, unit normals, token checks."""

import json
from importlib import resources

import numpy as np
import pytest
import torch

from fourm_ros.tokenizers.divae import relative_depth, unit_normals
from fourm_ros.tokenizers.semseg import semseg_classes, semseg_palette
from fourm_ros.tokenizers.unet import PatchedUNet


def _coco() -> list[dict]:
    text = resources.files("fourm_ros").joinpath("data/coco_panoptic_133.json").read_text(encoding="utf-8")
    return json.loads(text)["classes"]


def test_label_0_is_unlabeled_and_label_k_is_coco_panoptic_class_k_minus_1():
    classes, coco = semseg_classes(), _coco()
    assert len(classes) == 134
    assert (classes[0].id, classes[0].name, classes[0].isthing, classes[0].color) == (
        0,
        "unlabeled",
        False,
        (0, 0, 0),
    )
    for k in range(1, 134):
        assert classes[k].id == k
        assert (classes[k].name, classes[k].isthing, classes[k].color) == (
            coco[k - 1]["name"],
            coco[k - 1]["isthing"],
            tuple(coco[k - 1]["color"]),
        )
    assert classes[1].name == "person"
    # 4M-21 paper's walkable set uses 0-based panoptic ids, e.g. 100 = road → label 101.
    assert classes[101].name == "road"


def test_palette_colours_a_label_map():
    palette = semseg_palette()
    assert palette.shape == (134, 3) and palette.dtype == np.uint8
    labels = np.array([[0, 1], [133, 1]])
    assert palette[labels][0, 1].tolist() == [220, 20, 60]
    assert palette[labels][0, 0].tolist() == [0, 0, 0]


def test_decode_is_the_argmax_label_of_the_logits(synthetic):
    model = synthetic.decoder("semseg", seed=4)
    tokens = torch.tensor([[[0, 5, 9], [1, 2, 3]]])
    labels = model.decode(tokens)
    assert labels.dtype == torch.long and labels.shape == (1, 8, 12)
    assert torch.equal(labels, model.logits(tokens).argmax(dim=1))
    assert len(labels.unique()) > 1


def test_each_token_projects_to_a_channel_row_column_patch(synthetic):
    # out_proj output index = channel·p² + row·p + column: make label (row·p + column) mod 5 win everywhere.
    model = synthetic.decoder("semseg")
    p, labels = model.config.patch_size, model.config.n_labels
    with torch.no_grad():
        model.decoder.out_proj.weight.zero_()
        bias = torch.zeros(labels, p, p)
        for row in range(p):
            for column in range(p):
                bias[(row * p + column) % labels, row, column] = 1.0
        model.decoder.out_proj.bias.copy_(bias.flatten())
    decoded = model.decode(torch.zeros(1, 2, 3, dtype=torch.long))
    rows, columns = torch.meshgrid(torch.arange(2 * p), torch.arange(3 * p), indexing="ij")
    assert torch.equal(decoded[0], ((rows % p) * p + columns % p) % labels)


def test_relative_depth_drops_the_channel_axis():
    output = torch.randn(2, 1, 4, 6)
    depth = relative_depth(output)
    assert depth.dtype == np.float32 and depth.shape == (2, 4, 6)
    np.testing.assert_array_equal(depth, output[:, 0].numpy())
    with pytest.raises(ValueError, match=r"depth output must have shape \[B, 1, H, W\], got \[2, 3, 4, 6\]"):
        relative_depth(torch.zeros(2, 3, 4, 6))


def test_unit_normals_are_channel_last_unit_vectors_and_zero_stays_zero():
    output = torch.zeros(1, 3, 2, 2, dtype=torch.bfloat16)
    output[0, :, 0, 1] = torch.tensor([0.375, 0.0, 0.5])  # length 0.625 → (0.6, 0, 0.8)
    output[0, :, 1, 0] = torch.tensor([-1.0, 1.0, 0.0])
    output[0, :, 1, 1] = torch.tensor([0.0, 0.0, -0.25])
    normals = unit_normals(output)
    assert normals.dtype == np.float32 and normals.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(normals[0, 0, 1], [0.6, 0.0, 0.8], atol=1e-6)
    np.testing.assert_allclose(normals[0, 1, 0], [-(0.5**0.5), 0.5**0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(normals[0, 1, 1], [0.0, 0.0, -1.0], atol=1e-6)
    np.testing.assert_array_equal(normals[0, 0, 0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"normal output must have shape \[B, 3, H, W\]"):
        unit_normals(torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize(
    ("tokens", "error", "message"),
    [
        (
            torch.zeros(1, 2, 2),
            TypeError,
            r"tokens must be an integer tensor \(torch.long\), got torch.float32",
        ),
        (torch.zeros(4, dtype=torch.long), ValueError, r"tokens must have shape \[B, h, w\].*got \[4\]"),
        (torch.tensor([[[0, 16]]]), ValueError, r"token ids must lie in \[0, 15\], got values in \[0, 16\]"),
        (torch.tensor([[[-1, 3]]]), ValueError, r"got values in \[-1, 3\]"),
        ([[[0]]], TypeError, r"tokens must be a torch.Tensor"),
    ],
)
@pytest.mark.parametrize("kind", ["depth", "semseg"])
def test_bad_tokens_are_refused_with_the_expected_form(kind, tokens, error, message, synthetic):
    model = synthetic.decoder(kind)
    with pytest.raises(error, match=message):
        model.decode(tokens)


def test_unet_refuses_images_its_downsampling_cannot_halve(synthetic):
    unet = PatchedUNet(1, 8, synthetic.unet)
    with pytest.raises(
        ValueError, match=r"image size 36x36 is not supported: H/4 and W/4 must be multiples of 4"
    ):
        unet(torch.zeros(1, 1, 36, 36), 999, torch.zeros(1, 8, 3, 3))
    with pytest.raises(ValueError, match=r"sample must be \[B, 1, H, W\]"):
        unet(torch.zeros(1, 3, 32, 32), 999, torch.zeros(1, 8, 2, 2))


def test_optical_frame_normals_flip_only_the_viewing_axis():
    from fourm_ros.tokenizers.divae import optical_frame_normals

    encoded = np.array([[0.6, -0.8, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)  # training encoding
    np.testing.assert_allclose(
        optical_frame_normals(encoded), [[0.6, -0.8, 0.0], [0.0, 0.0, -1.0]], rtol=1e-6
    )
