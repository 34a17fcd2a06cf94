"""Fixtures of the backbone tests."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seeded, single-threaded torch (the CPUs are shared; restored after each test)."""
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
