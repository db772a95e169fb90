"""Bad-input corpus for the data layer (issue 8): annotation files, images and paths.

Each case asserts the exact behaviour: a DataError (a FocaldetError) whose message names the file,
the record and the field — or the documented, counted recovery (clipping, dropping, negatives).
"""
from __future__ import annotations

import io
import json
import math
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from focaldet.data import CocoDetection, read_image
from focaldet.errors import DataError, FocaldetError


def load(coco_files, coco=None, **kw):
    return CocoDetection(coco_files.write(coco), coco_files.image_root, **kw)


def error_of(coco_files, coco=None, **kw) -> str:
    with pytest.raises(DataError) as e:
        load(coco_files, coco, **kw)
    assert isinstance(e.value, FocaldetError)
    return str(e.value)


# ============================================================================================
# Annotation files
# ============================================================================================
def test_not_json(coco_files):
    path = coco_files.root / "ann.json"
    path.write_text("images: [this is YAML, not JSON]\n")
    with pytest.raises(DataError, match="not valid JSON") as e:
        CocoDetection(path, coco_files.image_root)
    assert str(path) in str(e.value) and "line 1" in str(e.value)


def test_binary_garbage_is_not_json(coco_files):
    path = coco_files.root / "ann.json"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(DataError, match="not a JSON file") as e:
        CocoDetection(path, coco_files.image_root)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.77, 0.99])
def test_truncated_json(coco_files, fraction):
    path = coco_files.write()
    text = path.read_text()
    path.write_text(text[: int(len(text) * fraction)])
    with pytest.raises(DataError, match="truncated") as e:
        CocoDetection(path, coco_files.image_root)
    assert str(path) in str(e.value)


def test_empty_annotation_file(coco_files):
    path = coco_files.root / "ann.json"
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        CocoDetection(path, coco_files.image_root)


def test_missing_annotation_file(coco_files):
    with pytest.raises(DataError, match="annotation file not found") as e:
        CocoDetection(coco_files.root / "nope.json", coco_files.image_root)
    assert "nope.json" in str(e.value)


@pytest.mark.parametrize("top", [[], "images", 3, None])
def test_wrong_top_level_type(coco_files, top):
    path = coco_files.root / "ann.json"
    path.write_text(json.dumps(top))
    with pytest.raises(DataError) as e:
        CocoDetection(path, coco_files.image_root)
    msg = str(e.value)
    assert "ann.json" in msg and "top level must be a JSON object" in msg


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(coco_files, key):
    coco = coco_files.copy()
    del coco[key]
    msg = error_of(coco_files, coco)
    assert "ann.json" in msg and f"missing top-level key '{key}'" in msg


def test_top_level_key_not_a_list(coco_files):
    coco = coco_files.copy()
    coco["annotations"] = {"101": coco["annotations"][0]}
    assert "'annotations' must be a list, got dict" in error_of(coco_files, coco)


def _set(path, value):
    def mutate(coco):
        obj = coco
        for p in path[:-1]:
            obj = obj[p]
        obj[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(coco):
        obj = coco
        for p in path[:-1]:
            obj = obj[p]
        del obj[path[-1]]
    return mutate


WRONG_TYPES = [
    # (mutation, record named in the message, field named in the message)
    (_set(("images", 0, "id"), "10"), "images[0] (id 10)", "field 'id' must be an integer"),
    (_set(("images", 1, "width"), "56"), "images[1] (id 20)", "field 'width'"),
    (_set(("images", 2, "height"), -32), "images[2] (id 30)", "field 'height' must be a positive integer"),
    (_set(("images", 2, "height"), 31.5), "images[2] (id 30)", "field 'height'"),
    (_set(("images", 0, "file_name"), 5), "images[0] (id 10)", "field 'file_name' must be a string"),
    (_delete(("images", 1, "file_name")), "images[1] (id 20)", "missing field 'file_name'"),
    (_delete(("images", 1, "width")), "images[1] (id 20)", "missing field 'width'"),
    (_set(("annotations", 1, "bbox"), "30,1,12,30"), "annotations[1] (id 102)", "field 'bbox' must be a list of 4"),
    (_set(("annotations", 1, "bbox"), [30, 1, 12]), "annotations[1] (id 102)", "field 'bbox' must be a list of 4"),
    (_set(("annotations", 1, "bbox"), ["30", 1, 12, 3]), "annotations[1] (id 102)", "field 'bbox'"),
    (_set(("annotations", 1, "bbox"), [True, 1, 12, 3]), "annotations[1] (id 102)", "field 'bbox'"),
    (_delete(("annotations", 0, "bbox")), "annotations[0] (id 101)", "missing field 'bbox'"),
    (_set(("annotations", 0, "category_id"), 7.0), "annotations[0] (id 101)", "field 'category_id' must be an integer"),
    (_set(("annotations", 3, "image_id"), None), "annotations[3] (id 104)", "field 'image_id' must be an integer"),
    (_set(("annotations", 2, "iscrowd"), 2), "annotations[2] (id 103)", "field 'iscrowd' must be 0 or 1"),
    (_set(("annotations", 2, "iscrowd"), [1]), "annotations[2] (id 103)", "field 'iscrowd' must be 0 or 1"),
    (_set(("annotations", 2, "id"), 2**70), "annotations[2] (id 1180591620717411303424)", "does not fit in 64 bits"),
    (_set(("annotations", 2, "bbox"), [0, 0, 10**400, 1]), "annotations[2] (id 103)", "field 'bbox'"),
    (_set(("annotations", 0, "area"), "big"), "annotations[0] (id 101)", "field 'area' must be a number"),
    (_delete(("annotations", 3, "id")), "annotations[3]", "missing field 'id'"),
    (_set(("annotations", 0), [1, 2, 3]), "annotations[0]", "must be a JSON object, got list"),
    (_set(("categories", 0, "name"), 1), "categories[0] (id 7)", "field 'name' must be a string"),
    (_set(("categories", 1, "id"), "3"), "categories[1] (id 3)", "field 'id' must be an integer"),
    (_set(("categories", 1, "frequency"), "rare"), "categories[1] (id 3)", "field 'frequency'"),
]


@pytest.mark.parametrize("mutate,record,field", WRONG_TYPES, ids=[f"{r}-{f}" for _, r, f in WRONG_TYPES])
def test_wrong_field_types(coco_files, mutate, record, field):
    coco = coco_files.copy()
    mutate(coco)
    msg = error_of(coco_files, coco)
    assert "ann.json" in msg and record in msg and field in msg, msg


def test_degenerate_boxes_dropped_and_counted(coco_files):
    coco = coco_files.copy()
    bad = [[1, 1, -5, 4], [1, 1, 4, 0], [math.nan, 1, 2, 2], [1, 1, math.inf, 2], [1, 1, 0, 0]]
    for i, b in enumerate(bad):
        coco["annotations"].append({"id": 200 + i, "image_id": 20, "category_id": 3, "bbox": b})
    ds = load(coco_files, coco)
    assert ds.report.num_dropped_degenerate == 5 and ds.report.num_dropped == 5
    assert ds.report.num_clipped == 0
    t = ds.get_target(1)  # image 20 keeps only annotation 104
    np.testing.assert_array_equal(t["boxes"].numpy(), [[1, 2, 4, 6]])
    assert any("annotations[4] (id 200)" in m and "'bbox'" in m and "degenerate" in m for m in ds.report.examples)
    assert "dropped 5" in ds.report.summary()


def test_degenerate_box_is_an_error_in_strict_mode(coco_files):
    coco = coco_files.copy()
    coco["annotations"].append({"id": 201, "image_id": 20, "category_id": 3, "bbox": [1, 1, 4, 0]})
    msg = error_of(coco_files, coco, strict=True)
    assert "annotations[4] (id 201)" in msg and "image_id 20" in msg and "'bbox'" in msg and "strict" in msg


def test_boxes_outside_image_clipped_or_dropped(coco_files):
    coco = coco_files.copy()  # image 20 is 56 wide, 40 high
    coco["annotations"] += [
        {"id": 301, "image_id": 20, "category_id": 3, "bbox": [50, 30, 20, 20]},  # bottom-right overhang
        {"id": 302, "image_id": 20, "category_id": 3, "bbox": [-5, -5.5, 10, 10]},  # top-left overhang
        {"id": 303, "image_id": 20, "category_id": 3, "bbox": [100, 10, 5, 5]},  # entirely outside
    ]
    ds = load(coco_files, coco)
    r = ds.report
    assert (r.num_clipped, r.num_dropped_outside, r.num_dropped_degenerate) == (2, 1, 0)
    expected = np.array([[1, 2, 4, 6], [50, 30, 56, 40], [0, 0, 5, 4.5]], dtype=np.float32)
    np.testing.assert_array_equal(ds.get_target(1)["boxes"].numpy(), expected)
    assert any("annotations[6] (id 303)" in m and "outside" in m for m in r.examples)
    assert any("annotations[4] (id 301)" in m and "clipped" in m for m in r.examples)
    with pytest.raises(DataError, match=r"annotations\[6\] \(id 303\).*entirely outside"):
        load(coco_files, coco, strict=True)


def test_unknown_category_id(coco_files):
    coco = coco_files.copy()
    coco["annotations"][3]["category_id"] = 99
    msg = error_of(coco_files, coco)
    assert "annotations[3] (id 104)" in msg and "field 'category_id' = 99" in msg and "no category" in msg


@pytest.mark.parametrize("kind,mutate,expect", [
    ("images", lambda c: c["images"][2].update(id=10), "duplicate images id 10: images[0] and images[2]"),
    ("annotations", lambda c: c["annotations"][3].update(id=101),
     "duplicate annotations id 101: annotations[0] and annotations[3]"),
    ("categories", lambda c: c["categories"][1].update(id=7),
     "duplicate categories id 7: categories[0] and categories[1]"),
])
def test_duplicate_ids(coco_files, kind, mutate, expect):
    coco = coco_files.copy()
    mutate(coco)
    msg = error_of(coco_files, coco)
    assert expect in msg and "'id'" in msg and "ann.json" in msg


def test_annotation_for_missing_image(coco_files):
    coco = coco_files.copy()
    coco["annotations"][1]["image_id"] = 77
    msg = error_of(coco_files, coco)
    assert "annotations[1] (id 102)" in msg and "field 'image_id' = 77" in msg and "no image" in msg


def test_empty_dataset(coco_files):
    coco = coco_files.copy()
    coco["images"], coco["annotations"] = [], []
    assert "empty dataset" in error_of(coco_files, coco)


def test_no_categories(coco_files):
    coco = coco_files.copy()
    coco["categories"], coco["annotations"] = [], []
    assert "'categories' is an empty list" in error_of(coco_files, coco)


def test_images_without_annotations_kept_as_negatives(coco_files):
    coco = coco_files.copy()
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != 10]
    ds = load(coco_files, coco)
    assert len(ds) == 3
    assert ds.report.num_negative_images == 2  # images 10 and 30
    image, target = ds[0]
    assert target["image_id"] == 10 and target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    # no annotations at all is a valid, all-negative dataset
    coco["annotations"] = []
    ds = load(coco_files, coco)
    assert ds.report.num_negative_images == 3 and ds.class_image_counts == [0, 0]


def test_enormous_box_count_in_one_image(coco_files):
    n = 50_000
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 30, size=(n, 2))
    wh = rng.uniform(1, 16, size=(n, 2))
    cats = rng.choice([3, 7], size=n)
    coco = coco_files.copy()
    coco["annotations"] = [
        {"id": 1000 + i, "image_id": 10, "category_id": int(c), "bbox": [float(x), float(y), float(w), float(h)]}
        for i, ((x, y), (w, h), c) in enumerate(zip(xy.tolist(), wh.tolist(), cats.tolist()))]
    ds = load(coco_files, coco)
    assert ds.report.max_boxes_per_image == n and ds.report.num_boxes == n
    _, target = ds[0]
    expected = np.concatenate([xy, xy + wh], axis=1)  # all inside the 64 x 48 image
    np.testing.assert_allclose(target["boxes"].numpy(), expected.astype(np.float32), rtol=0, atol=0)
    np.testing.assert_array_equal(target["labels"].numpy(), (cats == 7).astype(np.int64))  # ids 3 -> 0, 7 -> 1


# ============================================================================================
# Images
# ============================================================================================
def test_missing_image_file_refused_at_load(coco_files):
    (coco_files.image_root / "coffee.png").unlink()
    msg = error_of(coco_files)
    assert "1 image file(s) not found" in msg and "images[1] (id 20)" in msg and "'coffee.png'" in msg


def test_image_file_vanishing_after_load(coco_files):
    ds = load(coco_files)
    (coco_files.image_root / "coffee.png").unlink()
    with pytest.raises(DataError, match="image file not found") as e:
        ds[1]
    assert "coffee.png" in str(e.value)


def test_zero_byte_image(coco_files):
    (coco_files.image_root / "coffee.png").write_bytes(b"")
    ds = load(coco_files)
    with pytest.raises(DataError, match=r"empty image file \(0 bytes\)") as e:
        ds[1]
    assert str(coco_files.image_root / "coffee.png") in str(e.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(tmp_path, coco_files, fmt):
    buf = io.BytesIO()
    Image.fromarray(coco_files.photo(200, 200)).save(buf, format=fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError, match="corrupt or truncated") as e:
        read_image(path)
    assert str(path) in str(e.value)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(DataError, match="not an image file") as e:
        read_image(path)
    assert str(path) in str(e.value)


def test_grayscale_image_becomes_rgb(tmp_path, coco_files):
    gray = coco_files.photo(30, 40)[:, :, 1].copy()
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    img = read_image(path)
    assert img.shape == (3, 30, 40) and img.dtype == torch.uint8
    for c in range(3):
        np.testing.assert_array_equal(img[c].numpy(), gray)


def test_rgba_image_composited_over_white(tmp_path, coco_files):
    rgb = coco_files.photo(30, 40).astype(np.float64)
    alpha = np.tile(np.linspace(0, 255, 40).round(), (30, 1))
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8), mode="RGBA").save(path)
    a = alpha[:, :, None] / 255.0
    expected = rgb * a + 255.0 * (1 - a)  # "over" a white page
    got = read_image(path).permute(1, 2, 0).numpy().astype(np.float64)
    assert np.abs(got - expected).max() <= 1.0


def test_16bit_png_scaled_to_8bit(tmp_path):
    v = np.linspace(0, 65535, 200).round().astype(np.uint16).reshape(10, 20)
    path = tmp_path / "deep.png"
    Image.fromarray(v).save(path)
    with Image.open(path) as im:  # really a 16-bit file
        assert im.mode.startswith("I")
    img = read_image(path)
    expected = np.round(v.astype(np.float64) / 257.0)
    assert img.shape == (3, 10, 20)
    np.testing.assert_array_equal(img[0].numpy(), expected)
    np.testing.assert_array_equal(img[2].numpy(), expected)


def test_cmyk_jpeg_becomes_rgb(tmp_path, coco_files):
    rgb = coco_files.photo(64, 64)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=98)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    got = read_image(path).permute(1, 2, 0).numpy().astype(np.float64)
    assert np.abs(got - rgb).mean() < 6  # lossy JPEG, but the same picture


def _exif_rotated_photo(path):
    """A 40 x 60 (h x w) picture stored as is, with EXIF orientation 6 (display rotated 90° CW).
    Returns the stored array."""
    raw = np.zeros((40, 60, 3), np.uint8)
    raw[:, :] = (0, 0, 255)
    raw[:20, :30] = (255, 0, 0)  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(raw).save(path, exif=exif.tobytes(), quality=95)
    return raw


def test_exif_rotated_photo_as_a_viewer_shows_it(coco_files):
    raw = _exif_rotated_photo(coco_files.image_root / "phone.jpg")
    shown = np.rot90(raw, k=-1)  # what a viewer shows: 60 high, 40 wide, red block at the top-right
    coco = coco_files.copy()
    coco["images"].append({"id": 40, "file_name": "phone.jpg", "width": 40, "height": 60})
    coco["annotations"].append({"id": 401, "image_id": 40, "category_id": 7, "bbox": [20, 0, 20, 30]})
    ds = load(coco_files, coco)
    image, target = ds[3]
    assert image.shape == (3, 60, 40)
    assert np.abs(image.permute(1, 2, 0).numpy().astype(int) - shown.astype(int)).mean() < 4
    np.testing.assert_array_equal(target["boxes"].numpy(), [[20, 0, 40, 30]])
    inside = image[:, 2:28, 22:38].float().mean(dim=(1, 2))  # the box covers the red block
    assert inside[0] > 200 and inside[2] < 50


def test_exif_rotated_photo_annotated_in_stored_frame_is_an_error(coco_files):
    _exif_rotated_photo(coco_files.image_root / "phone.jpg")
    coco = coco_files.copy()
    coco["images"].append({"id": 40, "file_name": "phone.jpg", "width": 60, "height": 40})
    ds = load(coco_files, coco)
    with pytest.raises(DataError) as e:
        ds[3]
    msg = str(e.value)
    assert "phone.jpg" in msg and "40x60" in msg and "images[3] (id 40)" in msg and "'width' 60" in msg


def _png_header_only(path, width, height):
    """A PNG whose header claims ``width`` x ``height`` RGB pixels (the data is a stub)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("w,h", [(100_000, 100_000), (20_000, 5_000)])
def test_huge_dimensions_refused_before_decoding(tmp_path, w, h):
    # 10^10 pixels trips Pillow's decompression-bomb error; 10^8 only our own limit
    path = _png_header_only(tmp_path / "huge.png", w, h)
    with pytest.raises(DataError, match="too large|more than the limit") as e:
        read_image(path)
    assert str(path) in str(e.value)


def test_pixel_limit_is_configurable(coco_files):
    ds = load(coco_files, max_pixels=40 * 56 - 1)
    ds[2]  # 32 x 32 is under the limit
    with pytest.raises(DataError, match="40x56|56x40") as e:
        ds[1]
    assert "coffee.png" in str(e.value) and "limit" in str(e.value)


# ============================================================================================
# Paths
# ============================================================================================
def test_absolute_file_name_refused(coco_files):
    coco = coco_files.copy()
    coco["images"][1]["file_name"] = str(coco_files.image_root / "coffee.png")
    msg = error_of(coco_files, coco)
    assert "images[1] (id 20)" in msg and "field 'file_name'" in msg and "absolute" in msg


def test_dotdot_escape_refused(coco_files):
    (coco_files.root / "secret.png").write_bytes((coco_files.image_root / "coffee.png").read_bytes())
    coco = coco_files.copy()
    coco["images"][1]["file_name"] = "../secret.png"
    msg = error_of(coco_files, coco)
    assert "images[1] (id 20)" in msg and "'../secret.png'" in msg and "outside the image root" in msg


def test_dotdot_that_stays_inside_is_fine(coco_files):
    (coco_files.image_root / "sub").mkdir()
    coco = coco_files.copy()
    coco["images"][1]["file_name"] = "sub/../coffee.png"
    assert len(load(coco_files, coco)) == 3


@pytest.mark.parametrize("link", ["file", "folder"])
def test_symlink_escape_refused(tmp_path, coco_files, link):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes((coco_files.image_root / "coffee.png").read_bytes())
    coco = coco_files.copy()
    if link == "file":
        os.symlink(outside / "secret.png", coco_files.image_root / "link.png")
        coco["images"][1]["file_name"] = "link.png"
    else:
        os.symlink(outside, coco_files.image_root / "linked_dir")
        coco["images"][1]["file_name"] = "linked_dir/secret.png"
    msg = error_of(coco_files, coco)
    assert "images[1] (id 20)" in msg and "outside the image root" in msg and "secret.png" in msg


def test_symlink_inside_root_is_fine(coco_files):
    os.symlink(coco_files.image_root / "coffee.png", coco_files.image_root / "alias.png")
    coco = coco_files.copy()
    coco["images"][1]["file_name"] = "alias.png"
    ds = load(coco_files, coco)
    np.testing.assert_array_equal(ds[1][0].permute(1, 2, 0).numpy(), coco_files.arrays[20])


def test_missing_image_root(coco_files):
    with pytest.raises(DataError, match="image root folder not found") as e:
        CocoDetection(coco_files.write(), coco_files.root / "no_such_dir")
    assert "no_such_dir" in str(e.value)
