"""Captions and human poses as 4M-21 generates them: what `fourm-ros infer` dumps equals greedy generation
from each target's own context (the image and the target's [S_1]), computed through the model directly."""

import dataclasses

import cv2
import numpy as np
import pytest
import torch
from support import tiny_components

from fourm_ros import cli
from fourm_ros.backends.job import job_graphs
from fourm_ros.backends.select import create_backend
from fourm_ros.model.fourm import FIRST_SENTINEL_ID
from fourm_ros.pipeline.config import PipelineConfig
from fourm_ros.pipeline.pipeline import STOP_IDS, Pipeline
from fourm_ros.pipeline.preprocess import preprocess

MAX_TOKENS = {"caption": 12, "human_poses": 20}
"""Different lengths, so the joint generation's padded cache and the caption dropping out are exercised."""


@pytest.fixture(scope="module")
def components():
    return tiny_components()


@pytest.fixture(scope="module")
def frame():
    return np.random.default_rng(7).integers(0, 256, (150, 200, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def expected(components, frame):
    """Greedy ids through FourM.encode(rgb, {target: [[S_1]]}) + FourM.generate_sequence."""
    model = components.model
    rgb = torch.from_numpy(preprocess([frame])[0])
    ids = {}
    with torch.no_grad():
        for target, length in MAX_TOKENS.items():
            sentinel = torch.full((1, 1), FIRST_SENTINEL_ID)
            context = model.encode(rgb, {target: sentinel})
            ids[target] = model.generate_sequence(context, target, length, stop_ids=STOP_IDS)[0].numpy()
    return ids


def test_the_sentinel_changes_what_is_generated(components, frame, expected):
    """The comparison below can fail: without the [S_1] the tiny model generates other ids."""
    model = components.model
    rgb = torch.from_numpy(preprocess([frame])[0])
    with torch.no_grad():
        image_only = model.encode(rgb)
        unconditioned = {
            target: model.generate_sequence(image_only, target, length, stop_ids=STOP_IDS)[0].numpy()
            for target, length in MAX_TOKENS.items()
        }
    assert any(not np.array_equal(unconditioned[t], expected[t]) for t in MAX_TOKENS)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_infer_dumps_the_ids_of_each_targets_own_context(
    tmp_path, monkeypatch, components, frame, expected, backend
):
    def from_config(cls, config):
        config = dataclasses.replace(
            config, engines=dataclasses.replace(config.engines, cache_dir=str(tmp_path / "engines"))
        )
        graphs = job_graphs(config, components)
        return cls(config, components, create_backend(config, graphs, model_id=components.model_name))

    monkeypatch.setattr(Pipeline, "from_config", classmethod(from_config))
    cv2.imwrite(str(tmp_path / "frame.png"), frame[..., ::-1])
    out = tmp_path / "out"
    settings = [
        "--set",
        f"backend={backend}",
        "--set",
        "tasks.depth.enabled=false",
        "--set",
        "tasks.normals.enabled=false",
        "--set",
        f"tasks.caption.max_tokens={MAX_TOKENS['caption']}",
        "--set",
        f"tasks.human_pose.max_tokens={MAX_TOKENS['human_poses']}",
    ]
    assert (
        cli.main(["infer", str(tmp_path / "frame.png"), "-o", str(out), "--random-weights", *settings]) == 0
    )
    raw = np.load(out / "frame" / "raw.npz")
    for target, ids in expected.items():
        np.testing.assert_array_equal(raw[f"tokens/{target}"], ids, err_msg=f"{backend} {target}")


@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "top_k": 50}])
def test_joint_generation_equals_generating_each_task_alone(components, sampling):
    """Caption and human poses share each decoder pass (the caption drops out first); every frame's ids
    equal those of the task generated on its own, greedy or sampled."""
    tasks = {
        "caption": {"max_tokens": MAX_TOKENS["caption"], **sampling},
        "human_pose": {"max_tokens": MAX_TOKENS["human_poses"], **sampling},
        "depth": {"enabled": False},
        "normals": {"enabled": False},
        "segmentation": {"enabled": False},
    }
    config = PipelineConfig.from_dict({"tasks": tasks})
    frames = [np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8) for seed in (1, 2)]
    joint = Pipeline(config, components).sequences(frames)
    for task, target in (("caption", "caption"), ("human_pose", "human_poses")):
        alone = Pipeline(config, components).sequences(frames, [task])
        for together, single in zip(joint, alone, strict=True):
            np.testing.assert_array_equal(together.tokens[target], single.tokens[target], err_msg=task)
    assert joint[0].tokens["caption"].shape[0] <= MAX_TOKENS["caption"]
    assert joint[0].tokens["human_poses"].shape[0] == MAX_TOKENS["human_poses"]
