"""What a model carries about how its logits become masks and probabilities: the
:class:`Refinement` value (a TTA mode, a post-processing mode and a temperature) and its
in-memory attachment to a model (``attach`` / ``attached``).

Both :mod:`kseg.refine` (which chooses and applies refinements) and
:class:`kseg.models.SegmentationModel` (which stores one in its config) need this piece, and
neither needs the other to have it: it lives here so the two import it without importing each
other. Its public names are re-exported by :mod:`kseg.refine`; import them from there.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras

from kseg._errors import unknown_name

__all__ = ["TTA_MODES", "POSTPROCESS_MODES", "Refinement", "check_mode", "attach", "attached"]

#: TTA modes from cheapest to most expensive (1, 4 and 8 forward passes).
TTA_MODES = ("none", "flip", "d4")
#: Post-processing modes from simplest to most involved.
POSTPROCESS_MODES = ("none", "largest", "fill", "largest+fill")
#: The attribute of a model that holds its attached refinement.
_ATTRIBUTE = "_kseg_refinement"


def check_mode(mode: str, modes: tuple[str, ...], what: str) -> str:
    """``mode`` if it is one of ``modes``, else the error that names them (``what``: "TTA", ...)."""
    if mode not in modes:
        raise unknown_name(f"{what} mode", mode, modes)
    return mode


@dataclasses.dataclass(frozen=True)
class Refinement:
    """A TTA mode, a post-processing mode and a temperature, applied to a model's predictions.

    Args:
        tta: one of ``TTA_MODES``.
        postprocess: one of ``POSTPROCESS_MODES``.
        temperature: the probabilities are ``sigmoid(logits / temperature)``
            (:func:`kseg.calibration.fit_temperature`); it never changes a mask.

    Example:

    >>> r = Refinement(tta="flip", postprocess="largest")
    >>> r.describe()
    'tta=flip,post=largest'
    >>> Refinement.from_dict(r.to_dict()) == r
    True
    """

    tta: str = "none"
    postprocess: str = "none"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        check_mode(self.tta, TTA_MODES, "TTA")
        check_mode(self.postprocess, POSTPROCESS_MODES, "post-processing")
        if not (
            isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0
        ):
            raise ValueError(f"A refinement's temperature must be a positive number. Received: {self.temperature!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict, the inverse of ``from_dict``."""
        return {"tta": self.tta, "postprocess": self.postprocess, "temperature": float(self.temperature)}

    @property
    def masks_only(self) -> "Refinement":
        """The same masks without the temperature: what the validation search compares."""
        return dataclasses.replace(self, temperature=1.0)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "Refinement":
        """Builds a refinement from ``to_dict()``'s output; missing keys take their defaults."""
        unknown = set(config) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(
                f"A refinement expects the keys 'tta', 'postprocess' and 'temperature'. Received: {sorted(unknown)}"
            )
        return cls(**config)

    def describe(self) -> str:
        """A short label such as ``"tta=d4,post=largest+fill"`` (the keys of the score table), with
        ``",T=1.52"`` after it when the temperature is not 1."""
        label = f"tta={self.tta},post={self.postprocess}"
        return label if self.temperature == 1.0 else f"{label},T={self.temperature:.3g}"


# --- Attachment to a model ------------------------------------------------------------------


def attach(model: keras.Model, refinement: Refinement) -> keras.Model:
    """Remembers ``refinement`` on ``model`` (in memory) and returns the model.

    ``kseg.refine.save_with_refinement(model, path)`` writes it into the ``.keras`` file and
    ``kseg.refine.load_model_with_refinement(path)`` attaches it again.
    """
    if not isinstance(refinement, Refinement):
        raise TypeError(f"Expected a Refinement. Received: {type(refinement).__name__}")
    setattr(model, _ATTRIBUTE, refinement)
    return model


def attached(model: keras.Model) -> Refinement:
    """The refinement attached to ``model``, or the plain ``Refinement()`` if none is."""
    return getattr(model, _ATTRIBUTE, None) or Refinement()
