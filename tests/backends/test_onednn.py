"""Layers on oneDNN's kernels compute what the plain layers compute: bfloat16 bit for bit with weights
reordered once, float32 within float32 rounding."""

import copy

import pytest
import torch
from torch import nn

from fourm_ros.backends import onednn
from fourm_ros.backends.graphs import DiffusionX0, SegmentationLabels, SequenceLogits
from fourm_ros.backends.onednn import OneDnnConv2d, OneDnnLinear, use_onednn
from fourm_ros.backends.torch_backend import TorchBackend
from fourm_ros.tokenizers.unet import GroupNorm32

needs_onednn_bf16 = pytest.mark.skipif(
    not onednn.onednn_has_bfloat16(), reason="oneDNN has no bfloat16 kernels on this CPU"
)
needs_x86_onednn = pytest.mark.skipif(
    not onednn.onednn_float32_linear(), reason="float32 linear layers move to oneDNN on x86_64 only"
)


def _net(dtype: torch.dtype) -> nn.Sequential:
    """Convolutions (3×3, 1×1, strided) and a linear layer, as in the UNets and the segmentation ViT."""
    torch.manual_seed(0)
    convolutions = (nn.Conv2d(8, 16, 3, padding=1), nn.SiLU(), nn.Conv2d(16, 4, 1), nn.Conv2d(4, 4, 3, 2))
    return nn.Sequential(*convolutions, nn.Flatten(), nn.Linear(4 * 9 * 9, 10)).to(dtype).eval()


def _input(batch: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    x = torch.randn(batch, 8, 20, 20, generator=torch.Generator().manual_seed(batch))
    return x.to(dtype).contiguous(memory_format=torch.channels_last)


def _onednn(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (OneDnnConv2d, OneDnnLinear))]


@needs_onednn_bf16
def test_bfloat16_layers_give_the_same_bits_at_any_batch():
    plain, fast = _net(torch.bfloat16), _net(torch.bfloat16)
    assert use_onednn(fast) == 4 and len(_onednn(fast)) == 4
    assert fast.state_dict().keys() == plain.state_dict().keys()
    with torch.inference_mode():
        for batch in (1, 3, 1):  # reordered for the first call's shape, reused for the others
            assert torch.equal(fast(_input(batch)), plain(_input(batch)))
    assert all(layer._prepacked is not None for layer in _onednn(fast)), "the reordered weights are kept"
    copied = copy.deepcopy(fast)
    assert all(layer._prepacked is None for layer in _onednn(copied)), "a copy makes its own"
    with torch.inference_mode():
        assert torch.equal(copied(_input(2)), plain(_input(2)))


@needs_onednn_bf16
def test_a_changed_weight_is_reordered_again():
    plain, fast = _net(torch.bfloat16), _net(torch.bfloat16)
    use_onednn(fast)
    with torch.inference_mode():
        fast(_input(1))
    with torch.no_grad():
        for net in (plain, fast):
            net[0].weight.mul_(-2)
            net[-1].weight.mul_(3)
    with torch.inference_mode():
        assert torch.equal(fast(_input(1)), plain(_input(1)))
    fast.load_state_dict(_net(torch.bfloat16).state_dict())
    with torch.inference_mode():
        assert torch.equal(fast(_input(1)), _net(torch.bfloat16)(_input(1)))


@needs_onednn_bf16
def test_weights_made_in_inference_mode_are_reordered_once():
    """Inference tensors have no version counter (the tiny test components are made that way)."""
    with torch.inference_mode():
        fast = _net(torch.bfloat16)
    assert fast[0].weight.is_inference()
    use_onednn(fast)
    with torch.inference_mode():
        assert torch.equal(fast(_input(1)), _net(torch.bfloat16)(_input(1)))
        first = fast[0]._prepacked[1]
        fast(_input(2))
    assert fast[0]._prepacked[1] is first


def test_without_bfloat16_kernels_bfloat16_layers_stay_plain(monkeypatch):
    """A CPU without native bf16 (AVX2 only): no bf16 layer is converted, and a float32 linear layer that
    was converted and is later cast to bf16 takes the plain path, reordering nothing."""
    monkeypatch.setattr(onednn, "onednn_has_bfloat16", lambda: False)
    plain, kept = _net(torch.bfloat16), _net(torch.bfloat16)
    assert use_onednn(kept) == 0 and not _onednn(kept)
    cast = _net(torch.float32)
    use_onednn(cast)
    cast.to(torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(kept(_input(2)), plain(_input(2)))
        assert torch.equal(cast(_input(2)), plain(_input(2)))
    assert all(layer._prepacked is None for layer in _onednn(cast))


@needs_x86_onednn
def test_float32_linear_layers_run_on_onednn_within_rounding():
    plain, fast = _net(torch.float32), _net(torch.float32)
    assert use_onednn(fast) == 1, "the linear layer only: float32 convolutions are oneDNN's already"
    assert type(fast[-1]) is OneDnnLinear and fast[-1]._prepacked is None
    with torch.inference_mode():
        for rows in (1, 2, 7):  # the step's rows, a dense batch
            x = torch.randn(rows, 3, 4 * 9 * 9, generator=torch.Generator().manual_seed(rows))
            torch.testing.assert_close(fast[-1](x), plain[-1](x), atol=1e-5, rtol=1e-5)
    assert fast[-1]._prepacked is None, "float32 keeps no second copy of the weight"


@needs_onednn_bf16
@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:DeprecationWarning")
def test_traced_and_autograd_calls_take_the_plain_path():
    fast = _net(torch.bfloat16)
    use_onednn(fast)
    with torch.no_grad():
        traced = torch.jit.trace(fast, _input(1))
    assert "mkldnn" not in str(traced.graph), "an export traces the plain layers"
    trained = _net(torch.float32).train()
    use_onednn(trained)
    trained(_input(1, torch.float32)).sum().backward()
    assert trained[-1].weight.grad is not None


@needs_onednn_bf16
def test_the_torch_backend_runs_its_stages_on_onednn(tiny):
    """The bfloat16 UNet and segmentation decoder give the same bits on the backend as the plain
    (channels-last) modules; a float32 head agrees within float32 rounding."""
    depth = DiffusionX0(copy.deepcopy(tiny.depth).to(torch.bfloat16))
    segmentation = SegmentationLabels(copy.deepcopy(tiny.segmentation).to(torch.bfloat16))
    logits = SequenceLogits(copy.deepcopy(tiny.model), "caption")
    graphs = {"depth_x0": depth.eval(), "segmentation_labels": segmentation.eval(), "caption_logits": logits}
    inputs = {name: dict(zip(g.spec.inputs, g.example_inputs(2), strict=True)) for name, g in graphs.items()}
    inputs["depth_x0"]["sample"].normal_(generator=torch.Generator().manual_seed(0))
    inputs["segmentation_labels"]["tokens"].random_(0, 64, generator=torch.Generator().manual_seed(0))
    inputs["caption_logits"]["hidden"].normal_(generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = {
            name: copy.deepcopy(g).to(memory_format=torch.channels_last)(*inputs[name].values())
            for name, g in graphs.items()
        }
    backend = TorchBackend(graphs)
    assert _onednn(depth) and _onednn(segmentation)
    for _ in range(2):
        for name, graph in graphs.items():
            got = backend.run(name, **inputs[name])[graph.spec.outputs[0]]
            if name == "caption_logits":
                torch.testing.assert_close(got, want[name], atol=1e-5, rtol=1e-5)
            else:
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
