"""Training, evaluation and prediction runners (design.md "Engine")."""
from focaldet.engine.evaluator import evaluate
from focaldet.engine.predictor import predict
from focaldet.engine.trainer import train

__all__ = ["train", "evaluate", "predict"]
