"""The training loop: SGD with linear lr scaling, warm-up and step decay; AMP on CUDA; periodic
evaluation and checkpoints; exact resume; a divergence guard; DDP under torchrun.

The loop counts iterations (one optimizer step each). An epoch is one pass of this rank's
:class:`~focaldet.data.sampler.TrainSampler`; schedule points given in epochs (milestones,
eval_interval, ckpt_interval) are converted to iterations unless ``train.max_iters`` is set, in
which case they are iterations already.
"""
from __future__ import annotations

import math
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from focaldet.config import Config, ConfigError
from focaldet.engine import distributed
from focaldet.engine.amp import amp_settings, autocast
from focaldet.engine.checkpoint import (CheckpointManager, capture_rng_state, check_compatible,
                                        load_checkpoint, load_model_state, restore_rng_state)
from focaldet.engine.evaluator import evaluate_model
from focaldet.engine.logger import MetricLogger
from focaldet.engine.lr_schedule import WarmupMultiStepLR
from focaldet.errors import TrainingDiverged
from focaldet.utils.dist import all_reduce_sum, get_rank, get_world_size, is_main_process
from focaldet.utils.io import atomic_write_json, atomic_write_text


# --------------------------------------------------------------------------------------------
# Set-up helpers
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


def resolve_data(cfg: Config) -> Config:
    """When ``data.benchmark`` is set, generate it (rank 0 first, once; cached by its parameters)
    and fill in the four paths. Returns ``cfg`` (modified in place)."""
    d = cfg.data
    if d.benchmark is None:
        return cfg
    from focaldet.data.benchmark import ensure_benchmark

    def make():
        return ensure_benchmark(d.benchmark, d.root, train=d.gen_train, val=d.gen_val, size=d.gen_size,
                                seed=d.gen_seed, classes=d.gen_classes)
    if is_main_process():
        paths = make()
    distributed_barrier()
    if not is_main_process():
        paths = make()
    # Absolute, because data paths in a config are read relative to data.root.
    d.train_ann, d.train_images = str(Path(paths.train_ann).resolve()), str(Path(paths.train_images).resolve())
    d.val_ann, d.val_images = str(Path(paths.val_ann).resolve()), str(Path(paths.val_images).resolve())
    return cfg


def distributed_barrier() -> None:
    from focaldet.utils.dist import barrier
    barrier()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux: peak resident memory of this process.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def schedule_points(cfg: Config, iters_per_epoch: int) -> dict:
    """Total iterations and the iteration numbers of milestones / evaluations / checkpoints."""
    t = cfg.train
    unit = 1 if t.max_iters is not None else iters_per_epoch
    total = t.max_iters if t.max_iters is not None else t.epochs * iters_per_epoch
    return {"total": total, "unit": unit,
            "milestones": [int(round(m * unit)) for m in t.milestones],
            "eval_every": t.eval_interval * unit, "ckpt_every": t.ckpt_interval * unit}


def class_gammas(loss: torch.nn.Module) -> Optional[list[float]]:
    """EFL's per-class focusing factors γ_j, when the loss exposes them."""
    for name in ("gamma",):  # EqualizedFocalLoss.gamma() -> (K,)
        g = getattr(loss, name, None)
        if g is None:
            continue
        g = g() if callable(g) else g
        if torch.is_tensor(g):
            return [float(v) for v in g.detach().float().cpu().tolist()]
    return None


def check_loss_config(cfg: Config) -> None:
    """Build the loss once for one class, so a wrong loss name or parameter fails before any data
    is generated or read."""
    from focaldet.losses import build_loss
    try:
        build_loss(cfg.loss.name, num_classes=1, track_grad_stats=False, **cfg.loss.params)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{cfg.source}: loss: {e}") from None


def loss_state_rank_diff(loss: torch.nn.Module) -> float:
    """Largest absolute difference between this rank's loss buffers (EFL/GHM statistics) and rank
    0's; 0.0 in a single process. They are all-reduced every iteration, so anything but 0 is a bug."""
    bufs = [b.detach().double().flatten().cpu() for b in loss.buffers()]
    mine = torch.cat(bufs) if bufs else torch.zeros(0, dtype=torch.float64)
    gathered = distributed.all_gather_objects(mine)
    return max((float((g - gathered[0]).abs().max()) if g.numel() else 0.0) for g in gathered)


# --------------------------------------------------------------------------------------------
# train()
# --------------------------------------------------------------------------------------------
def train(cfg: Config, *, raise_on_diverge: bool = True, stream=None, use_tqdm: Optional[bool] = None) -> dict:
    """Train ``cfg`` and return ``{status, run_dir, iterations, metrics, best_ap, wall_time_s, …}``
    (also written to ``run_dir/result.json``). A non-finite loss raises
    :class:`~focaldet.errors.TrainingDiverged` — or, with ``raise_on_diverge=False``, returns
    ``status="diverged"`` with ``diverged_at`` and ``message``."""
    from focaldet.data.loader import build_dataset, build_train_loader
    from focaldet.model import build_model

    t_start = time.time()
    stream = stream if stream is not None else sys.stdout
    check_loss_config(cfg)
    device = distributed.setup(cfg.runtime.device)
    rank, world = get_rank(), get_world_size()
    main = rank == 0
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    seed_everything(cfg.runtime.seed, cfg.runtime.deterministic)

    run_dir = Path(cfg.runtime.work_dir)
    ckpts = CheckpointManager(run_dir / "checkpoints", cfg.train.keep_last)
    if rank == 0:
        ckpts.remove_stale_temporaries()  # left by a write that was killed
    resolve_data(cfg)
    train_set = build_dataset(cfg.data, train=True)
    val_set = build_dataset(cfg.data, train=False)
    num_classes = train_set.num_classes
    if val_set.cat_ids != train_set.cat_ids:
        raise ConfigError(f"{cfg.source}: data.val_ann {val_set.ann_file} has other categories than "
                          f"data.train_ann {train_set.ann_file}; both must list the same category ids")

    model = build_model(cfg, num_classes).to(device)
    loader = build_train_loader(cfg.data, train_set, seed=cfg.runtime.seed, rank=rank, world_size=world)
    # The loader's worker base seed must not draw from the global RNG, whose state is checkpointed.
    loader.generator = torch.Generator().manual_seed(cfg.runtime.seed)
    sampler = loader.batch_sampler
    iters_per_epoch = len(sampler)
    sched = schedule_points(cfg, iters_per_epoch)
    total_iters = sched["total"]

    total_batch = cfg.data.batch_size * world
    lr = cfg.train.base_lr * total_batch / cfg.train.base_batch
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.train.optimizer == "adamw":
        # From-scratch detectors (no ImageNet weights) learn far faster with AdamW's per-parameter step
        # sizes than with SGD in a short CPU budget; decoupled weight decay as in Loshchilov & Hutter.
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.train.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=lr, momentum=cfg.train.momentum,
                                    weight_decay=cfg.train.weight_decay)
    scheduler = WarmupMultiStepLR(optimizer, sched["milestones"], cfg.train.lr_gamma, cfg.train.warmup_iters,
                                  cfg.train.warmup_factor)
    amp_dtype, use_scaler = amp_settings(cfg.train.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    # ---- resume -----------------------------------------------------------------------------
    start_iter, best_ap, skips, resumed_from = 0, -math.inf, 0, None
    ckpt = None
    if cfg.runtime.resume == "auto":
        found = ckpts.latest_good()
        if found is not None:
            resumed_from, ckpt = found
    elif cfg.runtime.resume != "none":
        resumed_from = Path(cfg.runtime.resume)
        ckpt = load_checkpoint(resumed_from)
    if ckpt is not None:
        check_compatible(ckpt, cfg.to_dict()["model"], num_classes, cfg.loss.name, resumed_from)
        load_model_state(model, ckpt["model"], resumed_from)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        sampler.load_state_dict(ckpt["sampler"])
        restore_rng_state(ckpt["rng"])
        start_iter = int(ckpt["iter"])
        best_ap = float(ckpt.get("best_ap", -math.inf))
        skips = int(ckpt.get("nonfinite_skips", 0))

    if start_iter >= total_iters and (run_dir / "result.json").is_file():
        import json
        previous = json.loads((run_dir / "result.json").read_text())
        if previous.get("status") == "finished" and previous.get("iterations") == total_iters:
            if main:
                print(f"focaldet train: {run_dir} already finished ({total_iters} iterations); nothing to do",
                      file=stream, flush=True)
            return previous

    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    net = unwrap(model)

    logger = MetricLogger(run_dir, total_iters, iters_per_epoch, enabled=main, use_tqdm=use_tqdm,
                          stream=stream, start_iter=start_iter)
    if main:
        atomic_write_text(run_dir / "config.yaml", f"# resolved config of {cfg.source}\n" + cfg.dump())
        logger.print(f"focaldet train: {cfg.source} -> {run_dir}  ({num_classes} classes, "
                     f"{len(train_set)} train / {len(val_set)} val images, {world} process(es) x batch "
                     f"{cfg.data.batch_size}, lr {lr:.4g}, {total_iters} iterations, {iters_per_epoch}/epoch, "
                     f"loss {cfg.loss.name} {net.cls_loss.params}, device {device})")
        if resumed_from is not None:
            logger.print(f"resumed from {resumed_from} at iteration {start_iter}")

    def make_state(it: int) -> dict:
        epoch, consumed = divmod(it, iters_per_epoch)
        return {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if use_scaler else {},
                "iter": it, "epoch": epoch, "sampler": sampler.state_dict(consumed) | {"epoch": epoch},
                "rng": capture_rng_state(), "config": cfg.to_dict(), "class_names": list(train_set.class_names),
                "cat_ids": [int(c) for c in train_set.cat_ids], "best_ap": best_ap, "nonfinite_skips": skips,
                "class_image_counts": [int(n) for n in train_set.class_image_counts],
                "num_train_images": len(train_set)}

    last_good = str(resumed_from) if resumed_from is not None else None
    result = {"status": "finished", "run_dir": str(run_dir), "iterations": start_iter, "metrics": {},
              "best_ap": None, "resumed_from": None if resumed_from is None else str(resumed_from)}
    it = start_iter
    log_every = cfg.runtime.log_interval
    window = {"loss": 0.0, "loss_cls": 0.0, "loss_box": 0.0, "time": 0.0, "data_time": 0.0, "n": 0}
    session_t0, session_iters = time.perf_counter(), 0
    stats = {}
    diverged = None
    model.train()
    while it < total_iters and diverged is None:
        epoch = it // iters_per_epoch
        sampler.set_epoch(epoch)
        t_prev = time.perf_counter()
        for batch in loader:
            t_data = time.perf_counter()
            batch = batch.to(device, non_blocking=True)
            with autocast(amp_dtype, device):
                losses = model(batch.images, batch.image_sizes, batch.targets)
            loss_cls, loss_box = losses["loss_cls"].float(), losses["loss_box"].float()
            loss = loss_cls + loss_box
            lr_now = optimizer.param_groups[0]["lr"]
            # Every rank must take the same decision, or DDP's collectives deadlock.
            bad = all_reduce_sum((~torch.isfinite(loss.detach())).float().reshape(1))
            bad_what = "loss" if bad.item() > 0 else None
            optimizer.zero_grad(set_to_none=True)
            if bad_what is None:
                scaler.scale(loss).backward()
                if use_scaler:
                    scaler.unscale_(optimizer)
                grads = [p.grad for p in params if p.grad is not None]
                norm = torch.nn.utils.get_total_norm(grads)
                if not use_scaler and not torch.isfinite(norm):
                    bad_what = "gradient"  # GradScaler handles inf gradients of fp16 itself
                elif cfg.train.grad_clip is not None:
                    torch.nn.utils.clip_grads_with_norm_(grads, cfg.train.grad_clip, norm)
            if bad_what is not None:
                values = _fmt_losses(loss_cls, loss_box, lr_now)
                if cfg.train.nonfinite == "skip" and skips < cfg.train.max_nonfinite_skips:
                    skips += 1
                    optimizer.zero_grad(set_to_none=True)
                    logger.print(f"warning: non-finite {bad_what} at iteration {it + 1} ({values}); "
                                 f"step skipped ({skips}/{cfg.train.max_nonfinite_skips})")
                else:
                    diverged = (it + 1, _diverged_message(it + 1, bad_what, values, net.cls_loss, last_good, skips))
                    break
            else:
                scaler.step(optimizer)
                scaler.update()
            scheduler.step()
            it += 1
            session_iters += 1

            t_end = time.perf_counter()
            window["loss"] += float(loss.detach()) if bad_what is None else 0.0
            window["loss_cls"] += float(loss_cls.detach()) if bad_what is None else 0.0
            window["loss_box"] += float(loss_box.detach()) if bad_what is None else 0.0
            window["time"] += t_end - t_prev
            window["data_time"] += t_data - t_prev
            window["n"] += 1
            t_prev = t_end
            logger.update_bar(1, loss=float(loss.detach()))
            if it % log_every == 0 or it == total_iters:
                n = window["n"]
                rec = {"type": "train", "epoch": it // iters_per_epoch + (1 if it % iters_per_epoch else 0),
                       "iter": it, "lr": lr_now, **{k: window[k] / n for k in ("loss", "loss_cls", "loss_box",
                                                                                "time", "data_time")},
                       "memory": memory_mib(device)}
                eta = (time.perf_counter() - session_t0) / session_iters * (total_iters - it)
                logger.log_train(rec, eta)
                window = dict.fromkeys(window, 0.0)
                window["n"] = 0

            end_of_epoch = it % iters_per_epoch == 0
            do_eval = it == total_iters or (sched["eval_every"] > 0 and it % sched["eval_every"] == 0)
            do_ckpt = it == total_iters or it % sched["ckpt_every"] == 0
            if do_eval:
                model.eval()
                ev = evaluate_model(net, val_set, cfg, device, train_image_counts=train_set.class_image_counts,
                                    num_train_images=len(train_set))
                model.train()
                stats = ev.stats if ev is not None else {}
                ap = distributed.broadcast_object(float(stats.get("AP", float("nan"))) if main else None)
                is_best = math.isfinite(ap) and ap > best_ap
                if is_best:
                    best_ap = ap
                epoch_no = -(-it // iters_per_epoch)
                logger.log_eval(it, epoch_no, stats)
                _log_grad_stats(logger, it, net.cls_loss)
                if main and it == total_iters and ev is not None:
                    atomic_write_json(run_dir / "eval" / "final.json", _jsonable(ev.to_dict()))
                do_ckpt = True
            elif end_of_epoch:
                _log_grad_stats(logger, it, net.cls_loss)
            if do_ckpt:
                if main:
                    last_good = str(ckpts.save(make_state(it), it, is_best=do_eval and is_best))
                distributed_barrier()
            if do_eval or do_ckpt:
                t_prev = time.perf_counter()  # evaluation and checkpoint time is not data time
            if it >= total_iters:
                break
            if end_of_epoch:
                break  # next epoch: new permutation
    logger.close()

    result["iterations"] = it
    result["metrics"] = _jsonable({k: _num(v) for k, v in stats.items()})
    result["best_ap"] = None if not math.isfinite(best_ap) else best_ap
    result["nonfinite_skips"] = skips
    result["wall_time_s"] = time.time() - t_start
    result["last_checkpoint"] = last_good
    result["loss_state_rank_diff"] = loss_state_rank_diff(net.cls_loss)
    if diverged is not None:
        result.update(status="diverged", diverged_at=diverged[0], message=diverged[1])
    if main:
        atomic_write_json(run_dir / "result.json", result)
    distributed_barrier()
    if diverged is not None:
        if main:
            print(f"focaldet train: {diverged[1]}", file=sys.stderr, flush=True)
        if raise_on_diverge:
            raise TrainingDiverged(diverged[1], hint=_DIVERGE_HINT)
    return result


_DIVERGE_HINT = ("lower train.base_lr, set train.grad_clip, cap the loss (e.g. loss.max_weight for "
                 "modified_focal), or allow a few skipped steps with train.nonfinite=skip")


def _fmt_losses(loss_cls, loss_box, lr) -> str:
    return f"loss_cls={float(loss_cls.detach()):.6g}, loss_box={float(loss_box.detach()):.6g}, lr={lr:.6g}"


def _diverged_message(it, what, values, loss_module, last_good, skips) -> str:
    params = ", ".join(f"{k}={v}" for k, v in getattr(loss_module, "params", {}).items())
    skipped = f"; {skips} step(s) skipped before" if skips else ""
    return (f"training diverged at iteration {it}: non-finite {what} ({values}); loss {loss_module.name}"
            f"({params}){skipped}; last good checkpoint: {last_good or 'none written yet'}")


def _log_grad_stats(logger: MetricLogger, it: int, loss_module) -> None:
    gs = getattr(loss_module, "grad_stats", None)
    if gs is None:
        return
    logger.log_grad_stats(it, [float(v) for v in gs.ratio().tolist()], class_gammas(loss_module))


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _jsonable(obj):
    """NaN → None so the JSON is strict (an empty AP group is 'not available')."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
