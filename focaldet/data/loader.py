"""DataLoaders for training and evaluation, built from a :class:`focaldet.config.DataConfig`."""
from __future__ import annotations

import traceback
from functools import partial
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import DataLoader

from focaldet.data.coco import CocoDetection
from focaldet.data.collate import collate
from focaldet.data.repeat_factor import repeat_factors
from focaldet.data.sampler import InferenceSampler, SeededBatchSampler, TrainSampler
from focaldet.data.transforms import build_transforms
from focaldet.data.validation import check_boxes_per_image
from focaldet.errors import DataError, FocaldetError


def resolve_data(cfg, splits: tuple[str, ...] = ("train", "val")):
    """Fill in the annotation and image paths of ``splits`` from ``data.benchmark`` when it is set,
    generating the benchmark on first use (rank 0 first, then the others find it cached).

    Paths the user gave explicitly win: a split whose ``*_ann`` and ``*_images`` are both set is
    used as given, and the benchmark is only generated when a requested split has neither. One of
    the two without the other is an error (it would mix two datasets). ``cfg`` is a
    :class:`focaldet.config.Config`; it is returned, modified in place."""
    from focaldet.config import ConfigError
    from focaldet.utils.dist import barrier, is_main_process

    d = cfg.data
    if d.benchmark is None:
        return cfg
    missing = []
    for split in splits:
        ann, images = getattr(d, f"{split}_ann"), getattr(d, f"{split}_images")
        if (ann is None) != (images is None):
            given, other = (f"{split}_ann", f"{split}_images") if ann is not None else (f"{split}_images", f"{split}_ann")
            raise ConfigError(f"{cfg.source}: data.{given} is set but data.{other} is not, while data.benchmark="
                              f"{d.benchmark} would provide both", hint=f"set both, or neither to use the benchmark")
        if ann is None:
            missing.append(split)
    if not missing:
        return cfg
    from focaldet.data.benchmark import ensure_benchmark

    def make():
        g = d.generator
        return ensure_benchmark(d.benchmark, d.root, train=g.train, val=g.val, size=g.size, seed=g.seed,
                                classes=g.classes)
    # Rank 0 generates, the others wait and then find it cached. If rank 0 fails it leaves without
    # reaching the barrier, and the launcher stops the waiting ranks (see utils/dist.abort).
    if is_main_process():
        paths = make()
    barrier()
    if not is_main_process():
        paths = make()
    # Absolute, because data paths in a config are read relative to data.root.
    for split in missing:
        setattr(d, f"{split}_ann", str(Path(getattr(paths, f"{split}_ann")).resolve()))
        setattr(d, f"{split}_images", str(Path(getattr(paths, f"{split}_images")).resolve()))
    return cfg


def build_dataset(cfg, train: bool) -> CocoDetection:
    """The train or val :class:`CocoDetection` of ``cfg`` (a ``DataConfig``) with its transforms
    and ``cfg.strict``; relative ``*_ann`` / ``*_images`` paths are taken relative to ``cfg.root``."""
    split = "train" if train else "val"
    ann, images = getattr(cfg, f"{split}_ann"), getattr(cfg, f"{split}_images")
    if ann is None or images is None:
        raise DataError(f"data.{split}_ann / data.{split}_images: not set (and no benchmark was generated)")
    root = Path(cfg.root)
    ann_path = Path(ann) if Path(ann).is_absolute() else root / ann
    img_path = Path(images) if Path(images).is_absolute() else root / images
    dataset = CocoDetection(ann_path, img_path, build_transforms(cfg, train=train), strict=cfg.strict)
    if train:
        check_boxes_per_image(dataset.ann_file, dataset.image_ids, dataset.boxes_per_image())
    return dataset


class DetectionLoader(DataLoader):
    """A ``DataLoader`` that re-raises a :class:`FocaldetError` from a worker process with its own
    one-line message; torch would prepend the worker's traceback to it."""

    def __iter__(self):
        it = super().__iter__()
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except FocaldetError as e:
                error = type(e)(_without_worker_traceback(e))
                # The traceback's frames hold the worker pool in a reference cycle; clear them so
                # that `del it` below stops the workers at once instead of at some later GC.
                traceback.clear_frames(e.__traceback__)
                break
            yield batch
        del it  # stop the worker processes now, not when the traceback is freed
        raise error from None


def _without_worker_traceback(e: Exception) -> str:
    text = str(e).strip()
    if "Original Traceback" not in text:
        return text
    last = text.splitlines()[-1]
    prefix = f"{type(e).__module__}.{type(e).__qualname__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


def _worker_init(worker_id: int) -> None:
    # One intra-op thread per worker: several workers each using all cores only oversubscribe.
    torch.set_num_threads(1)


def _loader(dataset, batch_sampler, cfg, pin_memory: Optional[bool]) -> DetectionLoader:
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    workers = int(cfg.num_workers)
    return DetectionLoader(dataset, batch_sampler=batch_sampler, num_workers=workers,
                      collate_fn=partial(collate, size_divisibility=cfg.size_divisibility),
                      pin_memory=pin_memory, worker_init_fn=_worker_init if workers > 0 else None,
                      persistent_workers=False)


def build_train_loader(cfg, dataset, seed: int, rank: int = 0, world_size: int = 1, *,
                       drop_last: bool = False, pin_memory: Optional[bool] = None) -> DataLoader:
    """Training loader over ``dataset`` with ``cfg.batch_size`` images per rank.

    ``loader.batch_sampler`` is a :class:`SeededBatchSampler`; call ``loader.batch_sampler.set_epoch(e)``
    before each epoch, and save / restore ``loader.batch_sampler.state_dict(consumed)`` /
    ``load_state_dict(...)`` to resume mid-epoch. Batches depend only on (seed, epoch, rank,
    world_size), not on ``num_workers``. ``cfg.sampler = "repeat_factor"`` over-samples the images
    of rare classes (:mod:`focaldet.data.repeat_factor`, threshold ``cfg.repeat_threshold``).
    """
    factors = None
    if cfg.sampler == "repeat_factor":
        factors = repeat_factors(dataset.image_classes(), dataset.num_classes, cfg.repeat_threshold)
    sampler = TrainSampler(len(dataset), cfg.batch_size, seed, rank, world_size, drop_last=drop_last,
                           repeat_factors=factors)
    return _loader(dataset, SeededBatchSampler(sampler), cfg, pin_memory)


def build_val_loader(cfg, dataset, rank: int = 0, world_size: int = 1, *,
                     pin_memory: Optional[bool] = None) -> DataLoader:
    """Evaluation loader: every image exactly once across ranks, in order within a rank (rank
    ``r`` gets images ``r, r + world_size, ...``); no duplicates to remove."""
    return _loader(dataset, InferenceSampler(len(dataset), cfg.batch_size, rank, world_size), cfg, pin_memory)
