"""RetinaNet (Lin et al. 2017) with a pluggable classification loss (design.md "Model")."""
from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import generalized_box_iou_loss

from focaldet.model.anchors import AnchorGenerator
from focaldet.model.box_coder import BoxCoder
from focaldet.model.fpn import FPN
from focaldet.model.head import RetinaNetHead
from focaldet.model.matcher import Matcher, assign_targets
from focaldet.model.postprocess import postprocess_detections
from focaldet.utils.dist import all_reduce_sum, get_world_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Images are zero-padded to a multiple of this by default: the stride of C5, the coarsest map the
# FPN's top-down path upsamples by exactly 2 (torchvision, detectron2 and mmdetection pad to 32 too).
# P6/P7 need no more: a stride-2 3x3 convolution with padding 1 gives ceil(n / 2), which is the
# anchor grid ceil(H / stride) at every level for any H.
SIZE_DIVISIBILITY = 32


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of corresponding boxes ``(..., 4)`` xyxy → ``(...)``."""
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    return inter / (area_a + area_b - inter).clamp(min=1e-9)


class RetinaNet(nn.Module):
    """Backbone → FPN → shared head; matching, losses and post-processing.

    ``forward(images (B, 3, H, W) float RGB in [0, 1], image_sizes [(h, w)], targets=None)``:
    training with targets → ``{"loss_cls", "loss_box", "num_pos"}`` (0-d float32);
    eval → per image ``{"boxes" (k, 4) xyxy pixels, "scores" (k,), "labels" (k,) int64}``.
    Images are normalised with ImageNet mean/std here and zero-padded to a multiple of
    ``size_divisibility`` (default 32, ``data.size_divisibility``) if needed.

    ``channels_last`` (default True) keeps the convolution weights and every activation in NHWC,
    the layout oneDNN (CPU) and cuDNN tensor cores run fastest; results equal NCHW's up to the
    order of float sums. :meth:`compile_for_inference` is the explicit switch for ``torch.compile``.
    """

    def __init__(self, backbone: nn.Module, fpn: FPN, head: RetinaNetHead, anchor_generator: AnchorGenerator,
                 cls_loss: nn.Module, *, num_classes: int, matcher: Optional[Matcher] = None,
                 box_coder: Optional[BoxCoder] = None, box_loss: str = "l1", smooth_l1_beta: float = 0.1,
                 box_loss_weight: float = 1.0, normalizer: str = "batch", normalizer_momentum: float = 0.9,
                 crowd_ioa_thresh: Optional[float] = 0.5, score_thresh: float = 0.05, topk_candidates: int = 1000,
                 nms_thresh: float = 0.5, detections_per_img: int = 100, channels_last: bool = True,
                 size_divisibility: int = SIZE_DIVISIBILITY):
        super().__init__()
        if int(size_divisibility) < 1:
            raise ValueError(f"size_divisibility must be >= 1, got {size_divisibility!r}")
        self.size_divisibility = int(size_divisibility)
        if box_loss not in ("l1", "smooth_l1", "giou"):
            raise ValueError(f"box_loss must be l1, smooth_l1 or giou, got {box_loss!r}")
        if normalizer not in ("batch", "ema"):
            raise ValueError(f"normalizer must be batch or ema, got {normalizer!r}")
        self.backbone = backbone
        self.fpn = fpn
        self.head = head
        self.anchor_generator = anchor_generator
        self.cls_loss = cls_loss
        self.num_classes = num_classes
        self.softmax = getattr(cls_loss, "family", "sigmoid") == "softmax"
        if self.softmax != head.softmax:
            raise ValueError(f"the {getattr(cls_loss, 'name', 'loss')} loss is {cls_loss.family}-family but the "
                             f"head was built for the {'softmax' if head.softmax else 'sigmoid'} family")
        self.matcher = matcher or Matcher()
        self.box_coder = box_coder or BoxCoder()
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta
        self.box_loss_weight = box_loss_weight
        self.normalizer = normalizer
        self.normalizer_momentum = normalizer_momentum
        self.crowd_ioa_thresh = crowd_ioa_thresh
        self.score_thresh = score_thresh
        self.topk_candidates = topk_candidates
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # EMA of the positive count, started at 100 as detectron2 does; checkpointed with the model
        self.register_buffer("ema_num_pos", torch.tensor(100.0))
        self.channels_last = channels_last
        self._compiled_network = None  # set by compile_for_inference()
        if channels_last:
            self.to(memory_format=torch.channels_last)  # 4-d tensors only: the convolution weights

    # ------------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]],
                targets: Optional[Sequence[dict]] = None):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if len(image_sizes) != images.shape[0]:
            raise ValueError(f"{len(image_sizes)} image_sizes for a batch of {images.shape[0]} images")
        x = self.normalize(images, image_sizes)
        cls_logits, box_deltas = self._run_network(x)
        H, W = x.shape[-2:]
        grids = [(math.ceil(H / s), math.ceil(W / s)) for s in self.anchor_generator.strides]
        anchors = self.anchor_generator(grids, device=x.device, dtype=torch.float32)
        if self.training:
            if targets is None:
                raise ValueError("RetinaNet in training mode needs targets")
            return self.compute_losses(cls_logits, box_deltas, torch.cat(anchors), targets)
        return postprocess_detections(cls_logits, box_deltas, anchors, image_sizes, self.box_coder,
                                      softmax=self.softmax, score_thresh=self.score_thresh,
                                      topk_candidates=self.topk_candidates, nms_thresh=self.nms_thresh,
                                      detections_per_img=self.detections_per_img)

    def normalize(self, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """ImageNet mean/std, then the padding set to 0 *after* normalisation (as torchvision and
        detectron2 pad) and the size rounded up to a multiple of ``size_divisibility``.

        Returns ``(B, 3, H', W')`` float, channels_last when the model is. No tensor is built from
        ``image_sizes`` (Python ints), so there is no host-to-device copy here.
        """
        B, _, H, W = images.shape
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        d = self.size_divisibility
        x = torch.empty((B, 3, H + -H % d, W + -W % d), dtype=images.dtype,
                        device=images.device, memory_format=fmt)
        x[:, :, :H, :W] = (images - self.pixel_mean) / self.pixel_std
        x[:, :, H:] = 0
        x[:, :, :H, W:] = 0
        for i, (h, w) in enumerate(image_sizes):
            x[i, :, int(h):H] = 0  # an empty slice when the image fills the batch's height
            x[i, :, :H, int(w):W] = 0
        return x

    def network(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone → FPN → head: normalised ``x (B, 3, H, W)`` →
        ``(cls_logits (B, N, C), box_deltas (B, N, 4))``."""
        return self.head(self.fpn(self.backbone(x)))

    def compile_for_inference(self) -> "RetinaNet":
        """Compile :meth:`network` with ``torch.compile`` (Inductor, ``freezing=True``) for eval-mode
        calls without gradients; returns ``self``.

        Freezing turns the weights into constants of the compiled graph, which lets Inductor fuse
        each convolution with its bias and ReLU and pre-pack the weights for oneDNN (CPU). Call it
        once the weights are final: ``train()`` and ``load_state_dict`` drop the compiled graph.
        Training and calls with gradients always run eagerly. The first call per input size
        compiles (tens of seconds on CPU); if compiling fails (no C++ compiler, an unsupported
        operator) a warning is given and the model runs eagerly from then on.
        """
        self._compiled_network = torch.compile(self.network, dynamic=False, options={"freezing": True})
        return self

    def _run_network(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._compiled_network is None or self.training or torch.is_grad_enabled():
            return self.network(x)
        try:
            return self._compiled_network(x)
        except Exception as e:  # noqa: BLE001 — any compiler failure falls back to eager
            warnings.warn(f"torch.compile of the RetinaNet failed ({type(e).__name__}: {str(e)[:200]}); "
                          f"running eagerly", RuntimeWarning, stacklevel=3)
            self._compiled_network = None
            return self.network(x)

    def train(self, mode: bool = True) -> "RetinaNet":
        if mode:
            self._compiled_network = None  # frozen weights would go stale while training
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._compiled_network = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------------------------------------
    def compute_losses(self, cls_logits: torch.Tensor, box_deltas: torch.Tensor, anchors: torch.Tensor,
                       targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        """``cls_logits (B, N, C)``, ``box_deltas (B, N, 4)``, ``anchors (N, 4)`` → loss dict.

        Everything is masked rather than indexed, so there is no host-device sync in this path.
        """
        B, N, C = cls_logits.shape
        K = self.num_classes
        labels, matched_boxes = assign_targets(anchors, targets, self.matcher, K, self.crowd_ioa_thresh)
        pos = (labels >= 0) & (labels < K)  # (B, N)
        num_pos = pos.sum()
        normalizer = self._normalizer(num_pos)

        deltas = box_deltas.float()
        anchors_b = anchors.expand(B, N, 4)
        pos4 = pos[..., None]
        quality = None
        if self.box_loss == "giou" or getattr(self.cls_loss, "needs_quality", False):
            pred_boxes = self.box_coder.decode(deltas, anchors_b)
        if self.box_loss == "giou":
            per_anchor = generalized_box_iou_loss(pred_boxes.reshape(-1, 4), matched_boxes.reshape(-1, 4),
                                                  reduction="none").view(B, N)
            loss_box = torch.where(pos, per_anchor, 0.0).sum()
        else:
            target_deltas = self.box_coder.encode(matched_boxes, anchors_b)
            if self.box_loss == "l1":
                per_coord = (deltas - target_deltas).abs()
            else:
                per_coord = F.smooth_l1_loss(deltas, target_deltas, beta=self.smooth_l1_beta, reduction="none")
            loss_box = torch.where(pos4, per_coord, 0.0).sum()
        loss_box = loss_box * self.box_loss_weight / normalizer

        if getattr(self.cls_loss, "needs_quality", False):
            quality = torch.where(pos, paired_iou(pred_boxes.detach(), matched_boxes), 0.0).reshape(-1)
        batch_index = torch.arange(B, device=labels.device).repeat_interleave(N)
        loss_cls = self.cls_loss(cls_logits.reshape(B * N, C), labels.reshape(-1), normalizer=normalizer,
                                 quality=quality, batch_index=batch_index)
        return {"loss_cls": loss_cls.float(), "loss_box": loss_box.float(), "num_pos": num_pos.float()}

    def _normalizer(self, num_pos: torch.Tensor) -> torch.Tensor:
        """Positives in the batch, summed over ranks / world size (≥ 1); optionally its EMA."""
        total = all_reduce_sum(num_pos.detach().float().clone()) / get_world_size()
        if self.normalizer == "ema":
            m = self.normalizer_momentum
            with torch.no_grad():
                self.ema_num_pos.mul_(m).add_((1 - m) * total)
            total = self.ema_num_pos.clone()
        return total.clamp(min=1.0)
