"""The configuration schema shared by the CLI and the node rejects what would otherwise fail later."""

import pytest

from fourm_ros.pipeline.config import ConfigError, PipelineConfig, runtime_changes


def test_defaults_are_valid_and_enable_every_task():
    config = PipelineConfig().validate()
    assert config.tasks.enabled == ("depth", "normals", "segmentation", "human_pose", "caption")
    assert config.model == "EPFL-VILAB/4M-21_B"
    assert config.tasks.human_pose.max_tokens == 275


def test_nested_values_are_read():
    config = PipelineConfig.from_dict(
        {"backend": "torch", "tasks": {"caption": {"enabled": False}, "depth": {"diffusion_steps": 3}}}
    )
    assert config.backend == "torch"
    assert not config.tasks.caption.enabled
    assert config.tasks.depth.diffusion_steps == 3
    assert config.tasks.normals.diffusion_steps == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bakend": "torch"}, r"unknown keys \['bakend'\]"),
        ({"tasks": {"depth": {"stepz": 1}}}, r"tasks\.depth: unknown keys"),
        ({"backend": "tensorflow"}, "backend: must be one of"),
        ({"dtype": "int8"}, "dtype: must be one of"),
        ({"device": "tpu"}, "device: must be cpu, cuda"),
        ({"threads": -1}, "threads: must be >= 0"),
        ({"tasks": {"caption": {"top_p": 0}}}, r"tasks\.caption\.top_p: must be in \["),
        ({"tasks": {"caption": {"every_n_frames": 0}}}, "every_n_frames: must be >= 1"),
        ({"tasks": {"depth": {"diffusion_steps": "one"}}}, "diffusion_steps: must be an integer"),
        ({"offline": "yes"}, "offline: must be true or false"),
        ({"dense_decoding": {"steps": 0}}, r"dense_decoding\.steps: must be in \[1, 196\]"),
        ({"dense_decoding": {"scheme": "beam"}}, "scheme: must be one of"),
        ({"engines": {"cache_dir": "/tmp/engines"}}, "not under /tmp"),
        (
            {
                "tasks": {
                    key: {"enabled": False}
                    for key in ("depth", "normals", "segmentation", "human_pose", "caption")
                }
            },
            "at least one task",
        ),
        ({"tasks": 3}, "tasks: expected a mapping"),
    ],
)
def test_bad_values_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        PipelineConfig.from_dict(data)


def test_ros_parameters_file_is_read_and_the_node_section_ignored(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "perception_node:\n  ros__parameters:\n    backend: onnxruntime\n    ros:\n      input: compressed\n"
    )
    assert PipelineConfig.from_yaml(path).backend == "onnxruntime"


def test_unreadable_and_invalid_yaml_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        PipelineConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        PipelineConfig.from_yaml(bad)


def test_float_fields_accept_integers():
    assert PipelineConfig.from_dict({"dense_decoding": {"cfg_scale": 2}}).dense_decoding.cfg_scale == 2.0


def test_shipped_parameters_file_is_the_schema_default():
    from pathlib import Path

    shipped = PipelineConfig.from_yaml(Path(__file__).resolve().parents[2] / "config" / "perception.yaml")
    assert shipped == PipelineConfig()


def test_every_leaf_setting_is_documented_and_defaults_round_trip():
    from fourm_ros.pipeline.config import leaf_settings

    settings = list(leaf_settings(PipelineConfig))
    assert all(info.doc for info in settings), [info.path for info in settings if not info.doc]
    paths = {info.path for info in settings}
    assert {"model", "tasks.caption.top_p", "engines.precision", "dense_decoding.cfg_scale"} <= paths
    top_p = next(info for info in settings if info.path == "tasks.caption.top_p")
    assert (top_p.kind, top_p.default, top_p.maximum) == (float, 1.0, 1.0)


def test_replace_validates():
    with pytest.raises(ConfigError, match="backend"):
        PipelineConfig().replace(backend="nope")
    assert PipelineConfig().replace(offline=True).offline


def test_runtime_changes_lists_what_changed_and_refuses_start_up_settings():
    config = PipelineConfig()
    sampled = PipelineConfig.from_dict(
        {"tasks": {"caption": {"temperature": 0.5, "top_k": 40}, "depth": {"diffusion_steps": 4}}}
    )
    assert runtime_changes(config, config) == []
    assert runtime_changes(config, sampled) == [
        "tasks.depth.diffusion_steps",
        "tasks.caption.temperature",
        "tasks.caption.top_k",
    ]
    with pytest.raises(ConfigError, match=r"backend, tasks\.normals\.enabled: read-only while the node runs"):
        runtime_changes(
            config, PipelineConfig.from_dict({"backend": "torch", "tasks": {"normals": {"enabled": False}}})
        )
