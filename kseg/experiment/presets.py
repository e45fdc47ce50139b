"""The grid's presets: each a dict of :class:`kseg.experiment.config.RunConfig` fields, what
``--preset NAME`` starts from before the flags override it (``RunConfig.from_preset``)."""

from __future__ import annotations

from typing import Any

# Each preset is a complete set of RunConfig defaults; flags override single fields.
PRESETS: dict[str, dict[str, Any]] = {
    # Seconds: for tests and a first look at the pipeline.
    "smoke": dict(
        image_size=32,
        eval_size=64,
        base_filters=4,
        depth=2,
        epochs=2,
        batch_size=4,
        lr=1e-3,
        patience=2,
        synthetic_n=24,
        split_sizes=(12, 6, 6),
        schedule="plateau",
        # 6 steps leave the moving statistics at half their initial values: IoU 0 in inference.
        precise_bn=True,
    ),
    # A laptop-class CPU: the 9-pair grid at one seed in under 20 minutes on 2 Zen 4 cores with bf16
    # (an AVX2-only Zen 3 takes 6-10 minutes a run: docs/benchmarks.md). docs/results.md, "The cpu
    # preset's ablation", measures each setting alone and what this budget costs in IoU.
    "cpu": dict(
        image_size=128,
        eval_size=256,
        base_filters=16,
        depth=4,
        epochs=32,
        batch_size=8,
        lr=1e-3,
        patience=12,
        schedule="cosine",
        warmup_epochs=2,
        refine="auto",
        batch_norm="fast",
        val_every=2,
    ),
    # One model for every dermoscopy source (docs/dermoscopy.md): the cpu recipe fine-tuned from
    # an 8-epoch ISIC pretraining with a quarter of every batch replayed from ISIC (the pretraining
    # set); chosen on the validation split of both sources among the variants that fit the budget.
    "dermoscopy": dict(
        image_size=128,
        eval_size=256,
        base_filters=16,
        depth=4,
        epochs=16,
        batch_size=8,
        lr=1e-3,
        patience=12,
        schedule="cosine",
        warmup_epochs=2,
        refine="auto",
        batch_norm="fast",
        val_every=2,
        pretrain_epochs=8,
        joint_ratio=0.25,
    ),
    # The original notebook's protocol, for a GPU.
    "paper": dict(
        image_size=256,
        eval_size=256,
        base_filters=64,
        depth=4,
        epochs=100,
        batch_size=8,
        lr=1e-4,
        patience=30,
        schedule="plateau",
    ),
}

# Presets that train beside another labelled set and pretrain on it, where no --joint-source or
# --pretrain-on names one: the environment variable that names the set's folder, its mask suffix.
PRESET_SOURCES: dict[str, tuple[str, str]] = {"dermoscopy": ("KSEG_ISIC2018_TRAIN_DIR", "_segmentation")}

__all__ = ["PRESETS", "PRESET_SOURCES"]
