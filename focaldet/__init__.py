"""focaldet: one-stage detection with the focal-loss family."""
__version__ = "0.1.0"
