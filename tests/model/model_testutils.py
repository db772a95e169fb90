"""Helpers for tests/model (a module name no other test folder uses)."""
import numpy as np
import skimage.data
import skimage.transform
import torch

from focaldet.config import load_config
from focaldet.model import build_model

SIZE = 128
# (x, y, w, h) of three real objects pasted onto skimage's camera photo, one class each
PLACES = [(8, 10, 44, 44), (70, 60, 50, 36), (20, 78, 40, 40)]


def normalized_photo(size=128):
    """skimage's chelsea (a tabby cat) as a (1, 3, size, size) batch, ImageNet-normalised."""
    img = skimage.transform.resize(skimage.data.chelsea(), (size, size), anti_aliasing=True)
    x = torch.from_numpy(img).float().permute(2, 0, 1)[None]
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def randomize_bn_statistics(model: torch.nn.Module) -> None:
    """Non-trivial running statistics in every BatchNorm2d of ``model`` (fresh ones are 0 / 1)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)


def _rgb(a):
    a = a if a.ndim == 3 else np.stack([a] * 3, -1)
    return a[..., :3].astype(np.float32) / 255


def pasted_scene():
    """``(image (3, 128, 128) float32 in [0, 1], target)``: an astronaut's face, a coffee cup and a cat
    pasted onto the cameraman photo, labels 0, 1, 2."""
    img = skimage.transform.resize(_rgb(skimage.data.camera()), (SIZE, SIZE), anti_aliasing=True)
    crops = [_rgb(skimage.data.astronaut())[30:230, 140:340], _rgb(skimage.data.coffee())[50:350, 100:450],
             _rgb(skimage.data.chelsea())[20:280, 80:360]]
    boxes = []
    for crop, (x, y, w, h) in zip(crops, PLACES):
        img[y:y + h, x:x + w] = skimage.transform.resize(crop, (h, w), anti_aliasing=True)
        boxes.append([x, y, x + w, y + h])
    image = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1).contiguous()
    return image, {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor([0, 1, 2])}


def empty_scene():
    """A real photo with no annotations (a valid all-negative image)."""
    img = skimage.transform.resize(_rgb(skimage.data.coffee()), (SIZE, SIZE), anti_aliasing=True)
    image = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1).contiguous()
    return image, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}


def tiny_model(loss="focal", *overrides, fpn=32, depth=1, width=32, num_classes=3):
    """A CPU-sized RetinaNet built from a config: resnet18 (random init, frozen; GN keeps its
    activations at a sane scale without ImageNet weights), small FPN and head."""
    cfg = load_config(None, ["model.backbone=resnet18", "model.norm=gn", "model.frozen_stages=5", f"model.fpn_channels={fpn}",
                             f"model.head_depth={depth}", f"model.head_width={width}", f"loss.name={loss}",
                             *overrides])
    return build_model(cfg, num_classes=num_classes)
