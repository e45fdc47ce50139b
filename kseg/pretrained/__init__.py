"""kseg's ready model: the model ``python -m kseg predict`` runs when no ``--model`` is given.

It is one run of the ``dermoscopy`` preset or of its ablation (a network pretrained on ISIC
2018's training images, then trained on PH2 with a share of every batch from ISIC;
docs/dermoscopy.md): the run with the best validation IoU (both sources' validation parts),
saved without its optimizer state. Its row in ``experiments.csv`` is the one whose ``config_hash``
:func:`provenance` names. It was made by (:mod:`kseg.experiment.ready_model`)::

    KSEG_PH2_DIR=../shared/data/ph2 KSEG_ISIC2018_TRAIN_DIR=../shared/data/isic2018-train \\
        python run_all.py --preset dermoscopy --seeds 0 1 2 --models unet --losses bce \\
        --pretrain-epochs 32 --joint-ratio 0.5 --external ../shared/data/isic2018-dev:_segmentation
    python -m kseg.pretrained    # the best run (best_run); or name one: python -m kseg.pretrained runs/RUN_ID
"""

from __future__ import annotations

import json
from pathlib import Path

READY_MODEL = Path(__file__).with_name("dermoscopy.keras")
PROVENANCE = READY_MODEL.with_suffix(".json")


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


__all__ = ["READY_MODEL", "PROVENANCE", "ready_model", "provenance"]
