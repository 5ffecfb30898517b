from __future__ import annotations

import pytest
import torch

# The suite's models are tiny: intra-op threads cost more than they give (measured 5-20x slower
# with 2 threads on the shared 2-core machine), and one thread keeps results repeatable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
