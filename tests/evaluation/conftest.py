from __future__ import annotations

import pytest

from tests.evaluation.synthetic import make_case


@pytest.fixture(scope="module", params=[0, 1])
def case(request):
    """``(gt, results)`` of a generated case (two seeds)."""
    return make_case(request.param)
