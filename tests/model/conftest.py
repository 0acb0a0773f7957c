"""Model tests run tiny tensors: one intra-op thread is as fast, and immune to the OpenMP
oversubscription that slows 2-thread torch by 10-50x when another process shares the 2 CPU cores."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
