"""Typed configuration: small YAML files mapped onto dataclasses.

A config file has up to five sections: ``model``, ``loss``, ``data``, ``train`` and ``runtime``.
``model`` keeps the architecture keys flat and groups the rest by the stage of the detector they
set: ``model.anchors``, ``model.matching``, ``model.box_loss`` and ``model.inference``; ``data``
groups the benchmark generator's settings in ``data.generator``. Every key is checked on load: an
unknown key, a wrong type, a number that is not finite (NaN, inf) or an out-of-range value raises
:class:`ConfigError` naming the file and the dotted key (``cfg.yaml: model.anchors.sizes[]: …``);
the offending value is shown shortened, whatever its size. Command-line overrides use the same
dotted names (``loss.gamma=1 train.epochs=6 model.anchors.sizes=[16,32,64,128,256]``); their
values are parsed as YAML scalars.

The ``loss`` section is special: besides ``name`` it holds the keyword parameters of that loss
(``loss: {name: focal, gamma: 2, alpha: 0.25}``). They are checked on load too, against the loss's
own signature and ranges (:func:`focaldet.losses.check_loss_params`), without building it. Choosing
another loss on the command line (``loss.name=equalized_focal``) drops the file's parameters that
the new loss does not take, with a one-line notice; ``loss.KEY=null`` removes a parameter (its
default applies).

Keys of earlier versions (``model.anchor_sizes``, ``data.gen_seed``, …; :data:`RENAMED_KEYS`) are
read under their new names, with a one-line note, wherever a config comes from: a file, an
override, or the config stored in a checkpoint, run folder or comparison plan.
"""
from __future__ import annotations

import dataclasses
import math
import os
import reprlib
import sys
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from focaldet.errors import FocaldetError


class ConfigError(FocaldetError, ValueError):
    """A configuration problem; the message names the file and the dotted key."""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
@dataclass
class AnchorConfig:
    """``model.anchors``: the anchor boxes of each FPN level (docs/spec.md §4), base size × scale,
    with each aspect ratio; sizes in pixels of the network input. They fix the head's output shape."""

    sizes: Optional[list[float]] = None  # None → 32·2^(l−3) for P3..P7
    scales: list[float] = field(default_factory=lambda: [1.0, 2 ** (1 / 3), 2 ** (2 / 3)])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])

    def validate(self, where: str) -> None:
        if self.sizes is not None and len(self.sizes) != 5:
            raise ConfigError(f"{where}.sizes: need 5 base sizes (P3..P7), got {len(self.sizes)}")
        for name in ("sizes", "scales", "aspect_ratios"):
            for v in getattr(self, name) or []:
                _range(where, f"{name}[]", v, 0.0, MAX_PIXELS_PER_SIDE, open_lo=True)


@dataclass
class MatchingConfig:
    """``model.matching``: how anchors become training targets — IoU thresholds, crowd regions —
    and the loss normaliser, the number of positive anchors those targets give."""

    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.4
    allow_low_quality_matches: bool = True
    crowd_ioa_thresh: Optional[float] = 0.5  # anchors with more of their area inside a crowd box are ignored
    normalizer: str = "batch"  # batch | ema (of the number of positive anchors)
    normalizer_momentum: float = 0.9

    def validate(self, where: str) -> None:
        _range(where, "fg_iou_thresh", self.fg_iou_thresh, 0.0, 1.0)
        _range(where, "bg_iou_thresh", self.bg_iou_thresh, 0.0, self.fg_iou_thresh)
        if self.crowd_ioa_thresh is not None:
            _range(where, "crowd_ioa_thresh", self.crowd_ioa_thresh, 0.0, 1.0)
        _choice(where, "normalizer", self.normalizer, ("batch", "ema"))
        _range(where, "normalizer_momentum", self.normalizer_momentum, 0.0, 1.0)


@dataclass
class BoxLossConfig:
    """``model.box_loss``: the box-regression loss of the positive anchors and the clamp on the
    decoded log-size deltas (``dw``, ``dh``) that keeps ``exp`` finite."""

    name: str = "l1"  # l1 | smooth_l1 | giou
    beta: float = 0.1  # smooth_l1 only
    weight: float = 1.0
    clamp: float = 4.135166556742356  # log(1000/16)

    def validate(self, where: str) -> None:
        _choice(where, "name", self.name, ("l1", "smooth_l1", "giou"))
        _range(where, "beta", self.beta, 0.0, None)
        _range(where, "weight", self.weight, 0.0, None)
        _range(where, "clamp", self.clamp, 0.0, None, open_lo=True)


@dataclass
class InferenceConfig:
    """``model.inference``: post-processing of the detections (no effect on training)."""

    score_thresh: float = 0.05
    topk_candidates: int = 1000  # per level, before NMS
    nms_thresh: float = 0.5
    detections_per_img: int = 100

    def validate(self, where: str) -> None:
        _range(where, "score_thresh", self.score_thresh, 0.0, 1.0)
        _range(where, "topk_candidates", self.topk_candidates, 1, 10**6)
        _range(where, "nms_thresh", self.nms_thresh, 0.0, 1.0)
        _range(where, "detections_per_img", self.detections_per_img, 1, 10**5)


@dataclass
class ModelConfig:
    """RetinaNet (docs/spec.md §4): the architecture keys, flat, then one group per stage of the
    detector that has settings of its own. Sizes in pixels of the network input."""

    backbone: str = "resnet50"  # resnet18 | resnet34 | resnet50 | resnet101 | mobilenet_v2 | resnet{10,18}_w{32,48} (narrow, CPU)
    # None | "imagenet" (ResNets: online only; mobilenet_v2: offline from the installed weights
    # package, else online) | path to a state_dict
    backbone_weights: Optional[str] = None
    norm: str = "frozen_bn"  # frozen_bn | bn | gn
    frozen_stages: int = 2  # backbone stages frozen (0 = none; 1 = stem; 2 = stem + layer1 / the stride-4 stage, as torchvision/detectron2/mmdet)
    fpn_channels: int = 256
    p6_from: str = "c5"  # c5 (paper) | p5 (torchvision v1)
    head_depth: int = 4
    head_width: int = 256
    head_norm: Optional[str] = None  # None | gn
    prior_prob: float = 0.01
    preset: Optional[str] = None  # None | torchvision_v1
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    box_loss: BoxLossConfig = field(default_factory=BoxLossConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def validate(self, where: str) -> None:
        _choice(where, "backbone", self.backbone, ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2",
                                                   "resnet10_w32", "resnet18_w32", "resnet10_w48", "resnet18_w48"))
        _choice(where, "norm", self.norm, ("frozen_bn", "bn", "gn"))
        _choice(where, "p6_from", self.p6_from, ("c5", "p5"))
        _range(where, "prior_prob", self.prior_prob, 0.0, 1.0, open_lo=True, open_hi=True)
        if self.preset is not None:
            _choice(where, "preset", self.preset, ("torchvision_v1",))
        _range(where, "head_depth", self.head_depth, 0, 64)
        for name in ("fpn_channels", "head_width"):
            _range(where, name, getattr(self, name), 1, 4096)
        _range(where, "frozen_stages", self.frozen_stages, 0, 5)
        for group in ("anchors", "matching", "box_loss", "inference"):
            getattr(self, group).validate(f"{where}.{group}")


@dataclass
class LossConfig:
    """The classification loss: ``name`` plus that loss's keyword parameters."""

    name: str = "focal"
    params: dict[str, Any] = field(default_factory=dict)
    track_grad_stats: bool = True  # per-class G+/G- diagnostics for any sigmoid loss
    # torch.compile the sigmoid losses' fused pass (inputs >= 2^20 elements); null = the
    # FOCALDET_COMPILE environment variable (default on). Off pays for short CPU runs, where the
    # one-time compile costs as long as the training (docs/cpu_presets.md).
    compile: Optional[bool] = None

    def validate(self, where: str) -> None:
        """The name and parameters against the loss itself (its signature and its ranges), once,
        here: a wrong one fails when the config is loaded, before any data is generated or read."""
        from focaldet.losses import LossConfigError, check_loss_params

        _check_loss_params(where, self.params)
        try:
            check_loss_params(self.name, self.params)
        except LossConfigError as e:
            raise ConfigError(f"{where}.{_name(e.param)}: {str(e)[:300]}") from None


@dataclass
class GeneratorConfig:
    """``data.generator``: how a benchmark named by ``data.benchmark`` is drawn (focaldet/data/benchmark)."""

    train: int = 600  # images
    val: int = 150
    size: int = 288  # pixels per side
    seed: int = 0
    classes: str = "category"  # category | instance (lt-stamps: one class per cut-out)

    def validate(self, where: str) -> None:
        _choice(where, "classes", self.classes, ("category", "instance"))
        for name in ("train", "val"):
            _range(where, name, getattr(self, name), 1, 10**6)
        _range(where, "size", self.size, 1, MAX_PIXELS_PER_SIDE)
        _range(where, "seed", self.seed, 0, MAX_SEED)


@dataclass
class DataConfig:
    """Where the images and COCO JSON files are, and how they are resized and batched."""

    benchmark: Optional[str] = None  # None | lt-stamps | lt-digits: generated under `root` if missing
    root: str = "data"  # base folder for relative paths below and for generated benchmarks
    train_ann: Optional[str] = None
    train_images: Optional[str] = None
    val_ann: Optional[str] = None
    val_images: Optional[str] = None
    train_sizes: list[int] = field(default_factory=lambda: [800])  # short side, one drawn per image
    max_size: int = 1333
    test_size: int = 800
    flip_prob: float = 0.5
    # batches and the model's input are zero-padded to a multiple of this: 32 (C5's stride), as
    # torchvision, detectron2 and mmdetection pad; 128 (P7's stride, focaldet before 2026-12-03)
    # computes up to 17 % more pixels at COCO sizes (800 x 1333 -> 896 x 1408) for nothing
    size_divisibility: int = 32
    strict: bool = False  # degenerate / outside boxes: False = drop and count, True = DataError
    batch_size: int = 2  # images per process
    num_workers: int = 2
    # uniform: every image once per epoch | repeat_factor: LVIS's repeat-factor sampling, images
    # of classes seen in fewer than a fraction `repeat_threshold` of the images drawn more often
    sampler: str = "uniform"
    repeat_threshold: float = 0.001
    # long-tail groups of the evaluation (any dataset, generated or not): classes with ≤ rare_max
    # training images are rare, ≤ common_max common
    rare_max: Optional[int] = None  # None → scaled from LVIS's 10/100 to the dataset
    common_max: Optional[int] = None
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)  # used when `benchmark` is set

    def validate(self, where: str) -> None:
        if self.benchmark is not None:
            _choice(where, "benchmark", self.benchmark, ("lt-stamps", "lt-digits", "auto"))
        # Upper bounds keep one typo from asking for hundreds of GB (a padded batch is
        # batch x 3 x max_size² bytes, rounded up to size_divisibility).
        _range(where, "batch_size", self.batch_size, 1, 4096)
        _range(where, "num_workers", self.num_workers, 0, 256)
        _choice(where, "sampler", self.sampler, ("uniform", "repeat_factor"))
        _range(where, "repeat_threshold", self.repeat_threshold, 0.0, 1.0, open_lo=True)
        _range(where, "flip_prob", self.flip_prob, 0.0, 1.0)
        _range(where, "max_size", self.max_size, 1, MAX_PIXELS_PER_SIDE)
        _range(where, "test_size", self.test_size, 1, MAX_PIXELS_PER_SIDE)
        _range(where, "size_divisibility", self.size_divisibility, 1, 1024)
        for name in ("rare_max", "common_max"):
            if getattr(self, name) is not None:
                _range(where, name, getattr(self, name), 0, None)
        if not isinstance(self.strict, bool):
            raise ConfigError(f"{where}.strict: expected true/false, got {self.strict!r}")
        if not self.train_sizes:
            raise ConfigError(f"{where}: data.train_sizes must not be empty")
        for s in self.train_sizes:
            _range(where, "train_sizes[]", s, 1, MAX_PIXELS_PER_SIDE)
        self.generator.validate(f"{where}.generator")


@dataclass
class TrainConfig:
    """Optimisation schedule (docs/spec.md §4 recipe by default)."""

    epochs: int = 12
    max_iters: Optional[int] = None  # overrides epochs when set
    base_lr: float = 0.01  # for `base_batch` images; scaled linearly to the real total batch
    base_batch: int = 16
    # lr of the backbone's parameters relative to base_lr (detectron2's BACKBONE_MULTIPLIER); 1: same
    backbone_lr_mult: float = 1.0
    optimizer: str = "sgd"  # sgd (SGD with momentum, docs/spec.md §4) | adamw (β = 0.9, 0.999)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_factor: float = 0.001
    milestones: list[float] = field(default_factory=lambda: [8, 11])  # epochs (or iters if max_iters)
    lr_gamma: float = 0.1
    grad_clip: Optional[float] = None  # max L2 norm of all gradients
    amp: str = "none"  # none | fp16 (CUDA) | bf16 (CUDA and CPU); see engine/amp.py
    eval_interval: int = 1  # epochs (or iters if max_iters) between evaluations; 0 = only at the end
    # evaluations before the last one use only the first N val images (by image id), the last one
    # every image: cheap learning curves on a large val set; best.pt is chosen on those N. None: all
    eval_images: Optional[int] = None
    ckpt_interval: int = 1  # epochs (or iters if max_iters) between checkpoints
    keep_last: int = 3
    nonfinite: str = "stop"  # stop | skip
    max_nonfinite_skips: int = 10

    def validate(self, where: str) -> None:
        _range(where, "epochs", self.epochs, 1, 10**6)
        if self.max_iters is not None:
            _range(where, "max_iters", self.max_iters, 1, 10**9)
        _range(where, "base_lr", self.base_lr, 0.0, None, open_lo=True)
        _range(where, "base_batch", self.base_batch, 1, 10**6)
        _range(where, "backbone_lr_mult", self.backbone_lr_mult, 0.0, None)
        _choice(where, "optimizer", self.optimizer, ("sgd", "adamw"))
        _range(where, "momentum", self.momentum, 0.0, 1.0)
        _range(where, "weight_decay", self.weight_decay, 0.0, None)
        _range(where, "warmup_iters", self.warmup_iters, 0, None)
        _range(where, "warmup_factor", self.warmup_factor, 0.0, 1.0)
        _range(where, "lr_gamma", self.lr_gamma, 0.0, 1.0, open_lo=True)
        for m in self.milestones:
            _range(where, "milestones[]", m, 0.0, None)
        if self.grad_clip is not None:
            _range(where, "grad_clip", self.grad_clip, 0.0, None, open_lo=True)
        _choice(where, "amp", self.amp, ("none", "fp16", "bf16"))
        _choice(where, "nonfinite", self.nonfinite, ("stop", "skip"))
        _range(where, "eval_interval", self.eval_interval, 0, None)
        if self.eval_images is not None:
            _range(where, "eval_images", self.eval_images, 1, None)
        _range(where, "ckpt_interval", self.ckpt_interval, 1, None)
        _range(where, "keep_last", self.keep_last, 1, None)
        _range(where, "max_nonfinite_skips", self.max_nonfinite_skips, 0, None)


@dataclass
class RuntimeConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False
    threads: Optional[int] = None  # torch intra-op threads on CPU (None = torch default)
    # NHWC weights and activations (oneDNN / cuDNN's fast layout). Off trains large ResNets faster
    # on CPU, where NHWC convolution *backward* is slower (docs/performance.md); results equal up to rounding
    channels_last: bool = True
    work_dir: str = "runs/default"
    log_interval: int = 20
    resume: str = "none"  # none | auto | path to a checkpoint

    def validate(self, where: str) -> None:
        _range(where, "seed", self.seed, 0, MAX_SEED)
        _range(where, "log_interval", self.log_interval, 1, None)
        if self.threads is not None:
            _range(where, "threads", self.threads, 1, 1024)
        _device(where, self.device)
        if not self.work_dir:
            raise ConfigError(f"{where}.work_dir: must not be empty")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    source: str = "<defaults>"  # the file this config came from (not a YAML key)

    def validate(self) -> "Config":
        for sec in ("model", "data", "train", "runtime"):
            getattr(self, sec).validate(f"{self.source}: {sec}")
        self.loss.validate(f"{self.source}: loss")
        return self

    def to_dict(self) -> dict:
        """Plain, YAML-serialisable dict with the loss parameters flattened as in the files."""
        d = {}
        for f in fields(self):
            if f.name == "source":
                continue
            d[f.name] = dataclasses.asdict(getattr(self, f.name))
        loss = d["loss"]
        params = loss.pop("params")
        d["loss"] = {"name": loss["name"], **params, "track_grad_stats": loss["track_grad_stats"],
                     "compile": loss["compile"]}
        return d

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS = {"model": ModelConfig, "loss": LossConfig, "data": DataConfig, "train": TrainConfig,
            "runtime": RuntimeConfig}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def load_config(path: Union[str, os.PathLike, None] = None, overrides: Optional[list[str]] = None) -> Config:
    """Read a YAML config (or start from defaults when ``path`` is None), apply ``key=value``
    overrides, check every key and value, and return a :class:`Config`."""
    raw: dict = {}
    source = "<defaults>"
    if path is not None:
        p = resolve_config_path(path)
        source = str(p)
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML: {str(e)[:300]}") from None
        except RecursionError:
            raise ConfigError(f"{source}: YAML nested too deeply") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{source}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
        except ValueError as e:  # e.g. an integer of more than 4,300 digits
            raise ConfigError(f"{source}: a value cannot be read ({str(e)[:80]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    raw = upgrade_keys(raw, source)
    file_loss = raw.get("loss") if isinstance(raw.get("loss"), dict) else {}
    file_loss_name, file_params = file_loss.get("name", "focal"), set(file_loss) - {"name", "track_grad_stats", "compile"}
    file_data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    file_paths = {split: file_data.get(f"{split}_ann") for split in ("train", "val")}
    set_by_override = set()
    for ov in overrides or []:
        set_by_override.add(apply_override(raw, ov))
    _switch_loss(raw, source, file_loss_name, file_params, set_by_override)
    _check_generator_override(raw, source, file_paths, set_by_override)
    return config_from_dict(raw, source)


PRESETS_DIR = Path(__file__).resolve().parent / "configs"  # shipped in the wheel as package data


def preset_names() -> list[str]:
    """Names of the packaged presets (``lt_stamps_cpu``, …), usable wherever a config path is."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_config_path(path: Union[str, os.PathLike]) -> Path:
    """``path`` when it is a file; else, for a bare name (``lt_digits_cpu`` or
    ``lt_digits_cpu.yaml``), the packaged preset of that name."""
    p = Path(path)
    if p.is_file():
        return p
    if p.parent == Path(".") and (PRESETS_DIR / f"{p.stem}.yaml").is_file() and p.suffix in ("", ".yaml"):
        return PRESETS_DIR / f"{p.stem}.yaml"
    hint = ""
    if p.suffix == ".yaml" and (PRESETS_DIR / p.name).is_file():
        # `configs/` is a link into the package in a checkout only; an installed focaldet has the preset
        hint = f"outside a focaldet checkout, name the packaged preset: {p.stem}"
    raise ConfigError(f"{path}: config file not found (and not a packaged preset: {', '.join(preset_names())})",
                      hint=hint)


def _check_generator_override(raw: dict, source: str, file_paths: dict, overridden: set) -> None:
    """A run's saved ``config.yaml`` records the generated files it used, and given paths win over
    ``data.benchmark`` (data/loader.resolve_data). So ``data.generator.val=1000`` on the command
    line of ``focaldet eval runs/x/config.yaml`` would be ignored without a word: refuse it, and
    say which keys to clear."""
    generator = sorted(k for k in overridden if k == "data.generator" or k.startswith("data.generator."))
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    if not generator or data.get("benchmark") is None:
        return
    for split, path in file_paths.items():
        if path is not None and f"data.{split}_ann" not in overridden and data.get(f"{split}_ann") is not None:
            raise ConfigError(f"{source}: override {generator[0]} would be ignored: the file sets data.{split}_ann "
                              f"({path}), and given paths win over data.benchmark",
                              hint=f"to draw the benchmark data.generator describes, also give "
                                   f"data.{split}_ann=null data.{split}_images=null")


def _switch_loss(raw: dict, source: str, file_name: str, file_params: set, overridden: set) -> None:
    """After overrides: drop ``loss.KEY: null`` entries (default applies) and, when the override
    chose another loss than the file, the file's parameters that the new loss does not take."""
    loss = raw.get("loss")
    if not isinstance(loss, dict):
        return
    for key in [k for k, v in loss.items() if v is None and k not in ("name", "track_grad_stats", "compile", "params")]:
        del loss[key]
    name = loss.get("name", "focal")
    if name == file_name or not isinstance(name, str):
        return
    from focaldet.losses import LOSSES, loss_parameters

    if name not in LOSSES:
        return  # reported by the loss check with the list of names
    valid = loss_parameters(name)
    dropped = sorted(k for k in file_params if k in loss and k not in valid and f"loss.{k}" not in overridden)
    for k in dropped:
        del loss[k]
    if dropped and os.environ.get("RANK", "0") == "0":
        print(f"focaldet: note: loss.name={name} does not take {', '.join(dropped)} (set for {file_name} in "
              f"{source}); dropped", file=sys.stderr)


# Keys of focaldet before the model and data sections were grouped (issue #13), and where they
# are now. YAML files, overrides and the configs stored in checkpoints and run folders all go
# through this one table. ``model.box_loss`` comes first: it was the loss's name and is now the
# group that the next three keys move into.
RENAMED_KEYS = {
    "model.box_loss": "model.box_loss.name",  # only when its value is no mapping (the old form)
    "model.smooth_l1_beta": "model.box_loss.beta",
    "model.box_loss_weight": "model.box_loss.weight",
    "model.bbox_clamp": "model.box_loss.clamp",
    "model.anchor_sizes": "model.anchors.sizes",
    "model.anchor_scales": "model.anchors.scales",
    "model.aspect_ratios": "model.anchors.aspect_ratios",
    "model.fg_iou_thresh": "model.matching.fg_iou_thresh",
    "model.bg_iou_thresh": "model.matching.bg_iou_thresh",
    "model.allow_low_quality_matches": "model.matching.allow_low_quality_matches",
    "model.crowd_ioa_thresh": "model.matching.crowd_ioa_thresh",
    "model.normalizer": "model.matching.normalizer",
    "model.normalizer_momentum": "model.matching.normalizer_momentum",
    "model.score_thresh": "model.inference.score_thresh",
    "model.topk_candidates": "model.inference.topk_candidates",
    "model.nms_thresh": "model.inference.nms_thresh",
    "model.detections_per_img": "model.inference.detections_per_img",
    "data.gen_train": "data.generator.train",
    "data.gen_val": "data.generator.val",
    "data.gen_size": "data.generator.size",
    "data.gen_seed": "data.generator.seed",
    "data.gen_classes": "data.generator.classes",
}


def _renamed(key: str, value: Any) -> Optional[str]:
    """The new name of an old dotted ``key`` holding ``value``; None when ``key`` is current."""
    if key == "model.box_loss" and isinstance(value, dict):
        return None
    return RENAMED_KEYS.get(key)


def _note_renamed(moved: list[tuple[str, str]], where: str) -> None:
    """One line on stderr (rank 0) for all the old keys of one file, checkpoint or override."""
    if not moved or os.environ.get("RANK", "0") != "0":
        return
    (old, new), more = moved[0], len(moved) - 1
    rest = f" (+{more} more renamed key{'s' * (more > 1)}; README, 'Configs')" if more else ""
    print(f"focaldet: note: {_name(where)}: {old} is now {new}{rest}", file=sys.stderr)


def upgrade_keys(raw: dict, where: str, *, note: bool = True) -> dict:
    """``raw`` (a config mapping) with the old keys of :data:`RENAMED_KEYS` moved to their new
    place, so that files, checkpoints and run folders written by an earlier focaldet still load;
    ``note``: say so on stderr. ``raw`` itself is left as it was; a key given under both names
    is an error."""
    if not isinstance(raw, dict):
        return raw
    out = {sec: dict(v) if isinstance(v, dict) else v for sec, v in raw.items()}
    moved = []
    for old in RENAMED_KEYS:
        sec, key = old.split(".")
        section = out.get(sec)
        if not isinstance(section, dict) or key not in section:
            continue
        new = _renamed(old, section[key])
        if new is None:
            continue
        value = section.pop(key)
        group, leaf = new.split(".")[1:]
        sub = section.get(group)
        sub = {} if sub is None else sub
        if not isinstance(sub, dict):
            raise ConfigError(f"{where}: {sec}.{group}: expected a mapping, got {_short(sub)}")
        if leaf in sub:
            raise ConfigError(f"{where}: {old} (the old name of {new}) and {new} are both set; keep {new}")
        section[group] = {**sub, leaf: value}
        moved.append((old, new))
    if note:
        _note_renamed(moved, where)
    return out


def apply_override(raw: dict, text: str, where: str = "override") -> str:
    """Parse one ``key=value`` override and set it in ``raw`` (an old key under its new name,
    with a note). Returns the key as set."""
    key, value = parse_override(text)
    new = _renamed(key, value)
    if new is not None:
        _note_renamed([(key, new)], where)
        key = new
    _set_dotted(raw, key, value, f"{where} '{_name(text)}'")
    return key


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override '{_name(text)}': expected key=value, e.g. train.epochs=6")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{_name(text)}': empty key")
    if key.count(".") > 2:  # section.key or section.group.key: anything deeper is no config key
        raise ConfigError(f"override {_name(key)}: too many dots; keys are section.key or section.group.key, "
                          f"e.g. train.epochs, model.anchors.sizes")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    except RecursionError:
        raise ConfigError(f"override {_name(key)}: value nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise ConfigError(f"override {_name(key)}: value cannot be read ({str(e)[:80]})") from None
    return key, parsed


def _set_dotted(d: dict, key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    cur = d
    for part in parts[:-1]:
        nxt = cur.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: '{part}' is not a section")
        cur = nxt
    cur[parts[-1]] = value


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    """A checked :class:`Config` from a mapping of sections (a loaded file, or the config stored in
    a checkpoint, run folder or comparison plan; old key names are moved to their new place)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config must be a mapping of sections, got {type(raw).__name__}")
    raw = upgrade_keys(raw, source)
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {_short(sorted(map(str, unknown)))}; valid: {sorted(SECTIONS)}")
    kwargs = {}
    for name, cls in SECTIONS.items():
        sec = raw.get(name) or {}
        if not isinstance(sec, dict):
            raise ConfigError(f"{source}: section '{name}' must be a mapping, got {type(sec).__name__}")
        if cls is LossConfig:
            sec = dict(sec)
            lname = sec.pop("name", "focal")
            if not isinstance(lname, str):
                raise ConfigError(f"{source}: loss.name must be a string, got {_short(lname)}")
            track = sec.pop("track_grad_stats", True)
            if not isinstance(track, bool):
                raise ConfigError(f"{source}: loss.track_grad_stats must be true/false, got {_short(track)}")
            compile_ = sec.pop("compile", None)
            if compile_ is not None and not isinstance(compile_, bool):
                raise ConfigError(f"{source}: loss.compile must be true/false/null, got {_short(compile_)}")
            params = sec.pop("params", {}) or {}
            if not isinstance(params, dict):
                raise ConfigError(f"{source}: loss.params must be a mapping, got {_short(params)}")
            params = dict(params)
            params.update(sec)
            kwargs[name] = LossConfig(name=lname, params=params, track_grad_stats=track, compile=compile_)
        else:
            kwargs[name] = _build_section(cls, sec, f"{source}: {name}")
    cfg = Config(**kwargs, source=source)
    return cfg.validate()


def _build_section(cls, sec: dict, where: str):
    """``cls(**sec)`` with every key known and every value of its declared type; a group (a
    nested dataclass such as ``model.anchors``) is built the same way from its mapping."""
    valid = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in sec.items():
        if key not in valid:
            raise ConfigError(f"{where}.{_name(key)}: unknown key; valid keys: {', '.join(sorted(valid))}")
        out[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**out)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {_short(value)}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_short(value)}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_short(value)}")
        return dict(value)
    if tp is Any:
        return value
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {', '.join(f.name for f in fields(tp))}, "
                              f"got {_short(value)}")
        return _build_section(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {_short(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {_short(value)}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 1e308 or isinstance(value, float) else math.inf
        elif isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{where}: {_short(value)} is not a finite number")
            return number
        raise ConfigError(f"{where}: expected a number, got {_short(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {_short(value)}")
    raise ConfigError(f"{where}: unsupported type {tp}")


# --------------------------------------------------------------------------------------------
# Checks used by the sections
# --------------------------------------------------------------------------------------------
def _choice(where: str, key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{where}.{key}: {_short(value)} is not one of {', '.join(map(str, choices))}")


MAX_PIXELS_PER_SIDE = 16384  # image sides, resize targets, anchor sizes
MAX_SEED = 2**63 - 1  # torch.manual_seed's range

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6


def _short(value: Any) -> str:
    """``repr(value)`` capped at about 80 characters: an error message must stay one short line
    whatever the value (a 50,000-deep nesting or a YAML alias bomb included)."""
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _name(key: Any) -> str:
    """A key as written, capped like :func:`_short`."""
    text = str(key)
    return text if len(text) <= 80 else text[:77] + "..."


def _device(where: str, value: str) -> None:
    import re

    if not re.fullmatch(r"auto|cpu|cuda|cuda:\d+|mps", value):
        raise ConfigError(f"{where}.device: {_short(value)} is not a device; use auto, cpu, cuda, cuda:N or mps")


def _check_loss_params(where: str, params: dict) -> None:
    """Loss parameters are numbers, strings, booleans, null, or flat lists of numbers; numbers
    must be finite (their ranges are the loss's own, checked when it is built)."""
    for key, value in params.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}.{_name(key)}: parameter names must be strings")
        items = value if isinstance(value, list) else [value]
        for v in items:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{where}.{key}: {_short(value)} is not a finite number")
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**63:
                raise ConfigError(f"{where}.{key}: {_short(value)} is out of range")
            if not (v is None or isinstance(v, (bool, int, float, str))):
                raise ConfigError(f"{where}.{key}: expected a number, string or list of numbers, got {_short(value)}")


def _range(where, key, value, lo, hi, open_lo=False, open_hi=False) -> None:
    """The one range check of every numeric key: ``value`` in [lo, hi] (open ends on request; None
    = unbounded). NaN fails every comparison, so it is refused explicitly."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}.{key}: {_short(value)} is not a finite number")
    bad = (lo is not None and (value < lo or (open_lo and value == lo))) or (
        hi is not None and (value > hi or (open_hi and value == hi)))
    if bad:
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        br = ("(" if open_lo else "[") + f"{lo_s}, {hi_s}" + (")" if open_hi else "]")
        raise ConfigError(f"{where}.{key}: {_short(value)} is out of range {br}")
