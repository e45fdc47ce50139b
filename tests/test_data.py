"""Folder datasets, bad input, cache, synthetic set, splits, augmentation and batching."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

import kseg.data.io as kio
from kseg.data import (
    LOADERS,
    SegmentationDataset,
    SegmentationSequence,
    SourceMixSequence,
    augment_pair,
    batch_shares,
    concatenate,
    load_dataset,
    load_folder,
    load_split,
    parse_split_sizes,
    save_split,
    split,
    split_indices,
    synthetic,
)

pytestmark = pytest.mark.backend_independent


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path_factory.mktemp("kseg_cache")))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
    monkeypatch.delenv("KSEG_PH2_DIR", raising=False)


def make_folder(root: Path, suffix: str = "_segmentation", n: int = 4, ext: str = ".jpg") -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)
        mask = np.zeros((30 + i, 40), np.uint8)
        mask[5:20, 10 + i : 30] = 255
        cv2.imwrite(str(root / "images" / f"ISIC_{i:03d}{ext}"), image)
        cv2.imwrite(str(root / "masks" / f"ISIC_{i:03d}{suffix}.png"), mask)
    return root


# ---- folder dataset ----------------------------------------------------------------------------


def test_folder_with_suffix(tmp_path):
    root = make_folder(tmp_path / "isic")
    ds = load_folder(root / "images", root / "masks", mask_suffix="_segmentation", image_size=(24, 32))
    assert ds.name == "folder" and ds.ids == [f"ISIC_{i:03d}" for i in range(4)]
    assert ds.images.shape == (4, 24, 32, 3) and ds.masks.shape == (4, 24, 32, 1)
    assert ds.images.dtype == np.float32 and 0 <= ds.images.min() and ds.images.max() <= 1
    assert set(np.unique(ds.masks)) == {0.0, 1.0}
    own = load_dataset("folder", path=root, mask_suffix="_segmentation", image_size=None)
    assert [m.shape for m in own.masks] == [(30 + i, 40, 1) for i in range(4)]
    assert (
        len(load_dataset("folder", path=(root / "images", root / "masks"), mask_suffix="_segmentation", image_size=16))
        == 4
    )


def _tiny(image_size: int = 8, level: float = 0.5) -> SegmentationDataset:
    """A loader as a user would register one: keyword arguments, one of its own (``level``)."""
    images = np.full((2, image_size, image_size, 3), level, np.float32)
    masks = np.zeros((2, image_size, image_size, 1), np.float32)
    return SegmentationDataset(images, masks, ["a", "b"], None, "tiny")


def test_a_registered_loader_is_loaded_by_name_with_the_options_it_takes(monkeypatch):
    monkeypatch.setitem(LOADERS, "tiny", _tiny)
    # The grid's one call passes every kind path, mask_suffix and n: each loader takes what it names.
    ds = load_dataset("tiny", path=None, image_size=4, mask_suffix="", n=200, level=0.25)
    assert ds.name == "tiny" and ds.images.shape == (2, 4, 4, 3) and float(ds.images.max()) == 0.25
    assert len(load_dataset("synthetic", image_size=8, n=3, level=0.25)) == 3  # another loader's option
    with pytest.raises(ValueError, match=r"Expected one of: auto, ph2, synthetic, folder, tiny\. Received"):
        load_dataset("tny")
    with pytest.raises(ValueError, match=r"Unknown dataset option 'levels'\. Expected one of: .*level, mask_suffix"):
        load_dataset("tiny", levels=0.1)


def test_the_grid_offers_every_registered_dataset(monkeypatch):
    from kseg.cli import build_parser

    monkeypatch.setitem(LOADERS, "tiny", _tiny)
    assert build_parser().parse_args(["grid", "--dataset", "tiny"]).dataset == "tiny"


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".jpeg"])
def test_folder_extensions(tmp_path, ext):
    root = make_folder(tmp_path / "d", suffix="", n=2, ext=ext)
    assert len(load_folder(root / "images", root / "masks", image_size=16)) == 2


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        load_folder(tmp_path / "nothere", tmp_path / "masks")


def test_empty_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(FileNotFoundError, match=r"images.*no image files"):
        load_folder(tmp_path / "images", tmp_path / "masks")


def test_image_without_mask(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "masks" / "ISIC_002_segmentation.png").unlink()
    with pytest.raises(FileNotFoundError, match="ISIC_002"):
        load_folder(root / "images", root / "masks", mask_suffix="_segmentation")


def test_wrong_suffix_is_an_error_and_orphan_masks_warn(tmp_path):
    root = make_folder(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="mask_suffix=''"):
        load_folder(root / "images", root / "masks")
    (root / "images" / "ISIC_003.jpg").unlink()
    with pytest.warns(UserWarning, match="ISIC_003_segmentation.png"):
        load_folder(root / "images", root / "masks", mask_suffix="_segmentation")


def test_truncated_and_unreadable_images(tmp_path):
    root = make_folder(tmp_path / "d", ext=".jpg")
    bad = root / "images" / "ISIC_001.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"ISIC_001.jpg.*truncated"):
        load_folder(root / "images", root / "masks", mask_suffix="_segmentation")
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"ISIC_001.jpg.*cannot decode"):
        load_folder(root / "images", root / "masks", mask_suffix="_segmentation")
    png = root / "masks" / "ISIC_001_segmentation.png"
    png.write_bytes(png.read_bytes()[:60])
    with pytest.raises(ValueError, match="ISIC_001_segmentation.png"):
        kio.read_mask(png)


def test_mask_size_mismatch(tmp_path):
    root = make_folder(tmp_path / "d")
    cv2.imwrite(str(root / "masks" / "ISIC_001_segmentation.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"ISIC_001_segmentation.png.*differs"):
        load_folder(root / "images", root / "masks", mask_suffix="_segmentation")


def test_grey_level_mask_warns_and_thresholds(tmp_path):
    root = make_folder(tmp_path / "d", n=2)
    grey = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (31, 1))
    cv2.imwrite(str(root / "masks" / "ISIC_001_segmentation.png"), grey)
    with pytest.warns(UserWarning, match=r"ISIC_001_segmentation.png.*not binary"):
        ds = load_folder(root / "images", root / "masks", mask_suffix="_segmentation", image_size=None)
    np.testing.assert_array_equal(ds.masks[1][..., 0], grey > 127)
    with pytest.warns(UserWarning, match=r"ISIC_001_segmentation.png.*cached"):
        load_folder(root / "images", root / "masks", mask_suffix="_segmentation", image_size=None)


def test_a_collected_mask_warning_is_left_to_the_caller(tmp_path):
    # load_pairs reads masks in worker threads, which share the warning filters: a thread that
    # silenced warnings there could leave the whole process silenced. Collected texts are issued
    # by the caller, in its own thread, once.
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), np.tile(np.linspace(0, 255, 40).astype(np.uint8), (31, 1)))
    messages = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kio.read_mask(path, messages)
    assert len(messages) == 1 and "grey.png: mask is not binary" in messages[0]


def test_zero_one_masks_are_kept(tmp_path):
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), np.eye(8, dtype=np.uint8))
    np.testing.assert_array_equal(kio.read_mask(path), np.eye(8))


# ---- cache -------------------------------------------------------------------------------------


def test_second_load_reads_cache_and_changes_invalidate(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "d", suffix="")
    first = load_folder(root / "images", root / "masks", image_size=32)
    assert list(Path(os.environ["KSEG_CACHE_DIR"]).glob("*.npz"))

    def boom(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(kio.cv2, "imdecode", boom)
    second = load_folder(root / "images", root / "masks", image_size=32)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.masks, second.masks)
    with pytest.raises(AssertionError, match="decoded again"):  # another size: another key
        load_folder(root / "images", root / "masks", image_size=16)
    monkeypatch.undo()
    second_cache = tmp_path / "c2"  # fresh cache dir: count the files this part writes
    monkeypatch.setenv("KSEG_CACHE_DIR", str(second_cache))
    load_folder(root / "images", root / "masks", image_size=32)
    # Rewrite one image with new pixels and a new mtime: the cache must not serve the old one.
    new = np.full((30, 40, 3), 255, np.uint8)
    cv2.imwrite(str(root / "images" / "ISIC_000.jpg"), new)
    stat = (root / "images" / "ISIC_000.jpg").stat()
    os.utime(root / "images" / "ISIC_000.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = load_folder(root / "images", root / "masks", image_size=32)
    assert third.images[0].mean() > 0.95
    assert len(list(second_cache.glob("*.npz"))) == 2


def test_corrupt_cache_is_rebuilt(tmp_path):
    root = make_folder(tmp_path / "d", suffix="")
    load_folder(root / "images", root / "masks", image_size=16)
    (cached,) = Path(os.environ["KSEG_CACHE_DIR"]).glob("*.npz")
    cached.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        ds = load_folder(root / "images", root / "masks", image_size=16)
    assert ds.images.shape == (4, 16, 16, 3)


# ---- synthetic ---------------------------------------------------------------------------------


def test_synthetic_deterministic_and_binary():
    a, b, c = synthetic(6, 64, seed=1), synthetic(6, 64, seed=1), synthetic(6, 64, seed=2)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (6, 64, 64, 3) and a.masks.shape == (6, 64, 64, 1)
    assert a.images.dtype == np.float32 and a.masks.dtype == np.float32
    assert 0 <= a.images.min() and a.images.max() <= 1
    assert set(np.unique(a.masks)) == {0.0, 1.0}
    fractions = a.masks.mean(axis=(1, 2, 3))
    assert (fractions > 0.005).all() and (fractions < 0.6).all()
    np.testing.assert_array_equal(synthetic(3, 64, seed=1).images, a.images[:3])  # prefix-stable
    assert synthetic(2, (48, 64)).images.shape == (2, 48, 64, 3)


def test_synthetic_lesion_is_darker_than_skin():
    ds = synthetic(20, 64, seed=0)
    grey = ds.images.mean(axis=-1)
    inside = (grey * ds.masks[..., 0]).sum((1, 2)) / ds.masks[..., 0].sum((1, 2))
    centre = np.zeros((64, 64), bool)
    centre[16:48, 16:48] = True  # skip the vignette corners
    outside_mask = (ds.masks[..., 0] == 0) & centre
    outside = (grey * outside_mask).sum((1, 2)) / outside_mask.sum((1, 2))
    assert (inside < outside).mean() >= 0.9


def test_synthetic_at_full_size():
    # ~1-2 s for 200 on an idle core; no time limit here: a loaded machine is not a failure.
    ds = synthetic(50, 256)
    assert ds.images.shape == (50, 256, 256, 3) and ds.masks.shape == (50, 256, 256, 1)


# ---- splits ------------------------------------------------------------------------------------


def _labelled(n_per=(40, 40, 20)) -> SegmentationDataset:
    labels = [lab for lab, k in zip(["common_nevus", "atypical_nevus", "melanoma"], n_per) for _ in range(k)]
    n = len(labels)
    return SegmentationDataset(
        images=np.zeros((n, 2, 2, 3), np.float32),
        masks=np.zeros((n, 2, 2, 1), np.float32),
        ids=[f"c{i:03d}" for i in range(n)],
        diagnosis=labels,
        name="t",
    )


def test_split_deterministic_disjoint_stratified():
    ds = _labelled()
    a, b, c = (
        split(ds, seed=3, sizes=(50, 25, 25)),
        split(ds, seed=3, sizes=(50, 25, 25)),
        split(ds, seed=4, sizes=(50, 25, 25)),
    )
    assert a.ids() == b.ids() and a.ids() != c.ids()
    ids = a.ids()
    assert [len(ids[k]) for k in ("train", "val", "test")] == [50, 25, 25]
    assert len(set(ids["train"]) | set(ids["val"]) | set(ids["test"])) == 100
    assert a.train.diagnosis.count("melanoma") == 10
    assert a.val.diagnosis.count("melanoma") == a.test.diagnosis.count("melanoma") == 5
    assert a.test.diagnosis.count("common_nevus") == 10


def test_split_fractions_and_errors():
    ds = _labelled((10, 6, 4))
    parts = split(ds, sizes=(0.6, 0.2, 0.2))
    assert [len(p) for p in parts] == [12, 4, 4]
    assert sum(p.diagnosis.count("melanoma") for p in parts) == 4
    with pytest.raises(ValueError, match="only 20"):
        split(ds, sizes=(10, 10, 10))
    with pytest.raises(ValueError, match="sum to 1"):
        split(ds, sizes=(0.5, 0.2, 0.2))
    unlabelled = synthetic(10, 16)
    assert [len(p) for p in split(unlabelled, sizes=(5, 3, 2))] == [5, 3, 2]


def _unlabelled(n: int) -> SegmentationDataset:
    return SegmentationDataset(
        images=np.zeros((n, 2, 2, 3), np.float32),
        masks=np.zeros((n, 2, 2, 1), np.float32),
        ids=[f"x{i:04d}" for i in range(n)],
        diagnosis=None,
        name="folder",
    )


def test_fractions_split_a_folder_larger_than_200_cases():
    ds = _unlabelled(300)
    parts = split_indices(ds, seed=0, sizes=(0.6, 0.2, 0.2))
    assert [len(p) for p in parts] == [180, 60, 60]
    assert len(set(np.concatenate(parts))) == 300  # every case used, none twice
    assert [len(p) for p in split_indices(_unlabelled(301), seed=0, sizes=(0.6, 0.2, 0.2))] in (
        [181, 60, 60],
        [180, 61, 60],
        [180, 60, 61],
    )
    # Counts may leave cases unused; more than there are is an error.
    assert [len(p) for p in split_indices(ds, seed=0, sizes=(100, 50, 50))] == [100, 50, 50]
    with pytest.raises(ValueError, match="only 300"):
        split_indices(ds, sizes=(200, 100, 50))


def test_split_indices_depend_on_the_seed_only():
    ds = _unlabelled(300)
    same = [np.concatenate(split_indices(ds, seed=5, sizes=(0.6, 0.2, 0.2))) for _ in range(2)]
    np.testing.assert_array_equal(*same)
    other = np.concatenate(split_indices(ds, seed=6, sizes=(0.6, 0.2, 0.2)))
    assert not np.array_equal(same[0], other)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("100,50,50", (100, 50, 50)),
        ("0.6,0.2,0.2", (0.6, 0.2, 0.2)),
        (" 60, 20 ,20 ", (60, 20, 20)),
        ("0.5,0.25,.25", (0.5, 0.25, 0.25)),
    ],
)
def test_parse_split_sizes(text, expected):
    sizes = parse_split_sizes(text)
    assert sizes == expected
    assert all(type(s) is type(expected[0]) for s in sizes)  # counts stay ints, fractions floats


@pytest.mark.parametrize(
    "text", ["", "100,50", "1,2,3,4", "a,b,c", "100,50,x", "0.6,0.2,0.3", "-1,50,50", "0.5,0.5,-0.0x"]
)
def test_parse_split_sizes_rejects_junk(text):
    with pytest.raises(
        ValueError, match=r"(Split sizes expect|Split sizes must|`sizes` must|Fractional sizes must).*Received: "
    ):
        parse_split_sizes(text)


def test_concatenate_labels_each_case_with_its_source():
    a, b = synthetic(n=6, image_size=16, seed=0), synthetic(n=4, image_size=16, seed=1)
    a.diagnosis = ["melanoma"] * 3 + ["common_nevus"] * 3  # as PH2; b has none, as a plain folder
    joined = concatenate([a, b], names=["ph2", "isic"])
    assert joined.name == "ph2+isic" and len(joined) == 10
    assert joined.ids == [f"ph2/{i}" for i in a.ids] + [f"isic/{i}" for i in b.ids]
    assert joined.source == ["ph2"] * 6 + ["isic"] * 4
    assert joined.diagnosis == list(a.diagnosis) + [None] * 4
    np.testing.assert_array_equal(joined.images[6:], b.images)
    np.testing.assert_array_equal(joined.masks[:6], a.masks)
    assert joined.subset([7, 0]).source == ["isic", "ph2"]
    with pytest.raises(ValueError, match="distinct source name"):
        concatenate([a, b], names=["x", "x"])
    with pytest.raises(ValueError, match="one image_size"):
        concatenate([a, synthetic(n=2, image_size=32)], names=["a", "b"])


@pytest.mark.parametrize("sizes", [(0.5, 0.25, 0.25), (0.6, 0.2, 0.2)])
def test_a_joined_split_holds_each_source_in_proportion(sizes):
    big, small = synthetic(n=40, image_size=8, seed=0), synthetic(n=20, image_size=8, seed=1)
    joined = concatenate([big, small], names=["big", "small"])
    for seed in range(3):
        for part, fraction in zip(split(joined, seed=seed, sizes=sizes), sizes):
            counts = {name: part.source.count(name) for name in ("big", "small")}
            # Each source's share of every part is its share of the whole, to within one case.
            assert abs(counts["big"] - 40 * fraction) <= 1 and abs(counts["small"] - 20 * fraction) <= 1, counts


def test_save_and_load_split(tmp_path):
    ds = _labelled()
    parts = split(ds, seed=1, sizes=(50, 25, 25))
    path = save_split(parts, tmp_path / "split.json")
    assert json.loads(path.read_text())["test"] == parts.ids()["test"]
    again = load_split(path, ds)
    assert again.ids() == parts.ids()
    with pytest.raises(KeyError, match="split.json"):
        load_split(path, ds.subset(range(10)))


# ---- augmentation and batching -----------------------------------------------------------------


def _encoded_pair(h=64, w=64):
    """A mask of blocks and an image whose every channel equals the mask (pixels encode it)."""
    mask = np.zeros((h, w, 1), np.float32)
    mask[8:40, 12:30] = 1
    mask[44:60, 40:60] = 1
    return np.repeat(mask, 3, axis=-1), mask


def test_augment_geometry_keeps_image_and_mask_aligned():
    image, mask = _encoded_pair()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        out_i, out_m = augment_pair(image, mask, rng, photometric=False, affine_probability=0.0)
        np.testing.assert_array_equal(out_i[..., 0], out_m[..., 0])  # flips/rot90: exact
        out_i, out_m = augment_pair(image, mask, np.random.default_rng(seed), affine_probability=1.0)
        assert set(np.unique(out_m)) <= {0.0, 1.0}
        assert out_i.shape == image.shape and out_m.shape == mask.shape
        assert out_i.dtype == np.float32 and 0 <= out_i.min() and out_i.max() <= 1
        # After photometric jitter foreground is still brighter; only interpolated edges differ.
        fg = out_i.mean(-1) > (out_i[out_m[..., 0] == 1].mean() + out_i[out_m[..., 0] == 0].mean()) / 2
        assert (fg != (out_m[..., 0] == 1)).mean() < 0.03


def test_min_scale_shrinks_lesions_within_its_range():
    """A centred square lesion keeps its area times scale**2 under the affine warp: with the default
    scales in [0.9, 1.1] it never drops below 0.81 of its area; with min_scale=0.5 it does, and
    never below 0.25 (mask still exactly 0/1, geometry the same for image and mask)."""
    mask = np.zeros((96, 96, 1), np.float32)
    mask[33:63, 33:63] = 1
    image = np.repeat(mask, 3, axis=-1)

    def area_ratios(**options):
        ratios = []
        for seed in range(40):
            out_i, out_m = augment_pair(
                image, mask, np.random.default_rng(seed), photometric=False, affine_probability=1.0, **options
            )
            assert set(np.unique(out_m)) <= {0.0, 1.0}
            ratios.append(out_m.sum() / mask.sum())
        return np.asarray(ratios)

    default, zoomed = area_ratios(), area_ratios(min_scale=0.5)
    assert default.min() > 0.81 - 0.05 and default.max() < 1.21 + 0.05
    assert zoomed.min() < 0.6 and zoomed.min() > 0.25 - 0.05
    with pytest.raises(ValueError, match="min_scale"):
        augment_pair(image, mask, np.random.default_rng(0), min_scale=0.0)


def test_augment_rectangular_keeps_shape_and_is_seeded():
    image, mask = _encoded_pair(32, 48)
    a = augment_pair(image, mask, np.random.default_rng(5))
    b = augment_pair(image, mask, np.random.default_rng(5))
    assert a[0].shape == (32, 48, 3) and a[1].shape == (32, 48, 1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_sequence_batches_deterministic_per_epoch():
    ds = synthetic(10, 32)
    seq = SegmentationSequence(ds, batch_size=4, seed=7)
    assert len(seq) == 3
    x, y = seq[0]
    assert x.shape == (4, 32, 32, 3) and y.shape == (4, 32, 32, 1) and x.dtype == y.dtype == np.float32
    assert seq[2][0].shape[0] == 2
    np.testing.assert_array_equal(seq[1][0], SegmentationSequence(ds, 4, seed=7)[1][0])
    epoch0 = seq.order.copy()
    seq.on_epoch_end()
    assert not np.array_equal(seq.order, epoch0)
    other = SegmentationSequence(ds, 4, seed=7)
    other.set_epoch(1)
    np.testing.assert_array_equal(seq[0][1], other[0][1])
    plain = SegmentationSequence(ds, 4, shuffle=False, augment=False)
    np.testing.assert_array_equal(plain[0][0], ds.images[:4])
    np.testing.assert_array_equal(plain[0][1], ds.masks[:4])


@pytest.mark.parametrize(
    "batch_size, fractions, expected",
    [(8, [0.5, 0.5], [4, 4]), (8, [0.75, 0.25], [6, 2]), (8, [0.9, 0.1], [7, 1]), (8, [0.5, 0.25, 0.25], [4, 2, 2]),
     (5, [0.5, 0.5], [3, 2]), (4, [0.98, 0.01, 0.01], [2, 1, 1]), (3, [1.0, 0.0], [3, 0])],
)  # fmt: skip
def test_batch_shares_round_by_largest_remainder_and_keep_every_source(batch_size, fractions, expected):
    assert batch_shares(batch_size, fractions) == expected


def test_batch_shares_refuse_what_cannot_be_a_batch():
    with pytest.raises(ValueError, match="sum to 1"):
        batch_shares(8, [0.5, 0.4])
    with pytest.raises(ValueError, match="cannot hold one case of each of 3"):
        batch_shares(2, [0.4, 0.3, 0.3])


def _tagged(n: int, tag: int) -> SegmentationDataset:
    """``n`` 4x4 cases whose image holds ``tag`` (the source) and whose mask holds the case index."""
    images = np.full((n, 4, 4, 3), tag, np.float32)
    masks = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 1), np.float32)
    return SegmentationDataset(images, masks, [f"{tag}_{i}" for i in range(n)], None, f"set{tag}")


def test_source_mix_batches_hold_each_source_by_its_share():
    primary, other = _tagged(10, 0), _tagged(7, 1)
    mix = SourceMixSequence([primary, other], shares=[2, 3], augment=False, seed=3)
    assert len(mix) == 5  # one pass over the primary, 2 cases a batch
    drawn = {0: [], 1: []}
    for epoch in range(3):
        mix.set_epoch(epoch)
        seen = []
        for i in range(len(mix)):
            images, masks = mix[i]
            sources = images[:, 0, 0, 0].astype(int)
            assert list(sources) == [0, 0, 1, 1, 1]  # the stated shares, in every batch
            cases = masks[:, 0, 0, 0].astype(int)
            seen += list(cases[sources == 0])
            drawn[1] += list(cases[sources == 1])
        assert sorted(seen) == list(range(10))  # each epoch passes over the primary once
    # The other set is an endless stream of shuffled passes: 45 draws of 7 cases, each 6 or 7 times.
    counts = np.bincount(drawn[1], minlength=7)
    assert counts.sum() == 45 and counts.min() >= 6 and counts.max() <= 7
    assert drawn[1][:7] != list(range(7))  # shuffled, not in file order


def test_source_mix_is_reproducible_and_reshuffles_each_epoch():
    sets = [synthetic(10, 16, seed=0), synthetic(9, 16, seed=1)]
    a, b = (SourceMixSequence(sets, shares=[2, 2], seed=5) for _ in range(2))
    b.set_epoch(1)
    b.set_epoch(0)
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i][0], b[i][0])  # the same batches, augmentation included
    first = [list(ix) for ix in a.batch_indices(0)]
    a.on_epoch_end()
    assert [list(ix) for ix in a.batch_indices(0)] != first
    assert [list(ix) for ix in SourceMixSequence(sets, shares=[2, 2], seed=6).batch_indices(0)] != first


def test_source_mix_refuses_a_missing_share_or_an_unsized_set():
    sets = [synthetic(4, 16), synthetic(4, 16, seed=1)]
    with pytest.raises(ValueError, match="one share each"):
        SourceMixSequence(sets, shares=[2])
    with pytest.raises(ValueError, match="at least 1 case per batch"):
        SourceMixSequence(sets, shares=[2, 0])


def test_dataset_subset_and_lengths():
    ds = synthetic(5, 16)
    sub = ds.subset([4, 0])
    assert sub.ids == [ds.ids[4], ds.ids[0]] and len(sub) == 2
    np.testing.assert_array_equal(sub.images[1], ds.images[0])
    with pytest.raises(ValueError, match="same length"):
        SegmentationDataset(ds.images, ds.masks[:2], ds.ids, None, "x")
