import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    # Deterministic, single-process-friendly defaults for the 2-core CI machine.
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
