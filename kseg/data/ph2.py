"""The PH2 dermoscopy dataset: locating, downloading and loading it.

Two layouts are recognised automatically:

* the official archive: ``PH2Dataset/PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp``
  and ``.../IMDxxx_lesion/IMDxxx_lesion.bmp``, with ``PH2_dataset.xlsx`` beside
  ``PH2 Dataset images``;
* a flat folder: ``IMDxxx.png`` + ``IMDxxx_lesion.png`` (any supported extension), with an
  optional ``metadata.csv`` (columns ``image_id``, ``clinical_diagnosis``) or ``PH2_dataset.xlsx``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from kseg.data.dataset import SegmentationDataset
from kseg.data.io import ImageSize, is_image_file, load_pairs

OFFICIAL_IMAGES_DIR = "PH2 Dataset images"
XLSX_NAME = "PH2_dataset.xlsx"
CSV_NAME = "metadata.csv"
#: Clinical diagnosis columns of the official sheet and the labels kseg uses for them.
DIAGNOSIS_COLUMNS = {
    "Common Nevus": "common_nevus",
    "Atypical Nevus": "atypical_nevus",
    "Melanoma": "melanoma",
}
#: Names under the keras datasets folder that are searched for PH2.
KERAS_CANDIDATES = ("ph2", "PH2Dataset", "PH2", "ph2_extracted", "PH2Dataset_extracted")


def _keras_datasets_dir() -> Path:
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(keras_home) / "datasets"


def _layout(path: Path) -> str | None:
    """``"official"``, ``"flat"`` or ``None`` for a directory that may be a PH2 root."""
    if (path / OFFICIAL_IMAGES_DIR).is_dir():
        return "official"
    if path.is_dir() and any(f.stem.endswith("_lesion") and is_image_file(f) for f in path.iterdir()):
        return "flat"
    return None


def resolve_root(path: str | os.PathLike) -> Path | None:
    """The PH2 root at ``path``: itself, its ``PH2Dataset`` child, or one level down."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return None
    if path.name == OFFICIAL_IMAGES_DIR:  # pointed at the images folder itself
        path = path.parent
    for candidate in (path, path / "PH2Dataset"):
        if candidate.is_dir() and _layout(candidate):
            return candidate
    # e.g. a keras extraction dir that holds the archive's single top-level folder
    subdirs = [d for d in path.iterdir() if d.is_dir()]
    if len(subdirs) == 1 and _layout(subdirs[0]):
        return subdirs[0]
    return None


def search_locations(path: str | os.PathLike | None = None) -> list[Path]:
    """Where :func:`find_ph2` looks, in order.

    An explicit ``path`` is the only place looked at; else ``$KSEG_PH2_DIR`` if set; else the
    keras datasets folder (``$KERAS_HOME/datasets`` or ``~/.keras/datasets``). A wrong explicit
    location is never silently replaced by another copy.
    """
    if path is not None:
        return [Path(path).expanduser()]
    env = os.environ.get("KSEG_PH2_DIR")
    if env:
        return [Path(env).expanduser()]
    base = _keras_datasets_dir()
    return [base / name for name in KERAS_CANDIDATES]


def find_ph2(path: str | os.PathLike | None = None) -> Path | None:
    """Return the PH2 root (see :func:`search_locations`), or ``None`` when not found."""
    for location in search_locations(path):
        root = resolve_root(location)
        if root is not None:
            return root
    return None


def not_found_message(path: str | os.PathLike | None = None) -> str:
    """The error text for a missing PH2: every place looked at and how to get the data."""
    looked = "\n".join(f"  - {p}" for p in search_locations(path))
    return (
        "PH2 dataset not found. Looked in:\n"
        f"{looked}\n"
        "A PH2 folder holds either 'PH2Dataset/PH2 Dataset images/IMDxxx/...' (the official "
        "archive) or flat 'IMDxxx.png' + 'IMDxxx_lesion.png' files.\n"
        "To use it: download PH2 (https://www.fc.up.pt/addi/ph2%20database.html) and either "
        "set KSEG_PH2_DIR=/path/to/PH2Dataset, pass path=... to load_ph2/load_dataset, or call "
        "kseg.data.download_ph2(origin, file_hash) to fetch and extract it into the keras "
        "datasets folder."
    )


def download_ph2(origin: str, file_hash: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Download and extract a PH2 archive with ``keras.utils.get_file``; return its PH2 root.

    Args:
        origin: URL of a ``.zip``/``.tar*`` archive of PH2 (official or flat layout).
        file_hash: SHA-256 of the archive; a mismatch raises ``ValueError``.
        cache_dir: keras cache dir (default ``$KERAS_HOME`` or ``~/.keras``); the archive is
            extracted to ``<cache_dir>/datasets/ph2`` where :func:`find_ph2` looks.
    """
    import keras  # deferred: importing keras selects a backend, not needed to read files

    # Resolve and create the dir ourselves: keras silently falls back to /tmp/.keras when the
    # dir does not exist yet, and find_ph2 would then not look there.
    base = Path(cache_dir).expanduser() if cache_dir is not None else _keras_datasets_dir().parent
    base.mkdir(parents=True, exist_ok=True)
    extracted = keras.utils.get_file(
        fname="ph2",  # no dot: keras extracts into datasets/ph2 and keeps ph2_archive
        origin=origin,
        file_hash=file_hash,
        hash_algorithm="sha256",
        extract=True,
        cache_dir=str(base),
    )
    root = resolve_root(extracted)
    if root is None:
        raise FileNotFoundError(
            f"{extracted}: the archive from {origin} was extracted here but holds no PH2 layout "
            "('PH2Dataset/PH2 Dataset images/...' or flat IMDxxx.png + IMDxxx_lesion.png)"
        )
    return root


def _norm_label(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip().lower().replace(" ", "_").replace("-", "_")
    return text or None


def read_xlsx_diagnosis(path: Path) -> dict[str, str | None]:
    """Clinical diagnosis per image id from the official ``PH2_dataset.xlsx``.

    The sheet has a legend block first; the table header is the row whose first cell is
    ``Image Name``, and the diagnosis is an ``X`` in one of Common Nevus / Atypical Nevus /
    Melanoma.
    """
    raw = pd.read_excel(path, header=None, dtype=object)
    header_rows = [i for i in range(len(raw)) if any(str(v).strip() == "Image Name" for v in raw.iloc[i])]
    if not header_rows:
        raise ValueError(f"{path}: no 'Image Name' header row; is this the PH2_dataset.xlsx sheet?")
    header = [str(v).strip() for v in raw.iloc[header_rows[0]]]
    missing = [c for c in ["Image Name", *DIAGNOSIS_COLUMNS] if c not in header]
    if missing:
        raise ValueError(f"{path}: header row lacks column(s) {missing}")
    name_col = header.index("Image Name")
    diag_cols = {label: header.index(col) for col, label in DIAGNOSIS_COLUMNS.items()}
    result: dict[str, str | None] = {}
    for _, row in raw.iloc[header_rows[0] + 1 :].iterrows():
        name = row.iloc[name_col]
        if pd.isna(name) or not str(name).strip():
            continue
        marked = [lab for lab, c in diag_cols.items() if str(row.iloc[c]).strip().upper() == "X"]
        if len(marked) != 1:
            warnings.warn(
                f"{path}: {str(name).strip()} has {len(marked)} clinical diagnosis marks "
                f"({marked}); diagnosis left unknown",
                stacklevel=3,
            )
        result[str(name).strip()] = marked[0] if len(marked) == 1 else None
    return result


def read_csv_diagnosis(path: Path) -> dict[str, str | None]:
    """Clinical diagnosis per image id from a ``metadata.csv`` (image_id, clinical_diagnosis)."""
    table = pd.read_csv(path, dtype=str)
    for column in ("image_id", "clinical_diagnosis"):
        if column not in table.columns:
            raise ValueError(
                f"{path}: missing column {column!r} (has {list(table.columns)}); expected image_id, clinical_diagnosis"
            )
    return {str(i).strip(): _norm_label(d) for i, d in zip(table["image_id"], table["clinical_diagnosis"])}


def _diagnosis_for(ids: list[str], candidates: list[Path]) -> list[str | None] | None:
    """Diagnosis list for ``ids`` from the first metadata file present, else ``None``."""
    for meta in candidates:
        if not meta.is_file():
            continue
        table = read_csv_diagnosis(meta) if meta.suffix == ".csv" else read_xlsx_diagnosis(meta)
        unknown = [i for i in ids if i not in table]
        if unknown:
            warnings.warn(
                f"{meta}: no diagnosis for {len(unknown)} case(s) {unknown[:10]}; left unknown",
                stacklevel=3,
            )
        return [table.get(i) for i in ids]
    return None


def _official_pairs(root: Path) -> list[tuple[str, Path, Path]]:
    images_dir = root / OFFICIAL_IMAGES_DIR
    cases = sorted(d for d in images_dir.iterdir() if d.is_dir())
    if not cases:
        raise FileNotFoundError(f"{images_dir}: no case folders (expected IMDxxx/ subfolders)")
    pairs = []
    for case in cases:
        cid = case.name

        def pick(folder: Path, stem: str) -> Path:
            # The archive uses .bmp; accept any supported extension for re-encoded copies.
            found = [f for f in folder.glob(f"{stem}.*") if is_image_file(f)] if folder.is_dir() else []
            if not found:
                raise FileNotFoundError(f"{folder / (stem + '.bmp')}: missing (case {cid} in {images_dir})")
            return sorted(found)[0]

        image = pick(case / f"{cid}_Dermoscopic_Image", cid)
        mask = pick(case / f"{cid}_lesion", f"{cid}_lesion")
        pairs.append((cid, image, mask))
    return pairs


def _flat_pairs(root: Path) -> list[tuple[str, Path, Path]]:
    files = [f for f in root.iterdir() if f.is_file() and is_image_file(f)]
    masks = {f.stem[: -len("_lesion")]: f for f in files if f.stem.endswith("_lesion")}
    images = {f.stem: f for f in files if not f.stem.endswith("_lesion")}
    no_mask = sorted(set(images) - set(masks))
    if no_mask:
        raise FileNotFoundError(
            f"{root}: {len(no_mask)} image(s) without a mask, e.g. {images[no_mask[0]]} has no "
            f"{no_mask[0]}_lesion.<ext>; all: {no_mask[:10]}"
        )
    no_image = sorted(set(masks) - set(images))
    if no_image:
        raise FileNotFoundError(
            f"{root}: {len(no_image)} mask(s) without an image, e.g. {masks[no_image[0]]}; all: {no_image[:10]}"
        )
    return [(cid, images[cid], masks[cid]) for cid in sorted(images)]


def load_ph2(
    path: str | os.PathLike | None = None, image_size: ImageSize = 256, use_cache: bool = True
) -> SegmentationDataset:
    """Load PH2 (either layout) as float32 images in [0, 1] and 0/1 masks.

    Args:
        path: PH2 root, its parent, or ``None`` to search (see :func:`find_ph2`).
        image_size: int, ``(H, W)``, or ``None`` to keep each file's own size (then lists).
        use_cache: read/write decoded arrays in the kseg cache (see :mod:`kseg.data.cache`).
    """
    root = find_ph2(path)
    if root is None:
        raise FileNotFoundError(not_found_message(path))
    if _layout(root) == "official":
        cases = _official_pairs(root)
        meta = [root / XLSX_NAME, root / CSV_NAME]
    else:
        cases = _flat_pairs(root)
        meta = [root / CSV_NAME, root / XLSX_NAME]  # csv first: much faster than the xlsx
    ids = [c[0] for c in cases]
    diagnosis = _diagnosis_for(ids, meta)
    if diagnosis is None:
        warnings.warn(
            f"{root}: no {CSV_NAME} or {XLSX_NAME}; diagnoses unknown, splits not stratified",
            stacklevel=2,
        )
    return load_pairs([(c[1], c[2]) for c in cases], ids, image_size, "ph2", diagnosis, use_cache=use_cache)


__all__ = [
    "OFFICIAL_IMAGES_DIR",
    "XLSX_NAME",
    "CSV_NAME",
    "DIAGNOSIS_COLUMNS",
    "KERAS_CANDIDATES",
    "resolve_root",
    "search_locations",
    "find_ph2",
    "not_found_message",
    "download_ph2",
    "read_xlsx_diagnosis",
    "read_csv_diagnosis",
    "load_ph2",
]
