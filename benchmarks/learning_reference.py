"""Learning-speed reference: torchvision's RetinaNet built like a focaldet CPU preset, trained on the
same benchmark, batches and schedule, scored by the same evaluator. It answers "is focaldet's
pipeline what makes the detector learn slowly (or fast)?" by putting both learning curves side by
side.

    .venv/bin/python benchmarks/learning_reference.py [CONFIG] [--iters 300] [--eval-every 100] [key=value ...]

torchvision's side: ``torchvision.models.detection.RetinaNet`` on the preset's backbone from
``torchvision.models`` (MobileNetV2 with the same ImageNet weights, FrozenBN and frozen stages; a
ResNet with the same norm; the narrow CPU ResNets are not in torchvision, so those presets fall
back to ResNet-18), an FPN of ``model.fpn_channels`` with P6/P7, its standard
4-conv head (GroupNorm when the preset's head uses it), anchors of ``model.anchors.sizes``,
AdamW/SGD with the preset's lr, warm-up and drop, the preset's batch and flips (focaldet's own
loader, so both see the same images in the same order). It prints one line per evaluation and
writes ``--out`` (JSON: iterations, seconds of training, AP, AP50).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial

import torch
import torchvision
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from focaldet.config import load_config
from focaldet.data.loader import build_dataset, build_train_loader, build_val_loader, resolve_data
from focaldet.engine.lr_schedule import WarmupMultiStepLR
from focaldet.evaluation import evaluate_detections, outputs_to_coco_results


def build_reference(cfg, num_classes: int, size: int) -> RetinaNet:
    mc = cfg.model
    fpn_ch = mc.fpn_channels
    if mc.backbone == "mobilenet_v2":
        backbone = mobilenet_fpn(mc)
    else:
        name = mc.backbone if hasattr(torchvision.models, mc.backbone) else "resnet18"
        norm = nn.BatchNorm2d if mc.norm == "bn" else partial(nn.GroupNorm, 32)
        body = getattr(torchvision.models, name)(weights=None, norm_layer=norm)
        backbone = _resnet_fpn_extractor(body, 5, returned_layers=[2, 3, 4],
                                         extra_blocks=LastLevelP6P7(fpn_ch, fpn_ch), norm_layer=None)
        # torchvision builds the FPN with 256 channels; rebuild it at the preset's width
        in_ch = [128, 256, 512] if name in ("resnet18", "resnet34") else [512, 1024, 2048]
        backbone.fpn = FeaturePyramidNetwork(in_ch, fpn_ch, extra_blocks=LastLevelP6P7(fpn_ch, fpn_ch))
        backbone.out_channels = fpn_ch
    base = mc.anchors.sizes or [32, 64, 128, 256, 512]
    sizes = tuple(tuple(b * s for s in mc.anchors.scales) for b in base)
    anchors = AnchorGenerator(sizes, (tuple(mc.anchors.aspect_ratios),) * len(sizes))
    head_norm = partial(nn.GroupNorm, 16) if mc.head_norm == "gn" else None
    head = RetinaNetHead(fpn_ch, anchors.num_anchors_per_location()[0], num_classes, norm_layer=head_norm)
    return RetinaNet(backbone, num_classes, min_size=size, max_size=size, anchor_generator=anchors, head=head,
                     detections_per_img=mc.inference.detections_per_img, score_thresh=mc.inference.score_thresh,
                     nms_thresh=mc.inference.nms_thresh, topk_candidates=mc.inference.topk_candidates,
                     image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def mobilenet_fpn(mc) -> BackboneWithFPN:
    """torchvision's MobileNetV2 with the same ImageNet weights, FrozenBN and frozen stages as the
    preset, C3/C4/C5 = ``features[6]``, ``[13]``, ``[17]`` into torchvision's FPN with P6/P7 from C5."""
    from focaldet.model.mobilenet import STAGES, load_mobilenet_weights

    norm = FrozenBatchNorm2d if mc.norm == "frozen_bn" else nn.BatchNorm2d
    body = torchvision.models.mobilenet_v2(weights=None, norm_layer=norm)
    if mc.backbone_weights is not None:
        load_mobilenet_weights(body, mc.backbone_weights)
    for lo, hi in STAGES[:mc.frozen_stages]:
        body.features[lo:hi].requires_grad_(False)
    fpn_ch = mc.fpn_channels
    return BackboneWithFPN(body.features, {"6": "c3", "13": "c4", "17": "c5"}, [32, 96, 320], fpn_ch,
                           extra_blocks=LastLevelP6P7(320, fpn_ch))


@torch.no_grad()
def evaluate(model, val_set, cfg) -> dict:
    model.eval()
    results = []
    for batch in build_val_loader(cfg.data, val_set):
        outs = model(list(batch.images))
        for o, size in zip(outs, batch.image_sizes):  # focaldet labels are 0..K-1
            o["boxes"] = o["boxes"].clamp(min=0)
        results.extend(outputs_to_coco_results(outs, batch.image_ids, batch.scales, val_set.cat_ids))
    model.train()
    return evaluate_detections(str(val_set.ann_file), results).stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", default="configs/lt_stamps_cpu.yaml")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--out", default="runs/learning_reference.json")
    ap.add_argument("overrides", nargs="*")
    args, extra = ap.parse_known_args(argv)
    args.overrides = [*args.overrides, *extra]
    cfg = load_config(args.config, [f"train.max_iters={args.iters}", *args.overrides])
    torch.manual_seed(cfg.runtime.seed)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    resolve_data(cfg)
    train_set, val_set = build_dataset(cfg.data, train=True), build_dataset(cfg.data, train=False)
    model = build_reference(cfg, len(train_set.cat_ids), cfg.data.test_size).train()
    params = [p for p in model.parameters() if p.requires_grad]
    t = cfg.train
    lr = t.base_lr * cfg.data.batch_size / t.base_batch
    opt = (torch.optim.AdamW(params, lr=lr, weight_decay=t.weight_decay) if t.optimizer == "adamw"
           else torch.optim.SGD(params, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay))
    sched = WarmupMultiStepLR(opt, [int(m) for m in t.milestones], t.lr_gamma, t.warmup_iters, t.warmup_factor)
    loader = build_train_loader(cfg.data, train_set, seed=cfg.runtime.seed)
    curve, trained_s, it = [], 0.0, 0
    while it < args.iters:
        for batch in loader:
            t0 = time.perf_counter()
            targets = [{"boxes": tg["boxes"], "labels": tg["labels"]} for tg in batch.targets]
            losses = model(list(batch.images), targets)
            loss = losses["classification"] + losses["bbox_regression"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            opt.step()
            sched.step()
            trained_s += time.perf_counter() - t0
            it += 1
            if it % args.eval_every == 0 or it == args.iters:
                stats = evaluate(model, val_set, cfg)
                curve.append({"iter": it, "train_seconds": round(trained_s, 1), "AP": stats["AP"], "AP50": stats["AP50"]})
                print(f"torchvision reference: iter {it}  train {trained_s:.0f} s  AP {100 * stats['AP']:.2f}  "
                      f"AP50 {100 * stats['AP50']:.2f}", flush=True)
            if it >= args.iters:
                break
    with open(args.out, "w") as f:
        json.dump({"config": args.config, "overrides": args.overrides, "curve": curve}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
