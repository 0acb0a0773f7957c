"""Test-wide environment: isolated ROS 2 discovery, no access to the Hugging Face hub, one torch thread."""

import os

import pytest
import torch

# Real DDS traffic from the tests stays on this machine and off any other test run's domain.
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# No test may reach the Hugging Face hub.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    """Tests run tiny tensors: one intra-op thread is as fast and immune to the OpenMP oversubscription
    that slows 2-thread torch by 10-50x when another process shares the machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
