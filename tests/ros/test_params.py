"""perception_node's parameters come from the shared schema, with descriptions, ranges and validation."""

import pytest
import rclpy
from rclpy.parameter import Parameter

from fourm_ros.pipeline.config import ConfigError, PipelineConfig, leaf_settings
from fourm_ros.ros.params import SCHEMAS, NodeConfig, declare_and_read


@pytest.fixture
def make_node():
    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = []

    def make(**overrides):
        parameters = [Parameter(name, value=value) for name, value in overrides.items()]
        node = rclpy.create_node("params_test", context=context, parameter_overrides=parameters)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)


def test_defaults_equal_the_schema_defaults(make_node):
    pipeline, node_config = declare_and_read(make_node())
    assert pipeline == PipelineConfig()
    assert node_config == NodeConfig()


def test_overrides_reach_both_configurations(make_node):
    node = make_node(
        **{
            "backend": "onnxruntime",
            "tasks.caption.every_n_frames": 5,
            "tasks.caption.temperature": 1,  # an integer where a double is declared is accepted
            "ros.input": "compressed",
            "ros.cameras": ["front", "left"],
            "ros.mono16_range": [100, 4000],
            "ros.qos.input.depth": 2,
        }
    )
    pipeline, node_config = declare_and_read(node)
    assert pipeline.backend == "onnxruntime"
    assert pipeline.tasks.caption.every_n_frames == 5
    assert pipeline.tasks.caption.temperature == 1.0
    assert node_config.input == "compressed"
    assert node_config.cameras == ("front", "left")
    assert node_config.mono16_range == (100, 4000)
    assert node_config.qos.input.profile("input").depth == 2


def test_descriptors_carry_documentation_and_ranges(make_node):
    node = make_node()
    declare_and_read(node)
    (steps,) = node.describe_parameters(["tasks.depth.diffusion_steps"])
    assert "DDIM" in steps.description and not steps.read_only
    assert (steps.integer_range[0].from_value, steps.integer_range[0].to_value) == (1, 1000)
    (backend,) = node.describe_parameters(["backend"])
    assert "tensorrt" in backend.description and backend.read_only


RUNTIME = {
    *(f"tasks.{task}.{name}" for task in ("depth", "normals") for name in ("diffusion_steps", "seed")),
    *(
        f"tasks.{task}.{name}"
        for task in ("caption", "human_pose")
        for name in ("every_n_frames", "max_tokens", "temperature", "top_k", "top_p")
    ),
    "ros.publish_color",
    "ros.require_camera_info",
    "ros.mono16_range",
}


def test_only_run_time_settings_are_dynamic_and_every_description_is_sentences(make_node):
    node = make_node()
    declare_and_read(node)
    names = [info.path for schema, prefix in SCHEMAS for info in leaf_settings(schema, prefix)]
    descriptors = dict(zip(names, node.describe_parameters(names), strict=True))
    assert {name for name, d in descriptors.items() if not d.read_only} == RUNTIME
    for name, descriptor in descriptors.items():
        text = descriptor.description
        assert text[0].isupper() and text.endswith("."), (name, text)
        note = "Can be changed while the node runs." if name in RUNTIME else "Read-only"
        assert note in text, (name, text)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backend": "tensorflow"}, "backend: must be one of"),
        ({"ros.input": "h264"}, r"ros\.input: must be one of"),
        ({"ros.cameras": ["a", "a"]}, "duplicate camera namespaces"),
        ({"ros.mono16_range": [10, 5]}, "mono16_range"),
        ({"ros.qos.output.reliability": "sometimes"}, r"ros\.qos\.output\.reliability: must be one of"),
        ({"tasks.caption.top_p": 0.0}, r"tasks\.caption\.top_p: .*out of range"),
        ({"tasks.depth.diffusion_steps": "many"}, r"tasks\.depth\.diffusion_steps: .*type"),
    ],
)
def test_bad_values_stop_with_the_parameter_named(make_node, overrides, message):
    with pytest.raises(ConfigError, match=message):
        declare_and_read(make_node(**overrides))
