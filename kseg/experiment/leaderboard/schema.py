"""The leaderboard's schema: its columns (fixed, per external set, per source), which are required
and read as text, the statuses a row may have, and the columns of the per-image companion file.
"""

from __future__ import annotations

import re
from pathlib import Path

from kseg.experiment.config import ROW_FIELDS

__all__ = [
    "COLUMNS",
    "EXTERNAL_COLUMN",
    "SOURCE_COLUMN",
    "known_column",
    "LOWER_IS_BETTER",
    "lower_is_better",
    "per_image_score",
    "folder_label",
    "external_prefix",
    "REQUIRED",
    "TEXT_COLUMNS",
    "STATUSES",
    "PER_IMAGE_SCORES",
    "PER_IMAGE_COLUMNS",
]

COLUMNS: tuple[str, ...] = (
    "timestamp",
    "run_id",
    "model",
    "loss",
    "seed",
    "dataset",
    "split_seed",
    "image_size",
    "eval_size",
    "base_filters",
    "epochs",
    "epochs_run",
    "best_epoch",
    "test_iou",
    "test_dice",
    "test_dataset_iou",
    "test_iou_common_nevus",
    "test_iou_atypical_nevus",
    "test_iou_melanoma",
    "val_iou",
    "params",
    "train_seconds",
    "device",
    "backend",
    "keras_version",
    "precision",
    "jit_compile",
    "preset",
    "config_hash",
    "status",
    "error",
    # Added with kseg 0.2 (older files load with these empty):
    "group_hash",
    "kseg_version",
    "data_fingerprint",
    "mask_suffix",
    "split_sizes",
    "batch_size",
    "lr",
    "schedule",
    "warmup_epochs",
    "weight_decay",
    "ema",
    "augment",
    "illuminant",
    "colour_constancy",
    "val_every",
    "refine",
    "tta",
    "postprocess",
    "val_iou_plain",
    "val_iou_refined",
    "test_iou_plain",
    "run_seconds",
    "test_isic_score",
    "test_failure_fraction",
    # Added with kseg 0.3:
    "batch_norm",
    "min_scale",
    # Added with transfer (--init-from, --pretrain-on): the source's label:hash, weights loaded / fresh.
    "init_source",
    "init_loaded",
    "init_fresh",
    # Added with cross-validation (--folds K): K, and which fold a run tests on.
    "folds",
    "fold",
    # Added with the encoder family: a pretrained encoder's starting weights (imagenet, sha256:...).
    "encoder_weights",
    # Added with the grid's ensemble rows (kseg.experiment.group_ensembles): their kind and member count
    # (empty for a training run).
    "kind",
    "members",
    # Added with the border and calibration scores (kseg.boundary, kseg.calibration): test-set
    # means per image (pixels at eval_size), the pixel-pooled ECE after and before the temperature
    # the refinement fitted on validation.
    "test_hd95",
    "test_hd",
    "test_assd",
    "test_nsd",
    "test_ece",
    "test_ece_plain",
    "temperature",
    # Added with the cost of a run (kseg.models.cost): forward GFLOPs of one image at the run's
    # input size, training seconds per epoch, inference ms per image at the evaluation size (a
    # median in the run) and the CPU kind those times belong to (kseg.device.cpu_kind).
    "gflops",
    "train_seconds_per_epoch",
    "infer_ms_per_image",
    "cpu_kind",
    # Added with deep supervision: which output a deeply supervised run predicts with (final, mean).
    "side_output",
)
# Every config field a row repeats has its column: a knob added since joins at the end.
COLUMNS += tuple(field for field in ROW_FIELDS if field not in COLUMNS)
# Scores on external sets (``--external DIR``), one group of columns per set, named by its folder.
EXTERNAL_COLUMN = re.compile(
    r"^ext_[a-z0-9_]+_(iou|dice|dataset_iou|isic_score|failure_fraction|members_iou|hd95|hd|assd|nsd|ece)$"
)


# IoU per source: of a dataset joined from several (``--add-source``, test), and of a run's joint
# sources (``--joint-source``: each test part, and validation per source).
SOURCE_COLUMN = re.compile(r"^(test|val)_iou_source_[a-z0-9_]+$")


# Scores where lower is better, by the last part of a column's name (test_hd95, ext_x_ece, ...);
# every other score ranks highest first.
LOWER_IS_BETTER = (
    "hd95",
    "hd",
    "assd",
    "ece",
    "ece_plain",
    "failure_fraction",
    "params",
    "gflops",
    "train_seconds",
    "train_seconds_per_epoch",
    "infer_ms_per_image",
    "run_seconds",
)


def lower_is_better(column: str) -> bool:
    """Whether a smaller value of ``column`` is the better one (a distance, an error, a failure rate)."""
    return any(column == score or column.endswith(f"_{score}") for score in LOWER_IS_BETTER)


def per_image_score(column: str) -> str | None:
    """The per-image companion file's score behind a test column (``test_hd95`` -> ``hd95``), if any."""
    score = column.removeprefix("test_")
    return score if column.startswith("test_") and score in PER_IMAGE_SCORES else None


def known_column(name: str) -> bool:
    return name in COLUMNS or bool(EXTERNAL_COLUMN.match(name)) or bool(SOURCE_COLUMN.match(name))


def folder_label(folder: str | Path) -> str:
    """A folder's name as a column-safe label: lower-case, other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", Path(folder).name.lower()).strip("_")


def external_prefix(folder: str | Path) -> str:
    """``ext_<folder label>_``: the columns of one external set."""
    return f"ext_{folder_label(folder)}_"


# Without these a CSV is not a leaderboard (it would be overwritten by mistake).
REQUIRED = ("run_id", "model", "loss", "config_hash", "status")
# Read as text: a hash or id made of digits must keep its leading zeros.
TEXT_COLUMNS = (
    "timestamp",
    "kind",
    "run_id",
    "model",
    "loss",
    "dataset",
    "device",
    "backend",
    "keras_version",
    "precision",
    "preset",
    "config_hash",
    "group_hash",
    "status",
    "error",
    "kseg_version",
    "data_fingerprint",
    "mask_suffix",
    "split_sizes",
    "schedule",
    "augment",
    "refine",
    "tta",
    "postprocess",
    "batch_norm",
    "init_source",
    "encoder_weights",
    "cpu_kind",
    "side_output",
)
STATUSES = ("ok", "failed", "nan")

# The companion file of per-image scores: one row per (run, scored image), before and after the
# run's refinement, for paired comparisons. ``set`` is ``test`` or an external set's prefix.
# Every per-image score of the refined masks (lower is better for the distances and the ECE); the
# border and calibration scores came later, so they follow the plain scores (an older file widens).
PER_IMAGE_SCORES = ("iou", "dice", "hd95", "hd", "assd", "nsd", "ece")
PER_IMAGE_COLUMNS = ("run_id", "config_hash", "set", "case_id", "iou", "dice", "iou_plain", "dice_plain")
PER_IMAGE_COLUMNS += tuple(score for score in PER_IMAGE_SCORES if score not in PER_IMAGE_COLUMNS)
