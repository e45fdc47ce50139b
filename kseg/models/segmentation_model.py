"""The model class every kseg builder returns: a functional Keras model that also carries how its
logits become masks.

A :class:`SegmentationModel` is ``image -> logits`` like any functional model (``predict``,
``evaluate``, ``export`` and ``fit`` are Keras's own), plus three fields in its config, so they
travel inside the ``.keras`` file and load with ``keras.saving.load_model`` on any backend:

* ``refinement``: the test-time augmentation and post-processing chosen on validation
  (:class:`kseg.refine.Refinement`; :func:`kseg.refine.attached` reads it);
* ``threshold``: the probability that separates lesion from background;
* ``architecture``: the canonical name it was built from (``"fpn:mobilenetv2"``), which says
  which encoder and decoder its layers are.

Files written by kseg 0.3 (a plain functional model with the refinement as an extra
``kseg_refinement.json`` member of the zip) still load: :func:`kseg.refine.load_refinement`
reads either.
"""

from __future__ import annotations

import keras

from kseg._refinement import Refinement, attach, attached


@keras.saving.register_keras_serializable(package="kseg")
class SegmentationModel(keras.Model):
    """A functional segmentation model with its refinement, threshold and architecture name.

    Args:
        inputs, outputs: as for ``keras.Model(inputs, outputs)``: images (B, H, W, C) in [0, 1]
            to logits (B, H, W, 1).
        refinement: a :class:`kseg.refine.Refinement` or its ``to_dict()`` (default: none).
        threshold: the mask's probability threshold.
        architecture: the ``kseg.models.build`` name it was built from.
        **kwargs: ``keras.Model``'s (``name``, ...).

    >>> image = keras.Input((32, 32, 3))
    >>> model = SegmentationModel(image, keras.layers.Conv2D(1, 1)(image), architecture="demo")
    >>> model.get_config()["threshold"]
    0.5
    """

    def __init__(self, *args, refinement=None, threshold: float = 0.5, architecture: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self._set_fields(refinement, threshold, architecture)

    def _set_fields(self, refinement=None, threshold: float = 0.5, architecture: str = "") -> "SegmentationModel":
        if isinstance(refinement, dict):
            refinement = Refinement.from_dict(refinement)
        attach(self, refinement or Refinement())
        self.threshold, self.architecture = float(threshold), architecture
        return self

    @property
    def refinement(self):
        return attached(self)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "refinement": self.refinement.to_dict(),
            "threshold": self.threshold,
            "architecture": self.architecture,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> "SegmentationModel":
        config = dict(config)
        own = {key: config.pop(key) for key in ("refinement", "threshold", "architecture") if key in config}
        # Keras rebuilds the graph and calls cls(inputs, outputs, name=...); the fields follow.
        return super().from_config(config, custom_objects)._set_fields(**own)


def as_segmentation_model(model: keras.Model, **fields) -> SegmentationModel:
    """``model`` if it is a :class:`SegmentationModel`, else one over its graph (the same layers
    and weights: an ensemble, or a model of kseg 0.3), with ``fields`` (``refinement``,
    ``threshold``, ``architecture``) set; the others keep their values."""
    if isinstance(model, SegmentationModel):
        current = dict(refinement=model.refinement, threshold=model.threshold, architecture=model.architecture)
    else:
        current = dict(refinement=attached(model))
        model = SegmentationModel(model.inputs, model.outputs, name=model.name)
    return model._set_fields(**{**current, **fields})


__all__ = ["SegmentationModel", "as_segmentation_model"]
