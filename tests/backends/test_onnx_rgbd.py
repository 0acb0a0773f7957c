"""The RGB-D graphs (depth tokenizer, RGB + depth encoder) export to ONNX and compute what torch computes."""

import numpy as np
from support import tiny_components

from fourm_ros import sample_rgbd
from fourm_ros.backends.export import export_graphs
from fourm_ros.backends.job import job_graphs
from fourm_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from fourm_ros.pipeline.config import PipelineConfig
from fourm_ros.pipeline.metric_depth import sensor_depth_metres
from fourm_ros.pipeline.pipeline import Pipeline

TASKS = {
    "depth": {"enabled": False},
    "normals": {"enabled": False},
    "human_pose": {"enabled": False},
    "caption": {"max_tokens": 4},
}


def test_rgbd_pipeline_on_onnxruntime_equals_torch(tmp_path):
    config = PipelineConfig.from_dict({"random_weights": True, "inputs": ["rgb", "depth"], "tasks": TASKS})
    components = tiny_components(depth_input=True)
    manifest = export_graphs(
        job_graphs(config, components), tmp_path, model="tiny rgbd", tasks=config.tasks.enabled
    )
    assert {"depth_tokenizer", "rgbd_encoder", "rgbd_sequence_cross_kv"} <= set(manifest.graphs)
    frame = sample_rgbd.render(0)
    depth = [sensor_depth_metres(frame.sensor_mm, "16UC1")]
    on_torch = Pipeline(config, components)
    onnx = Pipeline(config, components, OnnxRuntimeBackend(manifest, threads=1))
    for inputs, given in ((("rgb", "depth"), depth), (("rgb",), None)):  # 392 and 196 context tokens
        (torch_result,) = on_torch([frame.rgb], depth=given)
        (onnx_result,) = onnx([frame.rgb], depth=given)
        assert onnx_result.conditioned_on == torch_result.conditioned_on == inputs
        for name in ("tok_semseg@224", "caption"):
            np.testing.assert_array_equal(onnx_result.tokens[name], torch_result.tokens[name], err_msg=name)
