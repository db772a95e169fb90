"""The training loop: SGD/AdamW with linear lr scaling, warm-up and step decay; AMP; periodic
evaluation and checkpoints; exact resume; a divergence guard; DDP under torchrun.

Read top-down, the way :func:`train` runs:

1. :func:`build_run` — device, seed, run directory (locked, see :mod:`focaldet.engine.run_dir`),
   datasets, model, loader, optimizer, schedule: everything that does not change while training,
   gathered in a :class:`Run`.
2. :func:`restore` — a resumed run loads its checkpoint into the :class:`Run` and a fresh
   :class:`TrainState` (iteration, best AP, skipped steps, last good checkpoint).
3. :func:`train_one_step` — one optimizer step with the non-finite guard;
   :func:`after_step` — logging, checkpoint, evaluation at their iterations.
4. :func:`finish` — ``result.json`` and the return value.

The loop counts iterations (one optimizer step each). An epoch is one pass of this rank's
:class:`~focaldet.data.sampler.TrainSampler`; schedule points given in epochs (milestones,
eval_interval, ckpt_interval) are converted to iterations unless ``train.max_iters`` is set, in
which case they are iterations already.
"""
from __future__ import annotations

import json
import math
import os
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from focaldet.config import Config, ConfigError
from focaldet.data import repeat_factor
from focaldet.engine.amp import amp_settings, autocast
from focaldet.engine.checkpoint import (CheckpointManager, all_finite, capture_rng_state, check_compatible,
                                        config_changes, load_checkpoint, load_model_state, restore_rng_state)
from focaldet.engine.evaluator import evaluate_model, run_inference
from focaldet.engine.logger import MetricLogger
from focaldet.engine.lr_schedule import WarmupMultiStepLR
from focaldet.engine.run_dir import RunLock, prepare_run_dir
from focaldet.errors import CheckpointError, TrainingDiverged
from focaldet.utils import dist
from focaldet.utils.io import atomic_write_json, atomic_write_text, jsonable
from focaldet.utils.machine import describe_device, precision_name


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """What changes while training (and what a checkpoint restores besides the tensors)."""

    iteration: int = 0  # optimizer steps done
    best_ap: float = -math.inf
    nonfinite_skips: int = 0
    last_good: Optional[str] = None  # newest checkpoint whose weights are finite
    resumed_from: Optional[str] = None
    stats: dict = field(default_factory=dict)  # metrics of the latest evaluation (rank 0)
    evaluated_at: int = -1  # iteration of the latest evaluation (every rank)
    diverged: Optional[tuple[int, str]] = None  # (iteration, message)


@dataclass
class Run:
    """What :func:`build_run` sets up once: the pieces the loop works with."""

    cfg: Config
    device: torch.device
    world: int
    main: bool  # rank 0: the only rank that writes files
    run_dir: Path
    ckpts: CheckpointManager
    train_set: Any
    val_set: Any
    model: torch.nn.Module  # DDP-wrapped under torchrun
    net: torch.nn.Module  # the bare model
    loader: Any
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: WarmupMultiStepLR
    scaler: torch.amp.GradScaler
    amp_dtype: Optional[torch.dtype]
    use_scaler: bool
    lr: float
    iters_per_epoch: int
    total_iters: int
    milestones: list
    eval_every: int
    ckpt_every: int
    logger: Optional[MetricLogger] = None
    val_subset: Any = None  # the first train.eval_images val images, or None: see evaluate()

    @property
    def sampler(self):
        return self.loader.batch_sampler

    def epoch_number(self, it: int) -> int:
        """1-based number of the epoch that iteration ``it`` (1-based) belongs to."""
        return -(-it // self.iters_per_epoch)


# --------------------------------------------------------------------------------------------
# train()
# --------------------------------------------------------------------------------------------
def train(cfg: Config, *, raise_on_diverge: bool = True, stream=None, use_tqdm: Optional[bool] = None,
          overwrite: bool = False) -> dict:
    """Train ``cfg`` and return ``{status, run_dir, iterations, metrics, best_ap, wall_time_s, …}``
    (also written to ``run_dir/result.json``).

    The run directory must be empty unless ``cfg.runtime.resume`` is set; ``overwrite=True``
    removes a previous run's files first. A non-finite loss, gradient or weight raises
    :class:`~focaldet.errors.TrainingDiverged` — or, with ``raise_on_diverge=False``, returns
    ``status="diverged"`` with ``diverged_at`` and ``message``."""
    t_start = time.time()
    stream = stream if stream is not None else sys.stdout
    device = dist.setup(cfg.runtime.device)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    seed_everything(cfg.runtime.seed, cfg.runtime.deterministic)
    run_dir = Path(cfg.runtime.work_dir)
    lock = RunLock(run_dir) if dist.is_main_process() else None
    if lock is not None:
        lock.acquire()
    try:
        if lock is not None:
            prepare_run_dir(run_dir, resume=cfg.runtime.resume != "none", overwrite=overwrite)
        run = build_run(cfg, device, run_dir)
        state = TrainState()
        ckpt = find_resume_checkpoint(run)
        changes = restore(run, state, ckpt) if ckpt is not None else []
        previous = finished_result(run, state, stream)
        if previous is not None:
            return previous
        start_logging(run, state, changes, stream, use_tqdm)
        train_loop(run, state)
        return finish(run, state, t_start, raise_on_diverge)
    finally:
        if lock is not None:
            lock.release()


def train_loop(run: Run, state: TrainState) -> None:
    """Epochs of iterations until ``run.total_iters`` or divergence."""
    window = MetricWindow()
    session = (time.perf_counter(), state.iteration)
    run.model.train()
    while state.iteration < run.total_iters and state.diverged is None:
        run.sampler.set_epoch(state.iteration // run.iters_per_epoch)
        t_prev = time.perf_counter()
        for batch in run.loader:
            t_data = time.perf_counter()
            losses, lr, bad_what = train_one_step(run, batch)
            if bad_what is not None and not skip_nonfinite(run, state, bad_what, losses, lr):
                break
            run.scheduler.step()
            state.iteration += 1
            t_end = time.perf_counter()
            window.add(losses if bad_what is None else None, t_end - t_prev, t_data - t_prev)
            t_prev = t_end
            run.logger.update_bar(1, loss=float(losses[2].detach()))
            if state.iteration % run.cfg.runtime.log_interval == 0 or state.iteration == run.total_iters:
                log_window(run, state, window, lr, session)
            if after_step(run, state):
                t_prev = time.perf_counter()  # evaluation and checkpoint time is not data time
            if state.iteration >= run.total_iters or state.diverged is not None:
                break
            if state.iteration % run.iters_per_epoch == 0:
                break  # next epoch: new permutation
    run.logger.close()


# --------------------------------------------------------------------------------------------
# 1. Set-up
# --------------------------------------------------------------------------------------------
def seed_everything(seed: int, deterministic: bool) -> None:
    """Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def build_data(cfg: Config):
    """(train set, val set) of ``cfg``, generating the benchmark if needed."""
    from focaldet.data.loader import build_dataset, resolve_data

    resolve_data(cfg)
    train_set = build_dataset(cfg.data, train=True)
    val_set = build_dataset(cfg.data, train=False)
    if val_set.cat_ids != train_set.cat_ids:
        raise ConfigError(f"{cfg.source}: data.val_ann {val_set.ann_file} has other categories than "
                          f"data.train_ann {train_set.ann_file}; both must list the same category ids")
    return train_set, val_set


def build_val_subset(cfg: Config, val_set, run_dir: Path):
    """The val set cut to its first ``train.eval_images`` images (by image id) with their
    annotations, written to ``run_dir/eval/val_first<N>.json``; None when the key is unset or
    does not cut anything."""
    from dataclasses import replace

    from focaldet.data.loader import build_dataset

    n = cfg.train.eval_images
    if n is None or n >= len(val_set):
        return None
    path = run_dir / "eval" / f"val_first{n}.json"
    if dist.is_main_process():
        coco = json.loads(Path(val_set.ann_file).read_text(encoding="utf-8"))
        keep = set(sorted(im["id"] for im in coco["images"])[:n])
        coco["images"] = [im for im in coco["images"] if im["id"] in keep]
        coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
        atomic_write_json(path, coco, indent=None)
    dist.barrier()
    return build_dataset(replace(cfg.data, val_ann=str(path.resolve())), train=False)


def effective_batch(cfg: Config, num_images: int, world: int) -> int:
    """Images per optimizer step over all ranks: ``data.batch_size`` per rank, but never more than
    an epoch holds (``num_images``: the sampler's epoch size; a rank's sampler yields at most its
    share per batch). The lr is scaled by this, not by the nominal batch."""
    per_rank = min(cfg.data.batch_size, -(-num_images // world))
    return per_rank * world


def build_optimizer(cfg: Config, params: list, lr: float) -> torch.optim.Optimizer:
    if cfg.train.optimizer == "adamw":
        # From-scratch detectors (no ImageNet weights) learn far faster with AdamW's per-parameter step
        # sizes than with SGD in a short CPU budget; decoupled weight decay as in Loshchilov & Hutter.
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.train.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay)


def param_groups(model: torch.nn.Module, lr: float, backbone_lr_mult: float) -> list[dict]:
    """The trainable parameters as optimizer groups: FPN and head at ``lr`` (group 0, whose lr the
    log prints), the backbone at ``lr * backbone_lr_mult`` (detectron2's ``BACKBONE_MULTIPLIER``).
    With a multiplier of 1 one group in ``model.parameters()`` order, as before the option existed,
    so older checkpoints' optimizer states still load."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if backbone_lr_mult == 1.0:
        return [{"params": trainable}]
    in_backbone = {id(p) for p in model.backbone.parameters()}
    return [{"params": [p for p in trainable if id(p) not in in_backbone], "lr": lr},
            {"params": [p for p in trainable if id(p) in in_backbone], "lr": lr * backbone_lr_mult}]


def build_run(cfg: Config, device: torch.device, run_dir: Path) -> Run:
    from focaldet.data.loader import build_train_loader
    from focaldet.model import build_model

    rank, world = dist.get_rank(), dist.get_world_size()
    ckpts = CheckpointManager(run_dir / "checkpoints", cfg.train.keep_last)
    if rank == 0:
        ckpts.remove_stale_temporaries()  # left by a write that was killed
    train_set, val_set = build_data(cfg)
    model = build_model(cfg, train_set.num_classes).to(device)
    loader = build_train_loader(cfg.data, train_set, seed=cfg.runtime.seed, rank=rank, world_size=world)
    # The loader's worker base seed must not draw from the global RNG, whose state is checkpointed.
    loader.generator = torch.Generator().manual_seed(cfg.runtime.seed)
    iters_per_epoch = len(loader.batch_sampler)
    t = cfg.train
    unit = 1 if t.max_iters is not None else iters_per_epoch
    total = t.max_iters if t.max_iters is not None else t.epochs * iters_per_epoch
    milestones = [int(round(m * unit)) for m in t.milestones]

    lr = t.base_lr * effective_batch(cfg, loader.batch_sampler.sampler.epoch_size, world) / t.base_batch
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg, param_groups(model, lr, t.backbone_lr_mult), lr)
    scheduler = WarmupMultiStepLR(optimizer, milestones, t.lr_gamma, t.warmup_iters, t.warmup_factor)
    amp_dtype, use_scaler = amp_settings(t.amp, device)
    return Run(cfg=cfg, device=device, world=world, main=rank == 0, run_dir=run_dir, ckpts=ckpts,
               train_set=train_set, val_set=val_set, model=model, net=model, loader=loader, params=params,
               optimizer=optimizer, scheduler=scheduler,
               scaler=torch.amp.GradScaler("cuda", enabled=use_scaler), amp_dtype=amp_dtype,
               use_scaler=use_scaler, lr=lr, iters_per_epoch=iters_per_epoch, total_iters=total,
               milestones=milestones, eval_every=t.eval_interval * unit, ckpt_every=t.ckpt_interval * unit,
               val_subset=build_val_subset(cfg, val_set, run_dir))


def start_logging(run: Run, state: TrainState, changes: list, stream, use_tqdm: Optional[bool]) -> None:
    """Wrap the model for DDP, open the logs, write ``config.yaml`` and the header lines."""
    cfg = run.cfg
    if run.world > 1:
        run.model = torch.nn.parallel.DistributedDataParallel(
            run.net, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    run.logger = logger = MetricLogger(run.run_dir, run.total_iters, run.iters_per_epoch, enabled=run.main,
                                       use_tqdm=use_tqdm, stream=stream, start_iter=state.iteration)
    if not run.main:
        return
    atomic_write_text(run.run_dir / "config.yaml", f"# resolved config of {cfg.source}\n" + cfg.dump())
    nominal = cfg.data.batch_size * run.world
    batch = effective_batch(cfg, run.sampler.sampler.epoch_size, run.world)
    logger.print(f"focaldet train: {cfg.source} -> {run.run_dir}  ({run.train_set.num_classes} classes, "
                 f"{len(run.train_set)} train / {len(run.val_set)} val images, {run.world} process(es) x batch "
                 f"{cfg.data.batch_size}, lr {run.lr:.4g}, {run.total_iters} iterations, {run.iters_per_epoch}/epoch, "
                 f"loss {cfg.loss.name} {run.net.cls_loss.params}, device {run.device}"
                 + (f", {precision_name(run.amp_dtype)} autocast)" if run.amp_dtype is not None else ")"))
    sampler = run.sampler.sampler
    if sampler.repeat_factors is not None:
        logger.print(repeat_factor.summary(sampler.repeat_factors, sampler.epoch_size, cfg.data.repeat_threshold))
    if batch < nominal:
        logger.print(f"note: {len(run.train_set)} training images hold fewer than the batch of {nominal}; "
                     f"lr scaled for the {batch} images a step really sees")
    if state.resumed_from is not None:
        logger.print(f"resumed from {state.resumed_from} at iteration {state.iteration}")
    for key, old, new in changes:
        logger.print(f"config change at iteration {state.iteration}: {key} {old!r:.60} -> {new!r:.60}")
        logger.log_record({"type": "config_change", "iter": state.iteration, "key": key,
                           "old": jsonable(old), "new": jsonable(new)})


# --------------------------------------------------------------------------------------------
# 2. Resume
# --------------------------------------------------------------------------------------------
def find_resume_checkpoint(run: Run) -> Optional[tuple[Path, dict]]:
    resume = run.cfg.runtime.resume
    if resume == "none":
        return None
    if resume == "auto":
        return run.ckpts.latest_good()
    return Path(resume), load_checkpoint(resume)


def restore(run: Run, state: TrainState, found: tuple[Path, dict]) -> list:
    """Load checkpoint ``found = (path, ckpt)`` into ``run`` and ``state``. Refuses a config that
    changes the run's meaning; returns the allowed changes ``[(key, old, new)]`` to be logged."""
    path, ckpt = found
    cfg = run.cfg
    check_compatible(ckpt, cfg.to_dict()["model"], run.train_set.num_classes, cfg.loss.name, path)
    allowed, refused = config_changes(ckpt["config"], cfg.to_dict())
    if refused:
        shown = "; ".join(f"{k}: {o!r:.40} -> {n!r:.40}" for k, o, n in refused[:4])
        more = f" (+{len(refused) - 4} more)" if len(refused) > 4 else ""
        raise CheckpointError(f"{path}: resuming with a config that changes the run: {shown}{more}",
                              hint="resume with the run's own config (config.yaml in its run directory), "
                                   "or start a new run in another runtime.work_dir")
    load_model_state(run.net, ckpt["model"], path)
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    run.sampler.load_state_dict(ckpt["sampler"])
    restore_rng_state(ckpt["rng"])
    state.iteration = int(ckpt["iter"])
    state.best_ap = max(float(ckpt.get("best_ap", -math.inf)), run.ckpts.best_ap_up_to(state.iteration))
    state.nonfinite_skips = int(ckpt.get("nonfinite_skips", 0))
    state.resumed_from = state.last_good = str(path)
    return [c for c in allowed if c[0] != "runtime.resume"]


def finished_result(run: Run, state: TrainState, stream) -> Optional[dict]:
    """The previous ``result.json`` when a resumed run had already finished; None otherwise."""
    path = run.run_dir / "result.json"
    if state.iteration < run.total_iters or not path.is_file():
        return None
    previous = json.loads(path.read_text())
    if previous.get("status") != "finished" or previous.get("iterations") != run.total_iters:
        return None
    if run.main:
        print(f"focaldet train: {run.run_dir} already finished ({run.total_iters} iterations); nothing to do",
              file=stream, flush=True)
    return previous


def checkpoint_state(run: Run, state: TrainState) -> dict:
    """The checkpoint of iteration ``state.iteration`` (design.md "Engine")."""
    epoch, consumed = divmod(state.iteration, run.iters_per_epoch)
    ts = run.train_set
    return {"model": run.net.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict() if run.use_scaler else {},
            "iter": state.iteration, "epoch": epoch, "sampler": run.sampler.state_dict(consumed) | {"epoch": epoch},
            "rng": capture_rng_state(), "config": run.cfg.to_dict(), "class_names": list(ts.class_names),
            "cat_ids": [int(c) for c in ts.cat_ids], "best_ap": state.best_ap,
            "nonfinite_skips": state.nonfinite_skips,
            "class_image_counts": [int(n) for n in ts.class_image_counts], "num_train_images": len(ts)}


# --------------------------------------------------------------------------------------------
# 3. One step, and what follows it
# --------------------------------------------------------------------------------------------
def train_one_step(run: Run, batch) -> tuple[tuple, float, Optional[str]]:
    """Forward, backward and (when everything is finite) the optimizer step. Returns
    ``((loss_cls, loss_box, loss), lr, bad)`` with ``bad`` None, "loss" or "gradient"."""
    batch = batch.to(run.device, non_blocking=True)
    with autocast(run.amp_dtype, run.device):
        out = run.model(batch.images, batch.image_sizes, batch.targets)
    loss_cls, loss_box = out["loss_cls"].float(), out["loss_box"].float()
    loss = loss_cls + loss_box
    lr = run.optimizer.param_groups[0]["lr"]
    # Every rank must take the same decision, or DDP's collectives deadlock.
    bad = dist.all_reduce_sum((~torch.isfinite(loss.detach())).float().reshape(1))
    run.optimizer.zero_grad(set_to_none=True)
    if bad.item() > 0:
        return (loss_cls, loss_box, loss), lr, "loss"
    run.scaler.scale(loss).backward()
    if run.use_scaler:
        run.scaler.unscale_(run.optimizer)
    grads = [p.grad for p in run.params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if not run.use_scaler and not torch.isfinite(norm):
        return (loss_cls, loss_box, loss), lr, "gradient"  # GradScaler handles fp16's inf gradients itself
    if run.cfg.train.grad_clip is not None:
        torch.nn.utils.clip_grads_with_norm_(grads, run.cfg.train.grad_clip, norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return (loss_cls, loss_box, loss), lr, None


def skip_nonfinite(run: Run, state: TrainState, what: str, losses: tuple, lr: float) -> bool:
    """Skip the step (``train.nonfinite=skip``, within its budget) and return True, or record the
    divergence in ``state`` and return False."""
    values = _fmt_losses(losses[0], losses[1], lr)
    t = run.cfg.train
    it = state.iteration + 1
    if t.nonfinite == "skip" and state.nonfinite_skips < t.max_nonfinite_skips:
        state.nonfinite_skips += 1
        run.optimizer.zero_grad(set_to_none=True)
        run.logger.print(f"warning: non-finite {what} at iteration {it} ({values}); "
                         f"step skipped ({state.nonfinite_skips}/{t.max_nonfinite_skips})")
        return True
    state.diverged = (it, _diverged_message(it, what, values, run.net.cls_loss, state))
    return False


class MetricWindow:
    """Sums of the logged quantities since the last log line."""

    KEYS = ("loss", "loss_cls", "loss_box", "time", "data_time")

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums = dict.fromkeys(self.KEYS, 0.0)
        self.n = 0

    def add(self, losses: Optional[tuple], step_s: float, data_s: float) -> None:
        if losses is not None:  # a skipped step counts 0 loss
            for key, value in zip(("loss_cls", "loss_box", "loss"), losses):
                self.sums[key] += float(value.detach())
        self.sums["time"] += step_s
        self.sums["data_time"] += data_s
        self.n += 1

    def means(self) -> dict:
        return {k: v / max(self.n, 1) for k, v in self.sums.items()}


def log_window(run: Run, state: TrainState, window: MetricWindow, lr: float, session: tuple) -> None:
    it = state.iteration
    rec = {"type": "train", "epoch": run.epoch_number(it), "iter": it, "lr": lr, **window.means(),
           "memory": memory_mib(run.device)}
    t0, it0 = session
    eta = (time.perf_counter() - t0) / max(it - it0, 1) * (run.total_iters - it)
    run.logger.log_train(rec, eta)
    window.reset()


def after_step(run: Run, state: TrainState) -> bool:
    """Checkpoint and evaluate when due. The checkpoint is written before the evaluation, so an
    evaluation that fails never costs the weights. Returns whether anything was done."""
    it = state.iteration
    last = it == run.total_iters
    do_eval = last or (run.eval_every > 0 and it % run.eval_every == 0)
    do_ckpt = do_eval or it % run.ckpt_every == 0
    end_of_epoch = it % run.iters_per_epoch == 0
    if do_ckpt:
        path = save_checkpoint(run, state)
        if path is None:
            return True  # weights not finite: diverged
    if do_eval:
        evaluate(run, state, path, final=last)
    if do_eval or end_of_epoch:
        _log_grad_stats(run.logger, it, run.net.cls_loss)
    return do_eval or do_ckpt


def save_checkpoint(run: Run, state: TrainState) -> Optional[Path]:
    """Write the checkpoint of this iteration (rank 0), unless a weight is not finite: then the
    run has diverged and no checkpoint is called good. Returns the path (None when diverged)."""
    # Weights are identical on every rank (DDP), so every rank takes the same decision.
    if not all_finite(run.net.state_dict()):
        it = state.iteration
        state.diverged = (it, _diverged_message(it, "weights", f"lr={run.optimizer.param_groups[0]['lr']:.6g}",
                                                run.net.cls_loss, state))
        return None
    path = run.ckpts.dir / f"iter_{state.iteration:07d}.pt"
    if run.main:
        path = run.ckpts.save(checkpoint_state(run, state), state.iteration)
    state.last_good = str(path)
    dist.barrier()
    return path


def evaluate(run: Run, state: TrainState, ckpt_path: Path, *, final: bool) -> None:
    """Evaluate on the val set; point ``best.pt`` at ``ckpt_path`` when the AP improved.

    With ``train.eval_images`` the evaluations score the first N val images (the learning curve;
    best.pt is chosen on them), and the final one scores those and then the whole val set, whose
    metrics are the run's result."""
    it = state.iteration
    sets = [run.val_set] if run.val_subset is None else [run.val_subset] + ([run.val_set] if final else [])
    # the final evaluation runs inference once, over the whole val set, and scores the subset's
    # images from that (a second pass over them cost ~3 s per 200 images; the detections are the
    # same up to float rounding where images of other sizes share a padded batch)
    results = run_inference(run.net, run.val_set, run.cfg, run.device) if len(sets) == 2 else None
    for dataset in sets:
        ev = evaluate_model(run.net, dataset, run.cfg, run.device, results=results,
                            train_image_counts=run.train_set.class_image_counts, num_train_images=len(run.train_set))
        state.stats = ev.stats if ev is not None else {}
        if dataset is sets[0]:
            ap = dist.broadcast_object(float(state.stats.get("AP", float("nan"))) if run.main else None)
        run.logger.log_eval(it, run.epoch_number(it), state.stats, images=len(dataset),
                            subset=dataset is run.val_subset)
    run.model.train()
    state.evaluated_at = it
    if math.isfinite(ap) and ap > state.best_ap:
        state.best_ap = ap
        if run.main:
            run.ckpts.mark_best(ckpt_path, it, ap)
    if run.main and final and ev is not None:
        atomic_write_json(run.run_dir / "eval" / "final.json", jsonable(ev.to_dict()))


# --------------------------------------------------------------------------------------------
# 4. The end
# --------------------------------------------------------------------------------------------
def finish(run: Run, state: TrainState, t_start: float, raise_on_diverge: bool) -> dict:
    """Write ``result.json`` (rank 0) and return it; raise on divergence when asked to."""
    if state.diverged is None and state.iteration >= run.total_iters and state.evaluated_at != state.iteration:
        # Resumed from the final checkpoint of a run whose final evaluation did not complete.
        evaluate(run, state, run.ckpts.dir / f"iter_{state.iteration:07d}.pt", final=True)
    result = {"status": "finished", "run_dir": str(run.run_dir), "iterations": state.iteration,
              "metrics": jsonable({k: _num(v) for k, v in state.stats.items()}),
              "best_ap": state.best_ap if math.isfinite(state.best_ap) else None,
              "resumed_from": state.resumed_from, "nonfinite_skips": state.nonfinite_skips,
              "wall_time_s": time.time() - t_start, "last_checkpoint": state.last_good,
              "loss_state_rank_diff": loss_state_rank_diff(run.net.cls_loss),
              # what the numbers depend on beyond the config: train.amp=bf16 runs float32 on a CPU
              # without native bfloat16, and float32 itself rounds differently across CPUs
              "precision": precision_name(run.amp_dtype), "device": describe_device(run.device),
              "world_size": run.world}
    if state.diverged is not None:
        result.update(status="diverged", diverged_at=state.diverged[0], message=state.diverged[1])
    if run.main:
        atomic_write_json(run.run_dir / "result.json", result)
    dist.barrier()
    if state.diverged is not None:
        if raise_on_diverge:
            raise TrainingDiverged(state.diverged[1], hint=_DIVERGE_HINT)  # the CLI prints it, once
        if run.main:
            print(f"focaldet train: {state.diverged[1]}", file=sys.stderr, flush=True)
    return result


_DIVERGE_HINT = ("lower train.base_lr, set train.grad_clip, cap the loss (e.g. loss.max_weight for "
                 "modified_focal), or allow a few skipped steps with train.nonfinite=skip")


def _fmt_losses(loss_cls, loss_box, lr) -> str:
    return f"loss_cls={float(loss_cls.detach()):.6g}, loss_box={float(loss_box.detach()):.6g}, lr={lr:.6g}"


def _diverged_message(it: int, what: str, values: str, loss_module, state: TrainState) -> str:
    params = ", ".join(f"{k}={v}" for k, v in getattr(loss_module, "params", {}).items())
    skips = state.nonfinite_skips
    skipped = f"; {skips} step(s) skipped before" if skips else ""
    return (f"training diverged at iteration {it}: non-finite {what} ({values}); loss {loss_module.name}"
            f"({params}){skipped}; last good checkpoint: {state.last_good or 'none written yet'}")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux: peak resident memory of this process.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def class_gammas(loss: torch.nn.Module) -> Optional[list[float]]:
    """EFL's per-class focusing factors γ_j (``EqualizedFocalLoss.gamma() -> (K,)``), when the
    loss exposes them."""
    g = getattr(loss, "gamma", None)
    g = g() if callable(g) else g
    if torch.is_tensor(g):
        return [float(v) for v in g.detach().float().cpu().tolist()]
    return None


def loss_state_rank_diff(loss: torch.nn.Module) -> float:
    """Largest absolute difference between this rank's loss buffers (EFL/GHM statistics) and rank
    0's; 0.0 in a single process. They are all-reduced every iteration, so anything but 0 is a bug."""
    bufs = [b.detach().double().flatten().cpu() for b in loss.buffers()]
    mine = torch.cat(bufs) if bufs else torch.zeros(0, dtype=torch.float64)
    gathered = dist.all_gather_objects(mine)
    return max((float((g - gathered[0]).abs().max()) if g.numel() else 0.0) for g in gathered)


def _log_grad_stats(logger: MetricLogger, it: int, loss_module) -> None:
    gs = getattr(loss_module, "grad_stats", None)
    if gs is None:
        return
    logger.log_grad_stats(it, [float(v) for v in gs.ratio().tolist()], class_gammas(loss_module))


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
