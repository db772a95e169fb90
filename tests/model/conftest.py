import os
import random

import numpy as np
import pytest
import torch

# torch.compile of the loss kernels costs ~20 s per loss on this CPU; the eager path is what is tested here
os.environ.setdefault("FOCALDET_COMPILE", "0")


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
