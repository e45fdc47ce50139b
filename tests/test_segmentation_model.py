"""kseg.models.SegmentationModel: the refinement, threshold and architecture travel in the model's
own config, through a .keras file and to another backend; a .keras file written by kseg 0.3 (a
plain functional model with the refinement as a zip member, tests/fixtures/kseg03_unet.keras)
still loads and predicts the same."""

import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from kseg import models, refine
from kseg.models import SegmentationModel, as_segmentation_model
from kseg.predict import load_trained_model

FIXTURES = Path(__file__).parent / "fixtures"


def _model():
    keras.utils.set_random_seed(0)
    return models.build("fpn:unet", (32, 32, 3), base_filters=4, depth=3)


def test_build_gives_a_segmentation_model_named_by_its_architecture():
    model = _model()
    assert isinstance(model, SegmentationModel) and model.architecture == "fpn:unet"
    assert model.refinement == refine.Refinement() and model.threshold == 0.5


def test_the_fields_travel_in_the_config_and_the_file(tmp_path):
    model = as_segmentation_model(_model(), refinement=refine.Refinement("d4", "fill"), threshold=0.4)
    config = model.get_config()
    assert (
        config["refinement"] == {"tta": "d4", "postprocess": "fill", "temperature": 1.0} and config["threshold"] == 0.4
    )
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        assert refine.REFINEMENT_MEMBER not in archive.namelist()
    loaded = keras.saving.load_model(tmp_path / "m.keras")  # no custom objects
    assert isinstance(loaded, SegmentationModel)
    assert (loaded.refinement, loaded.threshold) == (refine.Refinement("d4", "fill"), 0.4)
    assert loaded.architecture == "fpn:unet"
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype="float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images)), keras.ops.convert_to_numpy(model(images)), atol=1e-6
    )


_OTHER_BACKEND = """
import sys, keras
import kseg.models  # registers kseg's classes
model = keras.saving.load_model(sys.argv[1])
print(type(model).__name__, model.refinement.tta, model.refinement.postprocess, model.threshold, model.architecture)
"""


def test_the_fields_load_under_another_backend(tmp_path):
    other = {"tensorflow": "torch", "torch": "jax", "jax": "tensorflow"}[keras.backend.backend()]
    path = tmp_path / "m.keras"
    refine.save_with_refinement(_model(), path, refine.Refinement("flip", "largest"))
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_BACKEND, str(path)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "KERAS_BACKEND": other},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-5:] == ["SegmentationModel", "flip", "largest", "0.5", "fpn:unet"]


def test_a_kseg_0_3_file_still_loads_and_predicts_the_same(tmp_path):
    path = FIXTURES / "kseg03_unet.keras"
    with zipfile.ZipFile(path) as archive:
        assert refine.REFINEMENT_MEMBER in archive.namelist()  # the 0.3 layout
    expected = np.load(FIXTURES / "kseg03_unet_logits.npz")
    model = load_trained_model(path)
    assert refine.load_refinement(path) == refine.Refinement("flip", "largest")
    got = keras.ops.convert_to_numpy(model(expected["images"], training=False))
    np.testing.assert_allclose(got, expected["logits"], atol=1e-5)
    # Saved again, it becomes a SegmentationModel that carries the refinement in its config.
    refine.save_with_refinement(model, tmp_path / "again.keras", refine.load_refinement(path))
    again = keras.saving.load_model(tmp_path / "again.keras")
    assert isinstance(again, SegmentationModel) and again.refinement == refine.Refinement("flip", "largest")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(expected["images"])), expected["logits"], atol=1e-5)


@pytest.mark.parametrize("name", ["segnet", "unet2", "deeplabv3plus:unet"])
def test_every_builder_returns_one(name):
    model = models.build(name, (32, 32, 3), base_filters=4, depth=3)
    assert isinstance(model, SegmentationModel) and model.architecture == name
