import pytest


@pytest.fixture(autouse=True)
def _eager_by_default(monkeypatch):
    """Formula tests run the eager kernels (no compile warm-up); tests marked ``compiled`` turn
    torch.compile on and check the fused kernels against the same references."""
    monkeypatch.setenv("FOCALDET_COMPILE", "0")
