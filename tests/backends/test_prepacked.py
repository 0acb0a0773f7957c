"""bfloat16 layers with weights reordered once for oneDNN compute what the plain layers compute."""

import copy

import pytest
import torch
from torch import nn

from fourm_ros.backends import prepacked
from fourm_ros.backends.graphs import DiffusionX0, SegmentationLabels
from fourm_ros.backends.prepacked import PrepackedConv2d, PrepackedLinear, prepack_weights
from fourm_ros.backends.torch_backend import TorchBackend
from fourm_ros.tokenizers.unet import GroupNorm32

needs_onednn_bf16 = pytest.mark.skipif(
    not prepacked._onednn_has_bfloat16(), reason="oneDNN has no bfloat16 kernels on this CPU"
)


def _net(dtype: torch.dtype) -> nn.Sequential:
    """Convolutions (3×3, 1×1, strided) and a linear layer, as in the UNets and the segmentation ViT."""
    torch.manual_seed(0)
    convolutions = (nn.Conv2d(8, 16, 3, padding=1), nn.SiLU(), nn.Conv2d(16, 4, 1), nn.Conv2d(4, 4, 3, 2))
    return nn.Sequential(*convolutions, nn.Flatten(), nn.Linear(4 * 9 * 9, 10)).to(dtype).eval()


def _input(batch: int) -> torch.Tensor:
    x = torch.randn(batch, 8, 20, 20, generator=torch.Generator().manual_seed(batch))
    return x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)


def _prepacked(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (PrepackedConv2d, PrepackedLinear))]


@needs_onednn_bf16
def test_prepacked_layers_give_the_same_bits_at_any_batch():
    plain, packed = _net(torch.bfloat16), _net(torch.bfloat16)
    assert prepack_weights(packed) == 4 and len(_prepacked(packed)) == 4
    assert packed.state_dict().keys() == plain.state_dict().keys()
    with torch.inference_mode():
        for batch in (1, 3, 1):  # reordered for the first call's shape, reused for the others
            assert torch.equal(packed(_input(batch)), plain(_input(batch)))
    assert all(layer._prepacked is not None for layer in _prepacked(packed)), "the reordered weights are kept"


@needs_onednn_bf16
def test_a_changed_weight_is_reordered_again():
    plain, packed = _net(torch.bfloat16), _net(torch.bfloat16)
    prepack_weights(packed)
    with torch.inference_mode():
        packed(_input(1))
    with torch.no_grad():
        for net in (plain, packed):
            net[0].weight.mul_(-2)
            net[-1].weight.mul_(3)
    with torch.inference_mode():
        assert torch.equal(packed(_input(1)), plain(_input(1)))
    packed.load_state_dict(_net(torch.bfloat16).state_dict())
    with torch.inference_mode():
        assert torch.equal(packed(_input(1)), _net(torch.bfloat16)(_input(1)))


@needs_onednn_bf16
@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:DeprecationWarning")
def test_float32_and_traced_layers_stay_plain():
    net = _net(torch.float32)
    assert prepack_weights(net) == 0 and not _prepacked(net)
    packed = _net(torch.bfloat16)
    prepack_weights(packed)
    with torch.no_grad():
        traced = torch.jit.trace(packed, _input(1))
    assert "mkldnn" not in str(traced.graph), "an export traces the plain layers"


@needs_onednn_bf16
def test_the_torch_backend_prepacks_its_bfloat16_stages(tiny):
    """The bfloat16 UNet and segmentation decoder give the same bits on the backend as the plain
    (channels-last) modules; float32 stages stay plain."""
    depth = DiffusionX0(copy.deepcopy(tiny.depth).to(torch.bfloat16))
    segmentation = SegmentationLabels(copy.deepcopy(tiny.segmentation).to(torch.bfloat16))
    fp32 = DiffusionX0(copy.deepcopy(tiny.normals))
    graphs = {"depth_x0": depth.eval(), "segmentation_labels": segmentation.eval(), "normals_x0": fp32.eval()}
    inputs = {name: dict(zip(g.spec.inputs, g.example_inputs(2), strict=True)) for name, g in graphs.items()}
    inputs["depth_x0"]["sample"].normal_(generator=torch.Generator().manual_seed(0))
    inputs["segmentation_labels"]["tokens"].random_(0, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = {
            name: copy.deepcopy(g).to(memory_format=torch.channels_last)(*inputs[name].values())
            for name, g in graphs.items()
        }
    backend = TorchBackend(graphs)
    assert _prepacked(depth) and _prepacked(segmentation) and not _prepacked(fp32)
    for _ in range(2):
        for name, graph in graphs.items():
            got = backend.run(name, **inputs[name])[graph.spec.outputs[0]]
            assert torch.equal(got, want[name]), name


def test_bfloat16_group_norm_equals_the_float32_round_trip():
    norm = GroupNorm32(64).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(2, 64, 28, 28).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = norm(x)
        want = torch.nn.functional.group_norm(
            x.float(), 32, norm.weight.float(), norm.bias.float(), norm.eps
        ).to(torch.bfloat16)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, atol=0, rtol=2**-7)  # within one bfloat16 rounding step
