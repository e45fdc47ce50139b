"""kseg's ready model: the model ``python -m kseg predict`` runs when no ``--model`` is given.

It is one run of the ``dermoscopy`` preset or of its ablation (a network pretrained on ISIC
2018's training images, then trained on PH2 with a share of every batch from ISIC;
docs/dermoscopy.md): the run with the best validation IoU (both sources' validation parts),
saved without its optimizer state. Its row in ``experiments.csv`` is the one whose ``config_hash``
:func:`provenance` names. It was made by::

    KSEG_PH2_DIR=../shared/data/ph2 KSEG_ISIC2018_TRAIN_DIR=../shared/data/isic2018-train \\
        python run_all.py --preset dermoscopy --seeds 0 1 2 --models unet --losses bce \\
        --pretrain-epochs 32 --joint-ratio 0.5 --external ../shared/data/isic2018-dev:_segmentation
    python -m kseg.pretrained    # the best run (best_run); or name one: python -m kseg.pretrained runs/RUN_ID
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

READY_MODEL = Path(__file__).with_name("dermoscopy.keras")
PROVENANCE = READY_MODEL.with_suffix(".json")
# The row fields the provenance file repeats, so a user sees what the model scores without the CSV.
PROVENANCE_FIELDS = (
    "run_id",
    "config_hash",
    "model",
    "loss",
    "seed",
    "preset",
    "image_size",
    "init_source",
    "joint_ratio",
    "val_iou",
    "val_iou_refined",
    "test_iou",
    "test_iou_source_isic2018_train",
    "ext_isic2018_dev_iou",
)


def ready_model() -> Path:
    """The ready model's ``.keras`` file. Raises ``FileNotFoundError`` saying how to make one
    (an installation without the package data, or a clone that removed it)."""
    if not READY_MODEL.is_file():
        raise FileNotFoundError(
            f"kseg's ready model {READY_MODEL} is missing: pass --model runs/RUN/model.keras, or make it with "
            "`python -m kseg.pretrained runs/RUN` from a run of the dermoscopy preset (docs/dermoscopy.md)"
        )
    return READY_MODEL


def provenance() -> dict:
    """The ready model's run: its id, hash, recipe and scores (``dermoscopy.json``)."""
    return json.loads(PROVENANCE.read_text())


def best_run(results: str | Path = "experiments.csv", output: str | Path = "runs", preset: str = "dermoscopy") -> Path:
    """The run folder in ``output`` of the ``preset``'s run with the best validation IoU after its
    refinement (what the ready model would score on validation), among its runs that trained on
    a joint source (the preset's fine-tunes, not its pretraining runs) and whose folder holds a
    model. Raises ``FileNotFoundError`` when there is none."""
    from kseg import leaderboard, transfer

    rows = leaderboard.latest_ok_rows(leaderboard.read(results))
    rows = rows[(rows["preset"] == preset) & rows["joint_source"].notna()]
    rows = rows[[(Path(output) / run_id / transfer.MODEL_FILE).is_file() for run_id in rows["run_id"]]]
    if rows.empty:
        raise FileNotFoundError(
            f"the ready model expects a trained run of the {preset} preset in {output} with an ok row in {results}"
        )
    best = rows.loc[rows["val_iou_refined"].fillna(rows["val_iou"]).idxmax()]
    return Path(output) / best["run_id"]


def install(run_dir: str | Path, results: str | Path = "experiments.csv") -> Path:
    """Makes the run in ``run_dir`` kseg's ready model: its ``model.keras`` (with the refinement
    it chose) saved without optimizer state, and its leaderboard row's recipe and scores in
    ``dermoscopy.json``. Raises ``ValueError`` when ``results`` has no ok row for the run."""
    from kseg import leaderboard, transfer

    run_dir = Path(run_dir)
    model = transfer.load_source(run_dir)
    config_hash = json.loads((run_dir / "config.json").read_text())["config_hash"]
    rows = leaderboard.read(results)
    row = rows[(rows["config_hash"] == config_hash) & (rows["status"] == "ok")]
    if row.empty:
        raise ValueError(f"the ready model expects a run with an ok row in {results}. Received: {run_dir}")
    row = row.iloc[-1]
    with tempfile.TemporaryDirectory() as tmp:  # saved whole before it replaces the committed file
        saved = Path(tmp) / READY_MODEL.name
        model.save(saved)
        shutil.move(saved, READY_MODEL)
    write_provenance(row, rows)
    return READY_MODEL


def provenance_facts(row, table) -> dict:
    """What ``dermoscopy.json`` says of the run in leaderboard ``row``: :data:`PROVENANCE_FIELDS`
    (whole numbers as integers: a CSV reads seeds as floats), its recipe, the recipe of the run
    it started from (``pretraining``: an ISIC pretraining's epochs are not in the fine-tune's own
    recipe) found in ``table`` by ``init_source``'s hash, and the model file's size."""
    from kseg import leaderboard

    def plain(value):
        value = value.item() if hasattr(value, "item") else value
        return int(value) if isinstance(value, float) and value.is_integer() else value

    facts = {field: plain(row[field]) for field in PROVENANCE_FIELDS}
    facts["recipe"] = leaderboard.recipe(row)
    source_hash = str(row["init_source"]).rpartition(":")[2]
    sources = table[(table["config_hash"] == source_hash) & (table["status"] == "ok")]
    if not sources.empty:
        facts["pretraining"] = f"{sources.iloc[-1]['dataset']}: {leaderboard.recipe(sources.iloc[-1])}"
    facts["bytes"] = READY_MODEL.stat().st_size
    return facts


def write_provenance(row, table) -> Path:
    """Writes :func:`provenance_facts` of ``row`` to ``dermoscopy.json``."""
    PROVENANCE.write_text(json.dumps(provenance_facts(row, table), indent=1) + "\n")
    return PROVENANCE


__all__ = [
    "READY_MODEL",
    "PROVENANCE",
    "ready_model",
    "provenance",
    "provenance_facts",
    "write_provenance",
    "best_run",
    "install",
]
