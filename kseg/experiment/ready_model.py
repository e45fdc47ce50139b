"""Making a run kseg's ready model (:mod:`kseg.pretrained`): choosing the dermoscopy preset's run
with the best validation IoU in the leaderboard (:func:`best_run`), saving its model without
optimizer state and writing its provenance from its leaderboard row (:func:`install`);
``python -m kseg.pretrained`` runs them."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from kseg import pretrained
from kseg.experiment import leaderboard, transfer

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


def best_run(results: str | Path = "experiments.csv", output: str | Path = "runs", preset: str = "dermoscopy") -> Path:
    """The run folder in ``output`` of the ``preset``'s run with the best validation IoU after its
    refinement (what the ready model would score on validation), among its runs that trained on
    a joint source (the preset's fine-tunes, not its pretraining runs) and whose folder holds a
    model. Raises ``FileNotFoundError`` when there is none."""
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
    run_dir = Path(run_dir)
    model = transfer.load_source(run_dir)
    config_hash = json.loads((run_dir / "config.json").read_text())["config_hash"]
    rows = leaderboard.read(results)
    row = rows[(rows["config_hash"] == config_hash) & (rows["status"] == "ok")]
    if row.empty:
        raise ValueError(f"the ready model expects a run with an ok row in {results}. Received: {run_dir}")
    row = row.iloc[-1]
    with tempfile.TemporaryDirectory() as tmp:  # saved whole before it replaces the committed file
        saved = Path(tmp) / pretrained.READY_MODEL.name
        model.save(saved)
        shutil.move(saved, pretrained.READY_MODEL)
    write_provenance(row, rows)
    return pretrained.READY_MODEL


def provenance_facts(row, table) -> dict:
    """What ``dermoscopy.json`` says of the run in leaderboard ``row``: :data:`PROVENANCE_FIELDS`
    (whole numbers as integers: a CSV reads seeds as floats), its recipe, the recipe of the run
    it started from (``pretraining``: an ISIC pretraining's epochs are not in the fine-tune's own
    recipe) found in ``table`` by ``init_source``'s hash, and the model file's size."""

    def plain(value):
        value = value.item() if hasattr(value, "item") else value
        return int(value) if isinstance(value, float) and value.is_integer() else value

    facts = {field: plain(row[field]) for field in PROVENANCE_FIELDS}
    facts["recipe"] = leaderboard.recipe(row)
    source_hash = str(row["init_source"]).rpartition(":")[2]
    sources = table[(table["config_hash"] == source_hash) & (table["status"] == "ok")]
    if not sources.empty:
        facts["pretraining"] = f"{sources.iloc[-1]['dataset']}: {leaderboard.recipe(sources.iloc[-1])}"
    facts["bytes"] = pretrained.READY_MODEL.stat().st_size
    return facts


def write_provenance(row, table) -> Path:
    """Writes :func:`provenance_facts` of ``row`` to ``dermoscopy.json``."""
    pretrained.PROVENANCE.write_text(json.dumps(provenance_facts(row, table), indent=1) + "\n")
    return pretrained.PROVENANCE


__all__ = ["PROVENANCE_FIELDS", "best_run", "install", "provenance_facts", "write_provenance"]
