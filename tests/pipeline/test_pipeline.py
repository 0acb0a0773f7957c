"""The ROS-free pipeline on a tiny random-weight model: result types, batching, scheduling, flags, errors."""

import numpy as np
import pytest
import torch
from support import tiny_components

from fourm_ros.checkpoint import CheckpointError
from fourm_ros.pipeline.config import PipelineConfig
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.pipeline.preprocess import CropMap
from fourm_ros.pipeline.weights import load_components
from fourm_ros.tokenizers import text


@pytest.fixture(scope="module")
def components():
    return tiny_components()


def _frames(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in shapes]


def test_every_task_returns_its_typed_result(components):
    pipeline = Pipeline(PipelineConfig(random_weights=True), components)
    (result,) = pipeline(_frames((300, 400)))
    assert result.crop == CropMap.centre(300, 400)
    assert result.grid_rgb.shape == (224, 224, 3) and result.grid_rgb.dtype == np.uint8
    assert result.depth.shape == (224, 224) and result.depth.dtype == np.float32
    assert result.normals.shape == (224, 224, 3) and result.normals.dtype == np.float32
    norms = np.linalg.norm(result.normals, axis=-1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)
    assert (
        result.labels.shape == (224, 224) and result.labels.dtype == np.uint8 and result.labels.max() <= 133
    )
    assert isinstance(result.caption, str)
    assert isinstance(result.persons, list)
    assert set(result.tokens) == {
        "tok_depth@224",
        "tok_normal@224",
        "tok_semseg@224",
        "caption",
        "human_poses",
    }
    assert result.tokens["tok_depth@224"].shape == (14, 14)
    assert result.random_weights
    expected = {
        "preprocess",
        "encoder",
        "dense_decoder",
        "depth_decoder",
        "normals_decoder",
        "segmentation_decoder",
    }
    assert expected | {"caption", "human_pose"} <= set(result.timings)
    assert all(seconds >= 0 for seconds in result.timings.values())


def test_batched_frames_equal_single_frames(components):
    config = PipelineConfig(random_weights=True).replace(tasks={"human_pose": {"enabled": False}})
    frames = _frames((300, 400), (480, 640), (224, 224), seed=1)
    batched = Pipeline(config, components)(frames)
    for frame, together in zip(frames, batched, strict=True):
        (alone,) = Pipeline(config, components)([frame])
        for name, tokens in alone.tokens.items():
            np.testing.assert_array_equal(together.tokens[name], tokens, err_msg=name)
        np.testing.assert_allclose(together.depth, alone.depth, atol=1e-4)
        np.testing.assert_allclose(together.normals, alone.normals, atol=1e-4)
        np.testing.assert_array_equal(together.labels, alone.labels)
        assert together.caption == alone.caption


def test_results_repeat_for_the_same_frame(components):
    pipeline = Pipeline(PipelineConfig(random_weights=True), components)
    first, second = pipeline(_frames((200, 260)))[0], pipeline(_frames((200, 260)))[0]
    np.testing.assert_array_equal(first.depth, second.depth)
    assert first.caption == second.caption


def test_sequences_run_every_n_frames_only(components):
    config = PipelineConfig.from_dict(
        {
            "tasks": {
                "caption": {"every_n_frames": 3},
                "human_pose": {"enabled": False},
                "depth": {"enabled": False},
            }
        }
    )
    pipeline = Pipeline(config, components)
    captions = [pipeline(_frames((64, 64)))[0].caption for _ in range(4)]
    assert [caption is not None for caption in captions] == [True, False, False, True]


def test_every_n_frames_counts_frames_not_batches(components):
    config = PipelineConfig.from_dict(
        {"tasks": {"caption": {"every_n_frames": 2}, "human_pose": {"every_n_frames": 3}}}
    )
    pipeline = Pipeline(config, components)
    results = pipeline(_frames((64, 64), (64, 64), (64, 64))) + pipeline(_frames((64, 64), (64, 64)))
    assert [r.caption is not None for r in results] == [True, False, True, False, True]
    assert [r.persons is not None for r in results] == [True, False, False, True, False]
    assert all(r.depth is not None for r in results)


def test_the_lanes_compute_what_a_whole_call_computes(components):
    config = PipelineConfig(random_weights=True)
    frames = _frames((120, 160), (90, 90))
    whole = Pipeline(config, components)(frames)
    dense = Pipeline(config, components).dense(frames)
    sequences = Pipeline(config, components).sequences(frames, ["caption"])
    for full, d, s in zip(whole, dense, sequences, strict=True):
        np.testing.assert_array_equal(d.depth, full.depth)
        np.testing.assert_array_equal(d.labels, full.labels)
        assert d.caption is None and d.persons is None
        assert s.caption == full.caption and s.depth is None and s.persons is None
    with pytest.raises(ValueError, match="not enabled"):
        Pipeline(PipelineConfig.from_dict({"tasks": {"caption": {"enabled": False}}}), components).sequences(
            frames, ["caption"]
        )


def test_disabled_tasks_leave_their_fields_empty(components):
    config = PipelineConfig.from_dict(
        {"tasks": {name: {"enabled": False} for name in ("normals", "segmentation", "human_pose", "caption")}}
    )
    (result,) = Pipeline(config, components)(_frames((100, 100)))
    assert result.depth is not None
    assert (
        result.normals is None and result.labels is None and result.caption is None and result.persons is None
    )
    assert set(result.tokens) == {"tok_depth@224"}


def test_persons_are_mapped_to_input_pixels(components, monkeypatch):
    words = ["human", "v0=100", "v1=200", "v2=500", "v3=900", "pose", *(f"v0={k}" for k in range(8))]
    words += [
        "global",
        *["v0=999", "v0=500", "v0=500", "v0=500", "v0=999", "v0=500", "v0=500", "v0=500", "v0=999"],
    ]
    words += ["camera", "v0=70", "v0=50", "v0=50", "shape", *["v0=500"] * 10]
    vocabulary = text.text_tokenizer()
    ids = torch.tensor([[vocabulary.token_to_id(word) for word in words] + [text.EOS_ID]])
    pipeline = Pipeline(PipelineConfig.from_dict({"tasks": {"caption": {"enabled": False}}}), components)
    monkeypatch.setattr(pipeline, "_generate", lambda task, cross_kv, batch, pause=None: ids)
    (result,) = pipeline(_frames((480, 640)))
    (person,) = result.persons
    assert person.valid, person.reason
    crop = result.crop
    np.testing.assert_allclose(person.box_xyxy_grid, np.array([100, 200, 500, 900]) / 999 * 224, atol=1e-6)
    np.testing.assert_allclose(person.box_xyxy, crop.boxes_to_input(person.box_xyxy_grid))
    np.testing.assert_allclose(person.keypoints_2d, crop.points_to_input(person.keypoints_2d_grid))
    assert person.joints_3d.shape == (24, 3) and np.isfinite(person.joints_3d).all()
    assert person.rotations.shape == (23, 3, 3)


def test_sampled_dense_decoding_runs_on_torch(components):
    config = PipelineConfig.from_dict(
        {
            "dense_decoding": {"temperature": 1.0, "top_k": 5},
            "tasks": {"caption": {"enabled": False}, "human_pose": {"enabled": False}},
        }
    )
    (result,) = Pipeline(config, components)(_frames((120, 160)))
    assert result.tokens["tok_depth@224"].shape == (14, 14)


def test_bad_frames_are_explained(components):
    pipeline = Pipeline(PipelineConfig(random_weights=True), components)
    with pytest.raises(ValueError, match="H×W×3"):
        pipeline([np.zeros((10, 10), np.uint8)])


def test_missing_weights_offline_name_the_checkpoint(tmp_path):
    config = PipelineConfig.from_dict({"offline": True, "cache_dir": str(tmp_path)})
    with pytest.raises(CheckpointError, match=r"EPFL-VILAB/4M-21_B.*offline"):
        load_components(config)


def test_random_weights_need_a_known_architecture(tmp_path):
    config = PipelineConfig.from_dict({"random_weights": True, "model": str(tmp_path / "my-model")})
    with pytest.raises(CheckpointError, match="random_weights needs the architecture"):
        load_components(config)
