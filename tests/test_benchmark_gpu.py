"""The GPU benchmark, prepared for a lent GPU, runs end to end here on the tiny job (CPU, no CUDA graph), and
the static step it captures as a CUDA graph computes what the pipeline's eager step computes."""

import torch

from fourm_ros.backends.job import job_graphs
from fourm_ros.backends.torch_backend import TorchBackend
from fourm_ros.benchmarks import gpu
from fourm_ros.benchmarks.backends import stage_inputs


def test_the_static_step_follows_the_eager_step_token_after_token():
    config, components = gpu._components("tiny")
    graphs = job_graphs(config, components)
    backend = TorchBackend(graphs)
    inputs = stage_inputs(backend)
    cross_kv = backend.run("sequence_cross_kv", rgb=inputs["encoder"]["rgb"], targets=torch.arange(2))[
        "cross_kv"
    ]
    runner = gpu.StepRunner(backend, graphs, cross_kv)
    embedded = torch.randn(5, 2, 1, components.model.config.dim, generator=torch.Generator().manual_seed(1))
    eager = runner.eager(embedded)
    assert eager.shape == (5, 2, components.model.config.dim)
    torch.testing.assert_close(runner.static(embedded), eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(runner.static(embedded), eager, atol=1e-5, rtol=1e-5)  # the cache starts empty


def test_the_benchmark_prints_every_stage_and_precision(capsys):
    gpu.main(
        ["--size", "tiny", "--device", "cpu", "--dtypes", "fp32", "fp16", "--repeats", "1", "--tokens", "2"]
    )
    printed = capsys.readouterr().out
    for stage in gpu.STAGES:
        assert stage in printed
    errors = next(line for line in printed.splitlines() if line.strip().startswith("fp16: tokens agree"))
    assert errors.endswith("non-finite 0")
    assert "static step (no CUDA graph on a CPU)" in printed
