"""Ensembles of saved kseg models as one Keras model: the mean of the members' logits, each
member under its own test-time augmentation.

    logits(x) = (1 / M) * sum_m (1 / V_m) * sum_v T_v^-1(member_m(T_v(x)))

where ``T_v`` runs over the views of member ``m``'s saved TTA mode (:data:`kseg.refine.VIEWS`). The
views are layers of the graph (:class:`kseg.layers.Dihedral`), so the ensemble is a plain functional model:
it saves, loads without ``custom_objects`` and goes wherever a model goes (``predict``,
``evaluate``, ``export``). Its own refinement is post-processing only (TTA is inside), chosen
on a validation set where one is given, else the post-processing its members share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from kseg import refine
from kseg.layers import Dihedral
from kseg.models.segmentation_model import SegmentationModel


def _member_logits(member: keras.Model, x, tta: str, index: int):
    """The member's logits on ``x``, averaged over the views of ``tta``."""
    outputs = []
    for k, mirror in refine.VIEWS[tta]:
        view = x if (k, mirror) == (0, False) else Dihedral(k, mirror, name=f"member{index}_view_{k}{'m' * mirror}")(x)
        logits = member(view)
        if (k, mirror) != (0, False):
            logits = Dihedral(k, mirror, inverse=True, name=f"member{index}_back_{k}{'m' * mirror}")(logits)
        outputs.append(logits)
    if len(outputs) == 1:
        return outputs[0]
    return keras.layers.Average(name=f"member{index}_tta_mean", dtype="float32")(outputs)


def build_ensemble(
    members: Sequence[keras.Model], ttas: Sequence[str] | None = None, name: str = "ensemble"
) -> keras.Model:
    """One functional model averaging the logits of ``members`` (all with one input shape), each
    under its TTA mode (``ttas``; default: each member's attached refinement's)."""
    if not members:
        raise ValueError("build_ensemble expects at least one member. Received: none")
    shapes = {tuple(m.input_shape[1:]) for m in members}
    if len(shapes) != 1:
        raise ValueError(f"build_ensemble expects members of one input shape. Received: {sorted(shapes)}")
    ttas = [refine.attached(m).tta for m in members] if ttas is None else list(ttas)
    inputs = keras.Input(shape=shapes.pop(), name="image")
    logits = []
    for index, (member, tta) in enumerate(zip(members, ttas)):
        # A new name per member: two U-Nets would otherwise clash inside one graph.
        renamed = keras.Model(member.input, member.output, name=f"member{index}_{member.name}")
        logits.append(_member_logits(renamed, inputs, tta, index))
    output = logits[0] if len(logits) == 1 else keras.layers.Average(name="ensemble_mean", dtype="float32")(logits)
    return SegmentationModel(inputs, output, name=name, architecture=f"ensemble of {len(members)}")


def shared_postprocess(refinements: Sequence[refine.Refinement]) -> str:
    """The post-processing every member chose, else ``none``."""
    modes = {r.postprocess for r in refinements}
    return modes.pop() if len(modes) == 1 else "none"


def ensemble_files(
    paths: Sequence[str | Path],
    output: str | Path,
    val_images: np.ndarray | None = None,
    val_masks: np.ndarray | None = None,
    batch_size: int = 8,
) -> tuple[keras.Model, refine.Refinement]:
    """Loads the saved models at ``paths`` (each with its refinement), writes their ensemble to
    ``output`` with its refinement, and returns both. The refinement's post-processing is chosen on
    ``val_images`` / ``val_masks`` (at the members' input size; masks at any size) where given."""
    from kseg.predict import load_trained_model

    members = [load_trained_model(p) for p in paths]
    refinements = [refine.load_refinement(p) for p in paths]
    model = build_ensemble(members, [r.tta for r in refinements])
    if val_images is not None:
        chosen, _ = refine.choose_refinement(
            model,
            val_images,
            val_masks,
            tta_modes=("none",),
            output_size=tuple(np.asarray(val_masks).shape[1:3]),
            batch_size=batch_size,
        )
    else:
        chosen = refine.Refinement(postprocess=shared_postprocess(refinements))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    refine.save_with_refinement(model, output, chosen)
    return model, chosen


__all__ = ["build_ensemble", "ensemble_files", "shared_postprocess"]
