"""Shared fixtures of the backend tests: the tiny random-weight job, its graphs and one ONNX export."""

import dataclasses

import pytest
from support import tiny_components

from fourm_ros.backends.export import cached_export
from fourm_ros.backends.job import job_graphs
from fourm_ros.pipeline.config import PipelineConfig
from fourm_ros.pipeline.weights import PRECISION_TASKS


def _with_cache_dir(config: PipelineConfig, directory) -> PipelineConfig:
    return dataclasses.replace(config, engines=dataclasses.replace(config.engines, cache_dir=str(directory)))


@pytest.fixture(scope="session")
def with_cache_dir():
    """``with_cache_dir(config, directory)``: ``config`` with its engine cache in ``directory``. Test
    directories live under /tmp, which user configurations may not use (from_dict refuses it), so this
    bypasses that one check."""
    return _with_cache_dir


@pytest.fixture(scope="session")
def tiny():
    return tiny_components()


@pytest.fixture(scope="session")
def tiny_config():
    """Every stage in float32 (``precision: auto`` would pick bf16 decoders on some CPUs only)."""
    return PipelineConfig.from_dict(
        {
            "random_weights": True,
            "tasks": {"human_pose": {"max_tokens": 120}},
            "precision": dict.fromkeys(PRECISION_TASKS, "float32"),
        }
    )


@pytest.fixture(scope="session")
def tiny_graphs(tiny, tiny_config):
    return job_graphs(tiny_config, tiny)


@pytest.fixture(scope="session")
def tiny_export(tiny, tiny_config, tiny_graphs, tmp_path_factory):
    """The whole tiny job exported once (about 2 s), shared by every test that only reads it."""
    return cached_export(
        tiny_graphs,
        tmp_path_factory.mktemp("engines"),
        model=tiny.model_name,
        tasks=tiny_config.tasks.enabled,
    )
