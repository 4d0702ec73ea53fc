"""Shared test setup: every test starts with the process's own torch thread count.

Training commands set torch's thread count for the whole process (``train --threads``); without this, a test that
trains with one thread would change how every later test's floats are summed, and a test's result would depend on
the order the suite runs in."""
import pytest
import torch


@pytest.fixture(autouse=True)
def torch_threads_as_found():
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
