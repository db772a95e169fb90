"""Training logs: console lines in the mmengine shape (or a tqdm bar on a terminal),
``metrics.jsonl``, ``metrics.csv`` and TensorBoard event files when tensorboard is installed.

Only rank 0 writes; other ranks get a :class:`MetricLogger` with ``enabled=False``.
"""
from __future__ import annotations

import csv
import datetime
import json
import math
import sys
from pathlib import Path
from typing import Optional

from focaldet.utils.io import atomic_write_text

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
             "APr", "APc", "APf")
CSV_FIELDS = ("type", "epoch", "iter", "lr", "loss", "loss_cls", "loss_box", "time", "data_time",
              "memory") + STAT_KEYS


def format_eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def format_train_line(rec: dict, total_iters: int, iters_per_epoch: int, eta_s: float) -> str:
    """One line like mmengine's:
    ``Epoch(train) [1][ 20/100]  lr: 1.0000e-02  eta: 0:01:23  time: 0.5123  data_time: 0.0123
    memory: 812  loss: 1.2345  loss_cls: 1.0012  loss_box: 0.2333``.
    ``iter`` within the epoch is shown like mmengine; the global iteration follows in brackets."""
    it_in_epoch = (rec["iter"] - 1) % iters_per_epoch + 1
    width = len(str(iters_per_epoch))
    return (f"Epoch(train) [{rec['epoch']}][{it_in_epoch:>{width}}/{iters_per_epoch}] "
            f"(iter {rec['iter']}/{total_iters})  lr: {rec['lr']:.4e}  eta: {format_eta(eta_s)}  "
            f"time: {rec['time']:.4f}  data_time: {rec['data_time']:.4f}  memory: {rec['memory']:.0f}  "
            f"loss: {rec['loss']:.4f}  loss_cls: {rec['loss_cls']:.4f}  loss_box: {rec['loss_box']:.4f}")


class MetricLogger:
    def __init__(self, run_dir: Path, total_iters: int, iters_per_epoch: int, enabled: bool = True,
                 use_tqdm: Optional[bool] = None, stream=None, start_iter: int = 0):
        self.run_dir = Path(run_dir)
        self.total_iters = total_iters
        self.iters_per_epoch = iters_per_epoch
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.csv_path = self.run_dir / "metrics.csv"
        self._bar = None
        self._tb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # After a resume, drop lines logged past the checkpoint so the files read like one run.
        self._truncate_after(start_iter)
        if use_tqdm is None:
            use_tqdm = hasattr(self.stream, "isatty") and self.stream.isatty()
        if use_tqdm:
            from tqdm import tqdm
            self._bar = tqdm(total=total_iters, initial=start_iter, file=self.stream, dynamic_ncols=True,
                             desc="train")
        try:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=start_iter + 1 if start_iter else None)
        except Exception:  # noqa: BLE001 — tensorboard missing or broken: logs go to files only
            self._tb = None

    # ---------------------------------------------------------------------------------------
    def _truncate_after(self, start_iter: int) -> None:
        if self.jsonl_path.is_file():
            keep = [ln for ln in self.jsonl_path.read_text().splitlines()
                    if ln.strip() and _iter_of_json(ln) <= start_iter]
            atomic_write_text(self.jsonl_path, "".join(ln + "\n" for ln in keep))
        if self.csv_path.is_file() and start_iter > 0:
            with self.csv_path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if _int_or(r.get("iter"), 0) <= start_iter]
            self._write_csv_rows(rows, mode="w")
        elif start_iter == 0:
            for p in (self.jsonl_path, self.csv_path):
                p.unlink(missing_ok=True)

    def _write_csv_rows(self, rows: list[dict], mode: str = "a") -> None:
        new = mode == "w" or not self.csv_path.is_file()
        with self.csv_path.open(mode, newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            for r in rows:
                w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})

    def _append(self, rec: dict, csv_row: bool = True) -> None:
        with self.jsonl_path.open("a") as fh:
            fh.write(json.dumps(rec, allow_nan=True) + "\n")
            fh.flush()
        if csv_row:
            self._write_csv_rows([rec])

    def print(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    # ---------------------------------------------------------------------------------------
    def log_train(self, rec: dict, eta_s: float, print_line: bool = True) -> None:
        """``rec``: type, epoch, iter (1-based global), lr, loss, loss_cls, loss_box, time,
        data_time (seconds per iteration), memory (MiB)."""
        if not self.enabled:
            return
        self._append(rec)
        if self._tb is not None:
            for k in ("loss", "loss_cls", "loss_box", "lr", "time"):
                self._tb.add_scalar(f"train/{k}", rec[k], rec["iter"])
        if print_line:
            self.print(format_train_line(rec, self.total_iters, self.iters_per_epoch, eta_s))

    def update_bar(self, n: int = 1, **postfix) -> None:
        if self.enabled and self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4f}" for k, v in postfix.items()}, refresh=False)

    def log_eval(self, iteration: int, epoch: int, stats: dict, *, images: Optional[int] = None,
                 subset: bool = False) -> None:
        """One evaluation: ``images`` val images were scored; ``subset``: only the first ones of the
        val set (``train.eval_images``), which the learning curve follows."""
        if not self.enabled:
            return
        rec = {"type": "eval", "iter": iteration, "epoch": epoch,
               **({} if images is None else {"images": images, "subset": subset}),
               **{k: _clean(v) for k, v in stats.items()}}
        self._append(rec)
        if self._tb is not None:
            for k, v in stats.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{'val_first' if subset else 'val'}/{k}", v, iteration)
        shown = "  ".join(f"{k}: {stats[k]:.4f}" for k in STAT_KEYS if k in stats)
        self.print(f"Epoch(val{f' first {images}' if subset else ''}) [{epoch}] (iter {iteration})  {shown}")

    def log_record(self, rec: dict) -> None:
        """Append a free-form record (``type`` and ``iter`` keys) to ``metrics.jsonl`` only."""
        if self.enabled:
            self._append(rec, csv_row=False)

    def log_grad_stats(self, iteration: int, ratio: list[float], gamma: Optional[list[float]]) -> None:
        if not self.enabled:
            return
        self._append({"type": "grad_stats", "iter": iteration, "ratio": ratio, "gamma": gamma}, csv_row=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def _clean(v):
    """NaN stays NaN in JSON (``NaN`` literal, read back by json.loads) — an empty AP group."""
    return float(v) if isinstance(v, (int, float)) else v


def _iter_of_json(line: str) -> int:
    try:
        return int(json.loads(line).get("iter", 0))
    except (ValueError, TypeError, AttributeError):
        return 1 << 60  # unreadable line (a write cut by a kill): dropped


def _int_or(v, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 1 << 60
