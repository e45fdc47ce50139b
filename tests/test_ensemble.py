"""Ensembles: one model's ensemble is that model, logits are the mean of the members' (each under
its own TTA, checked against kseg.refine's numpy TTA), the .keras file loads without custom
objects here and under another backend, and the CLI writes it with its post-processing."""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kseg import ensemble, layers, models, refine
from kseg.cli import main
from tests.harness import assert_layer_round_trip

SHAPE = (32, 32, 3)


def _member(name: str, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return models.build(name, input_shape=SHAPE, base_filters=4, depth=2)


@pytest.fixture
def images():
    return np.random.default_rng(0).random((4, *SHAPE), dtype=np.float32)


@pytest.mark.parametrize("quarter_turns, mirror", [(k, m) for m in (False, True) for k in range(4)])
def test_dihedral_matches_numpy_and_inverts(images, quarter_turns, mirror):
    forward = layers.Dihedral(quarter_turns, mirror)
    expected = np.rot90(np.flip(images, axis=2) if mirror else images, quarter_turns, axes=(1, 2))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(forward(images)), expected)
    back = layers.Dihedral(quarter_turns, mirror, inverse=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(back(forward(images))), images)


def test_dihedral_round_trips(images, tmp_path):
    assert_layer_round_trip(lambda: layers.Dihedral(3, True, name="d4_view"), images, tmp_path)


def test_an_ensemble_of_one_model_is_that_model(images):
    member = _member("unet", 1)
    single = ensemble.build_ensemble([member], ["none"])
    np.testing.assert_allclose(single.predict(images, verbose=0), member.predict(images, verbose=0), atol=1e-6)


@pytest.mark.parametrize("tta", ["flip", "d4"])
def test_a_member_under_tta_equals_kseg_refine_tta(images, tta):
    member = _member("segnet", 2)
    single = ensemble.build_ensemble([member], [tta])
    np.testing.assert_allclose(
        single.predict(images, verbose=0), refine.tta_predict_logits(member, images, tta), atol=1e-5
    )


def test_ensemble_logits_are_the_mean_of_the_members(images):
    members = [_member(name, seed) for seed, name in enumerate(models.SEED_MODELS)]
    combined = ensemble.build_ensemble(members, ["none", "flip", "none"])
    expected = np.mean(
        [refine.tta_predict_logits(m, images, tta) for m, tta in zip(members, ["none", "flip", "none"])], axis=0
    )
    np.testing.assert_allclose(combined.predict(images, verbose=0), expected, atol=1e-5)


def test_members_of_different_sizes_are_refused():
    other = models.build("unet", input_shape=(64, 64, 3), base_filters=4, depth=2)
    with pytest.raises(ValueError, match="one input shape. Received"):
        ensemble.build_ensemble([_member("unet", 0), other])


def _saved_members(tmp_path, postprocess=("largest", "largest")):
    paths = []
    for i, (name, post) in enumerate(zip(("unet", "unet"), postprocess)):
        path = tmp_path / f"m{i}.keras"
        refine.save_with_refinement(_member(name, i), path, refine.Refinement("flip" if i else "none", post))
        paths.append(path)
    return paths


def test_the_ensemble_file_round_trips_without_custom_objects(tmp_path, images):
    paths = _saved_members(tmp_path)
    model, chosen = ensemble.ensemble_files(paths, tmp_path / "e.keras")
    assert chosen == refine.Refinement("none", "largest")  # TTA is inside; post-processing shared
    loaded = keras.saving.load_model(tmp_path / "e.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    assert refine.load_refinement(tmp_path / "e.keras") == chosen
    (tmp_path / "b").mkdir()
    _, unshared = ensemble.ensemble_files(_saved_members(tmp_path / "b", ("largest", "fill")), tmp_path / "f.keras")
    assert unshared.postprocess == "none"


def test_the_ensemble_command_chooses_post_processing_on_a_validation_set(tmp_path, capsys):
    from tests.data_utils import write_synthetic_folder

    paths = _saved_members(tmp_path)
    val = write_synthetic_folder(tmp_path / "val", n=6, seed=3, image_size=32)
    assert (
        main(
            [
                "ensemble",
                "--model",
                *map(str, paths),
                "--output",
                str(tmp_path / "e.keras"),
                "--val",
                str(val),
                "--eval-size",
                "32",
            ]
        )
        == 0
    )
    assert f"chosen on {val}" in capsys.readouterr().out
    assert main(["ensemble", "--model", str(tmp_path / "missing.keras"), "--output", str(tmp_path / "x.keras")]) == 2
    assert "missing.keras" in capsys.readouterr().err


@pytest.mark.slow
def test_the_ensemble_predicts_the_same_under_another_backend(tmp_path, images):
    cycle = ["tensorflow", "jax", "torch"]
    others = [b for b in cycle if b != keras.backend.backend() and importlib.util.find_spec(b)]
    if not others:
        pytest.skip("no other Keras backend is installed")
    model, _ = ensemble.ensemble_files(_saved_members(tmp_path), tmp_path / "e.keras")
    np.save(tmp_path / "x.npy", images)
    code = (
        "import kseg.models, keras, numpy as np; m = keras.saving.load_model(r'%s'); "
        "np.save(r'%s', m.predict(np.load(r'%s'), verbose=0))"
        % (tmp_path / "e.keras", tmp_path / "y.npy", tmp_path / "x.npy")
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "KERAS_BACKEND": others[0]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(images, verbose=0), atol=1e-4)
