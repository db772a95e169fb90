import pytest


@pytest.fixture(autouse=True)
def _eager_by_default(monkeypatch):
    """Losses built by name in these tests run eagerly (no compile warm-up): ``compile=None`` reads
    ``FOCALDET_COMPILE`` when the loss is built. Tests of the compiled pass ask for it explicitly
    (``compile=True`` / ``Compiler(enabled=True, min_elements=1)``) and check it against the same
    references."""
    monkeypatch.setenv("FOCALDET_COMPILE", "0")
