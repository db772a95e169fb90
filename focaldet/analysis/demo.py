"""``focaldet demo``: the main job. On the embedded long-tailed benchmark (lt-stamps where the
tuxpaint photos are installed, else lt-digits) and its CPU preset config, compare ``focal``,
``modified_focal`` and ``equalized_focal`` over one seed, then write the report, the figures and
the detections of each loss on real photos that ship inside pip wheels."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

from focaldet.analysis.arms import CompareError, build_arms, split_overrides

DEMO_LOSSES = ("focal", "modified_focal", "equalized_focal")
# modified_focal's weight exp(-γ z_t) is ≈ 1e4 on every positive at prior-probability init, and the
# uncapped (faithful) loss overflows within a few iterations of a from-scratch CPU run; the demo
# caps it (printed in the report; `modified_focal.max_weight=null` restores the faithful form).
DEMO_LOSS_DEFAULTS = ("modified_focal.max_weight=10",)

# A shortened form of the same code path (CI's test and a quick look): a small benchmark and a
# few iterations. It proves the plumbing, not the losses.
QUICK_OVERRIDES = ("data.generator.train=48", "data.generator.val=16", "data.generator.size=160",
                   "data.test_size=160", "data.train_sizes=[160]", "data.max_size=160", "data.batch_size=2",
                   "train.max_iters=4", "train.warmup_iters=1",
                   "train.milestones=[3]", "train.eval_interval=0", "train.ckpt_interval=4",
                   "runtime.log_interval=2")


def configs_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "configs"


def default_cpu_config(kind: Optional[str] = None) -> Path:
    """The shipped CPU preset for the benchmark ``kind`` (default: ``default_kind()``)."""
    if kind is None:
        from focaldet.data.benchmark import default_kind

        kind = default_kind()
    path = configs_dir() / f"{kind.replace('-', '_')}_cpu.yaml"
    if not path.is_file():
        raise CompareError(f"{path}: the CPU preset config for {kind} is missing from this installation")
    return path


def run_demo(out="runs/demo", *, quick: bool = False, overrides: Sequence[str] = (), seeds: Sequence[int] = (0,),
             kind: Optional[str] = None, config=None, log: Callable[[str], None] = print, workers: int = 1):
    """Run the demo comparison into ``out`` and return the
    :class:`~focaldet.analysis.compare.CompareResult`. ``overrides``: global config overrides or
    per-loss parameters (``modified_focal.max_weight=100``), applied after the quick ones.
    ``workers``: processes that share the runs, as in ``focaldet compare --workers``."""
    from focaldet.analysis.compare import compare
    from focaldet.analysis.detections import photo_detection_grid

    if kind is None:
        from focaldet.data.benchmark import default_kind

        kind = default_kind()
    config = config or default_cpu_config(kind)
    all_ov = [*DEMO_LOSS_DEFAULTS, *(QUICK_OVERRIDES if quick else ()), *overrides]
    global_ov, per_loss = split_overrides(all_ov, DEMO_LOSSES)
    arms = build_arms(DEMO_LOSSES, per_loss=per_loss)

    def photos(specs, records, plot_dir):
        return [photo_detection_grid(specs, records, plot_dir / "detections_photos.png", score_thresh=0.2)]

    title = f"focaldet demo: focal vs modified_focal vs equalized_focal on {kind}" + (" (quick)" if quick else "")
    return compare(config, arms, seeds, Path(out), overrides=global_ov, baseline="focal", log=log,
                   title=title, extra_plots=photos, workers=workers)
