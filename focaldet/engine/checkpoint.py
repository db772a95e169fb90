"""Checkpoints: atomic writes, keep-last-K + best, safe loading, fallback to the last good file.

A checkpoint is a plain dict (design.md "Engine"): ``format_version``, ``model``, ``optimizer``,
``scheduler``, ``iter``, ``epoch``, ``sampler``, ``rng``, ``config``, ``class_names``, ``cat_ids``
(plus ``scaler``, ``best_ap``, ``nonfinite_skips``). Everything in it is a tensor or a plain
Python value, so it always loads with ``torch.load(weights_only=True)`` — a pickle that would run
code is refused, never executed.

Each file ``X.pt`` gets a sidecar ``X.pt.sha256``; a file whose digest does not match (a bit flip,
a partial copy) or that does not load (truncated) is skipped with a warning in favour of the
previous good one when resuming.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from focaldet.config import upgrade_keys
from focaldet.errors import CheckpointError
from focaldet.utils.io import atomic_write_bytes, atomic_write_text

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "iter", "config", "class_names")
# Model-config keys that change the parameters; a checkpoint trained with other values cannot load.
ARCH_KEYS = ("backbone", "norm", "fpn_channels", "p6_from", "head_depth", "head_width", "head_norm",
             "anchors.sizes", "anchors.scales", "anchors.aspect_ratios", "preset")
_ITER_RE = re.compile(r"^iter_(\d+)\.pt$")
# A torch.save zip stores its tensors uncompressed; a file declaring far more bytes than it holds
# is a decompression bomb and is refused before anything is inflated.
MAX_INFLATION = 2.0
MAX_INFLATION_SLACK = 64 * 2**20
# Config keys a resumed run may change (the change is logged in config_changes.jsonl): where
# files are, how fast and how often things happen, inference-only thresholds, and the length of
# the schedule. Any other change would make the resumed run a different experiment.
RESUMABLE_KEYS = {
    "runtime": {"work_dir", "resume", "device", "threads", "log_interval"},
    "data": {"root", "num_workers", "train_ann", "train_images", "val_ann", "val_images", "test_size",
             "rare_max", "common_max"},
    "train": {"epochs", "max_iters", "eval_interval", "eval_images", "ckpt_interval", "keep_last", "nonfinite",
              "max_nonfinite_skips"},
    "model": {"inference.score_thresh", "inference.topk_candidates", "inference.nms_thresh",
              "inference.detections_per_img"},
}


# --------------------------------------------------------------------------------------------
# RNG state as tensors / plain values (weights_only-safe)
# --------------------------------------------------------------------------------------------
def capture_rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and plain values."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            warnings.warn(f"checkpoint holds {len(cuda_states)} CUDA RNG states but "
                          f"{torch.cuda.device_count()} GPUs are visible; CUDA RNG not restored")


# --------------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------------
def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(path: Union[str, os.PathLike], state: dict) -> Path:
    """Write ``state`` atomically (temp file, flush, fsync, rename) plus its sha256 sidecar."""
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buf)
    data = buf.getvalue()
    path = Path(path)
    atomic_write_bytes(path, data)
    atomic_write_text(_sidecar(path), hashlib.sha256(data).hexdigest() + "\n")
    return path


def load_checkpoint(path: Union[str, os.PathLike], map_location: Any = "cpu") -> dict:
    """Load and check one checkpoint. Raises :class:`CheckpointError` naming the file when it is
    missing, truncated, fails its checksum, is not a focaldet checkpoint, holds anything but
    tensors and plain values, or comes from a newer format version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found",
                              hint="pass the path of a .pt file written by 'focaldet train'")
    side = _sidecar(path)
    if side.is_file():
        expected = side.read_text(errors="replace").strip()
        if expected and _sha256_of_file(path) != expected:
            raise CheckpointError(f"{path}: checksum mismatch with {side.name} (file corrupt or partly written)")
    is_zip = _check_declared_size(path)
    try:
        # mmap: tensors are paged in from the file instead of being read whole and then copied.
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=is_zip)
    except Exception as e:  # noqa: BLE001 — torch raises many types for bad files
        # torch prefixes every weights_only failure with the same advice paragraph; the line that
        # says what happened is the GLOBAL one (a Python object: refused) or e.g. "Unsupported
        # operand" (bytes that are no pickle at all: a corrupt file).
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        refused = [ln for ln in lines if "GLOBAL" in ln or "Unsupported global" in ln]
        if refused:
            raise CheckpointError(f"{path}: refused to load: it contains Python objects other than "
                                  f"tensors and plain values ({refused[0].split(' by default')[0][:200]})",
                                  hint="only load checkpoints written by focaldet from sources you trust") from None
        useful = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Please file an issue",
                                                           "Check the documentation"))]
        msg = useful[-1] if useful else (lines[0] if lines else type(e).__name__)
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {msg[:200]}") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        raise CheckpointError(f"{path}: not a focaldet checkpoint (missing {', '.join(missing)})")
    version = ckpt["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format_version {str(version)[:40]} is newer than this focaldet "
                              f"supports ({FORMAT_VERSION})", hint="upgrade focaldet to load it")
    _check_fields(path, ckpt)
    # Written by an earlier focaldet, the config may use old key names: read them as the new ones.
    ckpt["config"] = upgrade_keys(ckpt["config"], str(path))
    return ckpt


def _sha256_of_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_declared_size(path: Path) -> bool:
    """Whether ``path`` is a zip (torch's format). Refuse one whose members declare more bytes
    than ``MAX_INFLATION`` × the file size (+ slack) before anything is inflated."""
    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False  # not a zip: torch.load reports what it is
    size = path.stat().st_size
    if declared > MAX_INFLATION * size + MAX_INFLATION_SLACK:
        raise CheckpointError(f"{path}: refused: its members declare {declared / 2**20:.0f} MiB for a "
                              f"{size / 2**20:.1f} MiB file (a compressed bomb, not a torch.save checkpoint)")
    return True


def _check_fields(path: Path, ckpt: dict) -> None:
    """The plain-value fields have the types the rest of the engine relies on."""
    def bad(field, what):
        raise CheckpointError(f"{path}: field '{field}' {what}; not a checkpoint written by focaldet train")
    if not isinstance(ckpt["model"], dict) or not all(torch.is_tensor(v) for v in ckpt["model"].values()):
        bad("model", "must map parameter names to tensors")
    if type(ckpt["iter"]) is not int or ckpt["iter"] < 0:
        bad("iter", f"must be an integer >= 0, got {str(ckpt['iter'])[:40]}")
    if not isinstance(ckpt["config"], dict) or not all(isinstance(v, dict) for v in ckpt["config"].values()):
        bad("config", f"must be a mapping of config sections, got {type(ckpt['config']).__name__}")
    names = ckpt["class_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        bad("class_names", "must be a non-empty list of strings")
    cat_ids = ckpt.get("cat_ids")
    if cat_ids is not None and (not isinstance(cat_ids, list) or len(cat_ids) != len(names)
                                or not all(type(c) is int for c in cat_ids) or len(set(cat_ids)) != len(cat_ids)):
        bad("cat_ids", f"must be {len(names)} distinct integers, one per class name")


def config_changes(old: dict, new: dict) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Any, Any]]]:
    """Compare a checkpoint's stored config with the config of a resumed run, key by key.
    Returns (allowed, refused) lists of ``(dotted key, old value, new value)``; allowed keys are
    :data:`RESUMABLE_KEYS`. A key absent from ``old`` (saved by an older focaldet, which behaved
    as the key's default does) is compared as its default value, and ``train.max_iters`` may only
    change while staying set (or unset): switching between epochs and iterations changes what the
    milestones mean."""
    from focaldet.config import config_from_dict

    defaults = config_from_dict({}).to_dict()
    allowed, refused = [], []
    for section in sorted(set(old) | set(new)):
        o, n = flat_keys(old.get(section) or {}), flat_keys(new.get(section) or {})
        if section == "loss":  # a parameter left out means its default: compare what the loss used
            o, n = _with_loss_defaults(o), _with_loss_defaults(n)
        else:
            o = {**flat_keys(defaults.get(section) or {}), **o}
        for key in sorted(set(o) | set(n)):
            if key not in o or o.get(key) == n.get(key):
                continue
            change = (f"{section}.{key}", o.get(key), n.get(key))
            ok = key in RESUMABLE_KEYS.get(section, set())
            if section == "train" and key == "max_iters" and (o[key] is None) != (n.get(key) is None):
                ok = False
            (allowed if ok else refused).append(change)
    return allowed, refused


def flat_keys(section: dict, prefix: str = "") -> dict:
    """A config section with its groups spelled out (``{"anchors": {"sizes": s}}`` gives
    ``{"anchors.sizes": s}``), so that a change is reported, and allowed, key by key."""
    out = {}
    for key, value in section.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _with_loss_defaults(loss: dict) -> dict:
    from focaldet.losses import LOSSES, loss_parameters

    name = loss.get("name")
    defaults = loss_parameters(name) if name in LOSSES else {}
    return {**defaults, **loss}


def all_finite(state: dict) -> bool:
    """Whether every floating-point tensor of a ``state_dict`` is finite."""
    return all(bool(torch.isfinite(v).all()) for v in state.values() if torch.is_tensor(v) and v.is_floating_point())


def check_compatible(ckpt: dict, model_cfg: dict, num_classes: int, loss_name: str, path: Union[str, Path]) -> None:
    """Raise :class:`CheckpointError` when ``ckpt`` was trained with another architecture, number
    of classes or loss family than the config at hand, naming each differing key."""
    problems = []
    n_ckpt = len(ckpt["class_names"])
    if n_ckpt != num_classes:
        problems.append(f"number of classes {n_ckpt} in the checkpoint but {num_classes} in the dataset")
    old = flat_keys((ckpt.get("config") or {}).get("model", {}))
    model_cfg = flat_keys(model_cfg)
    for key in ARCH_KEYS:
        if key in old and key in model_cfg and old[key] != model_cfg[key]:
            problems.append(f"model.{key}={old[key]!r} in the checkpoint but {model_cfg[key]!r} in the config")
    old_loss = (ckpt.get("config") or {}).get("loss", {}).get("name")
    if old_loss is not None and old_loss != loss_name:
        problems.append(f"loss.name={old_loss!r} in the checkpoint but {loss_name!r} in the config")
    if problems:
        raise CheckpointError(f"{path}: does not match the config: " + "; ".join(problems),
                              hint="use the config the checkpoint was trained with (config.yaml in its run directory)")


def load_model_state(model: torch.nn.Module, state: dict, path: Union[str, Path]) -> None:
    """``load_state_dict(strict=True)`` with torch's size/key errors turned into one clear line."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:4]) if len(lines) > 1 else lines[0] if lines else ""
        raise CheckpointError(f"{path}: model weights do not fit this model: {detail[:400]}",
                              hint="use the config the checkpoint was trained with") from None


# --------------------------------------------------------------------------------------------
# Run-directory bookkeeping
# --------------------------------------------------------------------------------------------
class CheckpointManager:
    """``checkpoints/iter_XXXXXXX.pt`` (the last ``keep_last`` kept), ``last.pt`` and ``best.pt``."""

    def __init__(self, directory: Union[str, os.PathLike], keep_last: int = 3):
        self.dir = Path(directory)
        self.keep_last = keep_last

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by a write that was killed (``.name.*.tmp``); returns how
        many. Call once when a run starts, before any checkpoint is written."""
        if not self.dir.is_dir():
            return 0
        stale = [p for p in self.dir.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)

    def iter_files(self) -> list[Path]:
        """Periodic checkpoints, newest first."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := _ITER_RE.match(p.name))]
        return [p for _, p in sorted(found, reverse=True)]

    def save(self, state: dict, iteration: int, is_best: bool = False) -> Path:
        path = save_checkpoint(self.dir / f"iter_{iteration:07d}.pt", state)
        self._alias(path, self.dir / "last.pt")
        if is_best:
            self._alias(path, self.dir / "best.pt")
        for old in self.iter_files()[self.keep_last:]:
            for p in (old, _sidecar(old)):
                p.unlink(missing_ok=True)
        return path

    def mark_best(self, path: Path, iteration: int, ap: float) -> None:
        """Point ``best.pt`` at checkpoint ``path`` and record its AP in ``best.json`` (the
        checkpoint itself was written before its evaluation, so it cannot hold this AP)."""
        self._alias(Path(path), self.dir / "best.pt")
        atomic_write_text(self.dir / "best.json", json.dumps({"iter": int(iteration), "ap": float(ap)}) + "\n")

    def best_ap_up_to(self, iteration: int) -> float:
        """The AP recorded in ``best.json`` when it belongs to ``iteration`` or earlier; -inf otherwise."""
        try:
            best = json.loads((self.dir / "best.json").read_text())
            if int(best["iter"]) <= iteration:
                return float(best["ap"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return float("-inf")

    @staticmethod
    def _alias(src: Path, dst: Path) -> None:
        """Make ``dst`` a copy of ``src`` atomically; a hard link costs no extra disk write."""
        tmp = dst.with_name(f".{dst.name}.link.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
            os.replace(tmp, dst)
            atomic_write_text(_sidecar(dst), _sidecar(src).read_text())
        except OSError:
            tmp.unlink(missing_ok=True)
            atomic_write_bytes(dst, src.read_bytes())
            atomic_write_text(_sidecar(dst), _sidecar(src).read_text())

    def latest_good(self, map_location: Any = "cpu") -> Optional[tuple[Path, dict]]:
        """Newest checkpoint that loads and passes its checksum: ``last.pt`` first, then the
        periodic files newest first; each bad one is reported with a warning. None when there is
        none at all."""
        candidates = [self.dir / "last.pt"] + self.iter_files()
        errors = []
        for p in candidates:
            if not p.is_file():
                continue
            try:
                ckpt = load_checkpoint(p, map_location)
            except CheckpointError as e:
                errors.append(str(e))
                warnings.warn(f"skipping bad checkpoint: {e}", RuntimeWarning, stacklevel=2)
                continue
            if p.name == "last.pt":  # prefer a periodic file of the same iteration for messages
                twin = self.dir / f"iter_{int(ckpt['iter']):07d}.pt"
                if twin.is_file():
                    p = twin
            return p, ckpt
        if errors:
            raise CheckpointError(f"{self.dir}: no loadable checkpoint; " + " | ".join(errors))
        return None
