"""RGB-D input: sensor depth → tok_depth@224 tokens → the encoder beside RGB (tiny random weights)."""

import numpy as np
import pytest
import torch
from support import tiny_components

from fourm_ros import sample_rgbd
from fourm_ros.model.fourm import FIRST_SENTINEL_ID
from fourm_ros.pipeline.config import ConfigError, PipelineConfig
from fourm_ros.pipeline.metric_depth import sensor_depth_metres, sensor_depth_to_grid
from fourm_ros.pipeline.pipeline import STOP_IDS, Pipeline
from fourm_ros.pipeline.preprocess import preprocess
from fourm_ros.pipeline.weights import required_sources
from fourm_ros.tokenizers.depth_encoder import standardize_depth

DENSE_ONLY = {"human_pose": {"enabled": False}, "caption": {"enabled": False}}


@pytest.fixture(scope="module")
def components():
    return tiny_components(depth_input=True)


@pytest.fixture(scope="module")
def scene():
    frame = sample_rgbd.render(0)
    return frame.rgb, sensor_depth_metres(frame.sensor_mm, "16UC1")


def _pipeline(components, **tasks) -> Pipeline:
    config = PipelineConfig.from_dict(
        {"random_weights": True, "inputs": ["rgb", "depth"], "tasks": {**DENSE_ONLY, **tasks}}
    )
    return Pipeline(config, components)


def test_dense_outputs_are_conditioned_on_the_depth_tokens(components, scene):
    rgb, depth = scene
    pipeline = _pipeline(components)
    (with_depth,) = pipeline([rgb], depth=[depth])
    (without,) = pipeline([rgb])
    assert with_depth.conditioned_on == ("rgb", "depth") and without.conditioned_on == ("rgb",)
    assert "depth_tokenizer" in with_depth.timings

    # The same computation by hand: min-pooled grid, 4M-21's standardisation, the encoder half's tokens,
    # then FourM.encode(rgb, {"tok_depth@224": ids}) and one argmax decoder pass.
    model, encoder = components.model, components.depth_encoder
    normalised, crops, _ = preprocess([rgb])
    grid = sensor_depth_to_grid(depth, crops[0])
    ids = encoder.tokenize(torch.from_numpy(standardize_depth(grid))[None, None])[0].flatten(1)
    with torch.no_grad():
        context = model.encode(torch.from_numpy(normalised), {"tok_depth@224": ids})
        logits = model.decode_dense(context, ["tok_depth@224", "tok_normal@224", "tok_semseg@224"])
    assert context.shape[1] == 196 + 196
    for name, values in logits.items():
        expected = values.argmax(-1).reshape(14, 14).numpy()
        np.testing.assert_array_equal(with_depth.tokens[name], expected)
    changed = [not np.array_equal(with_depth.tokens[n], without.tokens[n]) for n in logits]
    assert any(changed)  # the extra input reaches the outputs


def test_sequences_see_the_depth_tokens_too(components, scene):
    rgb, depth = scene
    pipeline = _pipeline(components, caption={"enabled": True, "max_tokens": 8})
    (with_depth,) = pipeline.sequences([rgb], depth=[depth])
    (again,) = pipeline.sequences([rgb], depth=[depth])
    assert with_depth.conditioned_on == ("rgb", "depth")
    np.testing.assert_array_equal(with_depth.tokens["caption"], again.tokens["caption"])


def test_rgbd_sequence_contexts_are_the_image_depth_tokens_and_the_targets_sentinel(components, scene):
    """Each sequence target of an RGB-D frame is generated from FourM.encode(rgb, {tok_depth@224: ids,
    target: [[S_1]]}) (393 tokens), computed here by hand; caption and human poses generated jointly."""
    rgb, depth = scene
    lengths = {"caption": 8, "human_poses": 12}
    pipeline = _pipeline(
        components,
        caption={"enabled": True, "max_tokens": lengths["caption"]},
        human_pose={"enabled": True, "max_tokens": lengths["human_poses"]},
    )
    (with_depth,) = pipeline.sequences([rgb], depth=[depth])
    (without,) = pipeline.sequences([rgb])

    model, encoder = components.model, components.depth_encoder
    normalised, crops, _ = preprocess([rgb])
    grid = sensor_depth_to_grid(depth, crops[0])
    ids = encoder.tokenize(torch.from_numpy(standardize_depth(grid))[None, None])[0].flatten(1)
    image = torch.from_numpy(normalised)
    changed = []
    with torch.no_grad():
        graph_kv = pipeline.backend.run(
            "rgbd_sequence_cross_kv", rgb=normalised, depth_tokens=ids.numpy(), targets=torch.arange(2)
        )["cross_kv"]
        for row, (target, length) in enumerate(lengths.items()):
            sentinel = torch.full((1, 1), FIRST_SENTINEL_ID)
            context = model.encode(image, {"tok_depth@224": ids, target: sentinel})
            assert context.shape[1] == 196 + 196 + 1
            torch.testing.assert_close(graph_kv[:, :, row : row + 1], model.precompute_cross_kv(context))
            expected = model.generate_sequence(context, target, length, stop_ids=STOP_IDS)[0].numpy()
            np.testing.assert_array_equal(with_depth.tokens[target], expected, err_msg=target)
            changed.append(not np.array_equal(without.tokens[target], expected))
    assert with_depth.conditioned_on == ("rgb", "depth") and without.conditioned_on == ("rgb",)
    assert any(changed)  # the depth tokens reach the generated sequences


def test_a_frame_without_usable_depth_runs_the_batch_on_rgb_alone(components, scene):
    rgb, depth = scene
    pipeline = _pipeline(components)
    no_return = np.full_like(depth, np.nan)
    for batch_depth in ([None, depth], [no_return, depth]):
        results = pipeline([rgb, rgb], depth=batch_depth)
        assert [r.conditioned_on for r in results] == [("rgb",), ("rgb",)]
        assert results[0].depth is not None and results[1].labels is not None  # colour outputs still flow


def test_bad_depth_input_is_a_clear_error(components, scene):
    rgb, depth = scene
    pipeline = _pipeline(components)
    with pytest.raises(ValueError, match="registered to the colour camera"):
        pipeline([rgb], depth=[depth[::2, ::2]])
    with pytest.raises(ValueError, match="one per frame"):
        pipeline([rgb, rgb], depth=[depth])
    rgb_only = Pipeline(
        PipelineConfig.from_dict({"random_weights": True, "tasks": DENSE_ONLY}), tiny_components()
    )
    with pytest.raises(ValueError, match=r"inputs: \[rgb, depth\]"):
        rgb_only([rgb], depth=[depth])


def test_inputs_setting_is_validated_and_loads_the_encoder_half():
    with pytest.raises(ConfigError, match="inputs"):
        PipelineConfig.from_dict({"inputs": ["depth"]})
    config = PipelineConfig.from_dict({"inputs": ["rgb", "depth"], "tasks": {"depth": {"enabled": False}}})
    assert required_sources(config)["depth_encoder"] == "EPFL-VILAB/4M_tokenizers_depth_8k_224-448"
    assert "depth_encoder" not in required_sources(PipelineConfig())


def test_the_rgbd_model_has_the_official_tok_depth_input_embedding():
    import json

    from support import KEYS_DIR

    from fourm_ros.model import FourM, FourMConfig

    official = {
        name: tuple(shape) for name, shape, _ in json.loads((KEYS_DIR / "fm21_B_keys.json").read_text())
    }
    with torch.device("meta"):
        model = FourM(
            FourMConfig.preset("B"), ("rgb@224", "tok_depth@224"), ("tok_normal@224",), device="meta"
        )
    depth_input = {
        name: tuple(tensor.shape)
        for name, tensor in model.state_dict().items()
        if name.startswith("encoder_embeddings.tok_depth@224.")
    }
    assert depth_input and all(official.get(name) == shape for name, shape in depth_input.items())
    assert depth_input["encoder_embeddings.tok_depth@224.token_emb.weight"] == (8192, 768)
