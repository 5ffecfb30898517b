from __future__ import annotations

import os

import pytest
import torch

# Two cores on CI: keep each test process to its share and results repeatable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
