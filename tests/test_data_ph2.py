"""PH2: both layouts, diagnosis, find_ph2, not-found message, download_ph2, real data."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import threading
import zipfile
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from kseg.data import download_ph2, find_ph2, load_dataset, load_ph2, split

pytestmark = pytest.mark.backend_independent

REAL_PH2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ph2"
REAL_OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "ph2-official-sample"
DIAG = {"IMD002": "atypical_nevus", "IMD003": "common_nevus", "IMD004": "melanoma"}
SHAPES = {"IMD002": (40, 52), "IMD003": (42, 50), "IMD004": (38, 54)}


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    # Never touch ~/.keras or a developer's PH2 copy.
    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path_factory.mktemp("kseg_cache")))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
    monkeypatch.delenv("KSEG_PH2_DIR", raising=False)


def _case(cid: str) -> tuple[np.ndarray, np.ndarray]:
    h, w = SHAPES[cid]
    rng = np.random.default_rng(int(cid[3:]))
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (w // 4, h // 5), 0, 0, 360, 255, -1)
    return image, mask


def _xlsx(path: Path) -> None:
    """A sheet shaped like the real PH2_dataset.xlsx: legend rows first, header on row 13."""
    header = [
        "Image Name",
        "Histological Diagnosis",
        "Common Nevus",
        "Atypical Nevus",
        "Melanoma",
        "Asymmetry\n(0/1/2)",
    ]
    rows = [[None] * 6 for _ in range(12)]
    rows[1][5] = "Legends"
    rows[11][2] = "Clinical Diagnosis"
    rows.append(header)
    for cid, diag in DIAG.items():
        marks = [("X" if diag == d else None) for d in ("common_nevus", "atypical_nevus", "melanoma")]
        rows.append([cid, "Melanoma" if diag == "melanoma" else None, *marks, 0])
    pd.DataFrame(rows).to_excel(path, header=False, index=False, sheet_name="Folha1")


def make_official(root: Path) -> Path:
    """``root/PH2Dataset`` in the official layout; IMD002's mask is a 24-bit RGB BMP."""
    base = root / "PH2Dataset"
    for cid in DIAG:
        image, mask = _case(cid)
        case = base / "PH2 Dataset images" / cid
        (case / f"{cid}_Dermoscopic_Image").mkdir(parents=True)
        (case / f"{cid}_lesion").mkdir()
        (case / f"{cid}_roi").mkdir()  # colour-class masks in the real archive: ignored
        cv2.imwrite(str(case / f"{cid}_Dermoscopic_Image" / f"{cid}.bmp"), image[..., ::-1])
        if cid == "IMD002":
            mask = cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR)  # 24-bit RGB mask
        cv2.imwrite(str(case / f"{cid}_lesion" / f"{cid}_lesion.bmp"), mask)
    _xlsx(base / "PH2_dataset.xlsx")
    return base


def make_flat(root: Path, metadata: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for cid in DIAG:
        image, mask = _case(cid)
        cv2.imwrite(str(root / f"{cid}.png"), image[..., ::-1])
        cv2.imwrite(str(root / f"{cid}_lesion.png"), mask)
    if metadata:
        pd.DataFrame({"image_id": list(DIAG), "clinical_diagnosis": list(DIAG.values())}).to_csv(
            root / "metadata.csv", index=False
        )
    return root


def _check(ds, size=None):
    assert ds.name == "ph2"
    assert ds.ids == list(DIAG)
    assert ds.diagnosis == list(DIAG.values())
    images = ds.images if size is None else list(ds.images)
    for cid, image, mask in zip(ds.ids, images, ds.masks):
        expected_image, expected_mask = _case(cid)
        if size is None:
            np.testing.assert_allclose(image, expected_image / 255.0, atol=1e-6)
            np.testing.assert_array_equal(mask[..., 0], expected_mask > 0)
        assert image.dtype == np.float32 and mask.dtype == np.float32
        assert set(np.unique(mask)) <= {0.0, 1.0}


def test_official_layout_own_size_and_parent(tmp_path):
    base = make_official(tmp_path)
    _check(load_ph2(base, image_size=None))
    _check(load_ph2(tmp_path, image_size=None))  # parent of PH2Dataset


def test_official_layout_resized(tmp_path):
    ds = load_ph2(make_official(tmp_path), image_size=(24, 32))
    assert ds.images.shape == (3, 24, 32, 3) and ds.masks.shape == (3, 24, 32, 1)
    _check(ds, size=(24, 32))
    assert ds.masks.sum() > 0


def test_flat_layout(tmp_path):
    ds = load_ph2(make_flat(tmp_path / "flat"), image_size=None)
    _check(ds)
    assert load_ph2(tmp_path / "flat", image_size=16).images.shape == (3, 16, 16, 3)


def test_flat_without_metadata_warns(tmp_path):
    with pytest.warns(UserWarning, match="diagnoses unknown"):
        ds = load_ph2(make_flat(tmp_path / "flat", metadata=False), image_size=16)
    assert ds.diagnosis is None


def test_flat_image_without_mask(tmp_path):
    root = make_flat(tmp_path / "flat")
    (root / "IMD003_lesion.png").unlink()
    with pytest.raises(FileNotFoundError, match="IMD003"):
        load_ph2(root)


def test_official_missing_mask_names_file(tmp_path):
    base = make_official(tmp_path)
    shutil.rmtree(base / "PH2 Dataset images" / "IMD004" / "IMD004_lesion")
    with pytest.raises(FileNotFoundError, match="IMD004_lesion.bmp"):
        load_ph2(base)


def test_find_ph2_precedence(tmp_path, monkeypatch):
    env_root = make_flat(tmp_path / "env")
    keras_root = make_flat(Path(os.environ["KERAS_HOME"]) / "datasets" / "ph2")
    explicit = make_flat(tmp_path / "explicit")
    assert find_ph2() == keras_root
    monkeypatch.setenv("KSEG_PH2_DIR", str(env_root))
    assert find_ph2() == env_root
    assert find_ph2(explicit) == explicit
    assert find_ph2(tmp_path / "nowhere") is None  # a wrong explicit path never falls back


def test_not_found_message_lists_every_place(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        load_ph2()
    text = str(err.value)
    datasets = Path(os.environ["KERAS_HOME"]) / "datasets"
    for name in ("ph2", "PH2Dataset"):
        assert str(datasets / name) in text
    assert "KSEG_PH2_DIR" in text and "download_ph2" in text and "path=" in text
    monkeypatch.setenv("KSEG_PH2_DIR", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="nope"):
        load_ph2()


def test_load_dataset_auto(tmp_path, monkeypatch):
    with pytest.warns(UserWarning, match="synthetic"):
        ds = load_dataset("auto", image_size=32, n=4)
    assert ds.name == "synthetic" and len(ds) == 4
    monkeypatch.setenv("KSEG_PH2_DIR", str(make_flat(tmp_path / "flat")))
    assert load_dataset("auto", image_size=16).name == "ph2"
    with pytest.raises(FileNotFoundError, match="neither"):
        load_dataset("auto", path=tmp_path / "empty_dir_that_is_missing")
    with pytest.raises(
        ValueError,
        match=r"Unknown dataset kind .* Expected one of: auto, ph2, synthetic, folder. Received: dataset kind=",
    ):
        load_dataset("isic")


@pytest.fixture
def served_zip(tmp_path):
    """A zip of a flat PH2 folder served over http on 127.0.0.1; yields (url, sha256)."""
    make_flat(tmp_path / "src" / "PH2Dataset")
    archive = tmp_path / "www" / "ph2.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((tmp_path / "src").rglob("*")):
            zf.write(f, f.relative_to(tmp_path / "src"))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ph2.zip"
        yield url, hashlib.sha256(archive.read_bytes()).hexdigest()
    finally:
        server.shutdown()
        server.server_close()


def test_download_ph2(served_zip, tmp_path):
    url, sha = served_zip
    root = download_ph2(url, sha, cache_dir=tmp_path / "kc")
    assert root == tmp_path / "kc" / "datasets" / "ph2" / "PH2Dataset"
    assert load_ph2(root, image_size=16).ids == list(DIAG)


def test_download_ph2_default_dir_is_found(served_zip):
    url, sha = served_zip
    root = download_ph2(url, sha)
    assert find_ph2() == root


def test_download_ph2_wrong_hash(served_zip, tmp_path):
    url, _ = served_zip
    with pytest.raises(ValueError, match="hash"):
        download_ph2(url, "0" * 64, cache_dir=tmp_path / "kc")


# ---- the real data (read-only, next to the repo; skipped where absent) -------------------------

needs_real = pytest.mark.skipif(
    not REAL_PH2.is_dir(), reason=f"real PH2 not present at {REAL_PH2} (tests use fixtures instead)"
)


@needs_real
def test_real_ph2_flat():
    ds = load_ph2(REAL_PH2, image_size=64)
    assert len(ds) == 200 and ds.images.shape == (200, 64, 64, 3)
    assert {d: ds.diagnosis.count(d) for d in set(ds.diagnosis)} == {
        "common_nevus": 80,
        "atypical_nevus": 80,
        "melanoma": 40,
    }
    assert set(np.unique(ds.masks)) == {0.0, 1.0}
    parts = split(ds, seed=0)
    assert [len(p) for p in parts] == [100, 50, 50]
    assert parts.test.diagnosis.count("melanoma") == 10


@pytest.mark.skipif(not REAL_OFFICIAL.is_dir(), reason=f"real PH2 sample not present at {REAL_OFFICIAL}")
def test_real_official_sample_matches_flat_metadata():
    ds = load_ph2(REAL_OFFICIAL, image_size=None)
    assert ds.ids == ["IMD002", "IMD003", "IMD004"]
    assert [m.shape[:2] for m in ds.masks] == [(572, 765), (574, 765), (574, 765)]
    if REAL_PH2.is_dir():
        meta = pd.read_csv(REAL_PH2 / "metadata.csv").set_index("image_id")["clinical_diagnosis"]
        assert ds.diagnosis == [meta[i] for i in ds.ids]
        flat = load_ph2(REAL_PH2, image_size=None)
        for i, cid in enumerate(ds.ids):  # the 24-bit IMD002 mask reads like the 1-bit ones
            j = flat.ids.index(cid)
            np.testing.assert_array_equal(ds.masks[i], flat.masks[j])
            np.testing.assert_array_equal(ds.images[i], flat.images[j])
