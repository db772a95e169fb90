"""Evaluation runner: inference over the val set (sharded over ranks, gathered on rank 0), COCO and
long-tail metrics, and ``evaluate(cfg, weights)`` for ``focaldet eval``."""
from __future__ import annotations

import copy

from pathlib import Path
from typing import Optional, Union

import torch

from focaldet.config import Config
from focaldet.engine.amp import amp_settings, autocast
from focaldet.engine.checkpoint import CheckpointError, check_compatible, load_checkpoint, load_model_state
from focaldet.utils import dist


@torch.no_grad()
def run_inference(model: torch.nn.Module, dataset, cfg: Config, device: torch.device,
                  progress: Optional[bool] = False) -> list[dict]:
    """COCO-format results (original image pixels, original category ids) of this rank's share of
    ``dataset``, gathered from every rank; the full list on every rank. ``progress``: a bar on
    rank 0's stderr (None: when it is a terminal; off by default, as during training)."""
    from focaldet.data.loader import build_val_loader
    from focaldet.evaluation import outputs_to_coco_results
    from focaldet.utils.progress import progress_bar

    was_training = model.training
    model.eval()
    loader = build_val_loader(cfg.data, dataset, rank=dist.get_rank(), world_size=dist.get_world_size())
    # A DataLoader iterator draws its worker seed from the global RNG unless it has a generator of
    # its own; evaluating must leave the training RNG (which checkpoints capture) untouched.
    loader.generator = torch.Generator().manual_seed(0)
    amp_dtype, _ = amp_settings(cfg.train.amp, device)
    results: list[dict] = []
    bar = progress_bar(len(dataset), "eval", enabled=progress if dist.is_main_process() else False)
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        with autocast(amp_dtype, device):
            outputs = model(batch.images, batch.image_sizes)
        outputs = [{k: v.float() if v.is_floating_point() else v for k, v in o.items()} for o in outputs]
        results.extend(outputs_to_coco_results(outputs, batch.image_ids, batch.scales, dataset.cat_ids))
        bar.update(len(batch.image_ids) * dist.get_world_size())  # the other ranks keep pace
    bar.close()
    model.train(was_training)
    gathered = dist.all_gather_objects(results)
    return [r for part in gathered for r in part]


def evaluate_model(model: torch.nn.Module, dataset, cfg: Config, device: torch.device,
                   results_path: Optional[Union[str, Path]] = None, *,
                   train_image_counts: Optional[list[int]] = None, num_train_images: Optional[int] = None,
                   progress: Optional[bool] = False, results: Optional[list[dict]] = None):
    """Run inference and score it against ``dataset.ann_file``. Returns the
    :class:`~focaldet.evaluation.EvalResult` on rank 0 and None on the other ranks.

    ``results``: COCO results already computed (e.g. by :func:`run_inference` over a larger set
    that holds ``dataset``'s images): only those of ``dataset``'s images are scored, no inference.

    ``train_image_counts[label]``: training images per class, which define the rare / common /
    frequent groups (``data.rare_max`` / ``data.common_max``, or thresholds scaled to
    ``num_train_images``); None → the categories' own ``image_count`` / ``frequency`` fields."""
    from focaldet.evaluation import evaluate_detections
    from focaldet.utils.io import atomic_write_json

    if results is None:
        results = run_inference(model, dataset, cfg, device, progress=progress)
    else:
        ids = set(dataset.image_ids)
        results = [r for r in results if r["image_id"] in ids]
    if not dist.is_main_process():
        return None
    if results_path is not None:
        atomic_write_json(results_path, results, indent=None)
    counts = None
    if train_image_counts is not None:
        counts = {int(c): int(n) for c, n in zip(dataset.cat_ids, train_image_counts)}
    return evaluate_detections(str(dataset.ann_file), results, rare_max=cfg.data.rare_max,
                               common_max=cfg.data.common_max, image_counts=counts,
                               num_train_images=num_train_images)


def load_for_inference(cfg: Optional[Config], weights: Union[str, Path], device: torch.device):
    """Build the model for ``weights``: from ``cfg`` when given (its architecture must match the
    checkpoint's), else from the config stored in the checkpoint. Returns (model, cfg, ckpt)."""
    from focaldet.config import config_from_dict
    from focaldet.model import build_model

    ckpt = load_checkpoint(weights)
    if cfg is None:
        cfg = config_from_dict(ckpt["config"], source=f"{weights} (stored config)")
    else:
        # The loss plays no part at inference, but its state (EFL statistics) is in the weights:
        # take the checkpoint's, so one config evaluates the runs of every loss.
        cfg.loss = config_from_dict({"loss": ckpt["config"].get("loss", {})}, source=str(weights)).loss
    num_classes = len(ckpt["class_names"])
    check_compatible(ckpt, cfg.to_dict()["model"], num_classes, cfg.loss.name, weights)
    # every weight comes from the checkpoint: do not read (or download) ImageNet backbone weights
    build_cfg = copy.deepcopy(cfg)
    build_cfg.model.backbone_weights = None
    model = build_model(build_cfg, num_classes)
    load_model_state(model, ckpt["model"], weights)
    return model.to(device).eval(), cfg, ckpt


def evaluate(cfg: Config, weights: Union[str, Path], *, results_path: Optional[Union[str, Path]] = None,
             progress: Optional[bool] = None):
    """Evaluate checkpoint ``weights`` on ``cfg``'s val set (``focaldet eval``). Returns the
    :class:`EvalResult` (None on ranks other than 0). Checks that the val set has the classes the
    checkpoint was trained on. ``progress``: a bar on stderr (None: when it is a terminal)."""
    from focaldet.data.loader import build_dataset, resolve_data

    device = dist.setup(cfg.runtime.device)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    resolve_data(cfg, splits=("val",))  # explicit data.val_ann / val_images win over the benchmark
    val_set = build_dataset(cfg.data, train=False)
    model, cfg, ckpt = load_for_inference(cfg, weights, device)
    if [int(c) for c in ckpt.get("cat_ids", val_set.cat_ids)] != [int(c) for c in val_set.cat_ids]:
        raise CheckpointError(f"{weights}: trained on category ids {ckpt['cat_ids'][:10]}… but "
                              f"{val_set.ann_file} has {val_set.cat_ids[:10]}…",
                              hint="evaluate on a dataset with the same categories")
    return evaluate_model(model, val_set, cfg, device, results_path=results_path,
                          train_image_counts=ckpt.get("class_image_counts"),
                          num_train_images=ckpt.get("num_train_images"), progress=progress)
