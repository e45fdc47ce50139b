"""Deep supervision (kseg.models.deep_supervision, kseg.losses.DeepSupervision): the heads of every
decoder that declares side outputs, the weighted loss against its definition, the metrics on the
final channel, the one-output model a run keeps, and a grid run end to end."""

import keras
import numpy as np
import pandas as pd
import pytest

from kseg import losses, metrics, models
from kseg.cli import run_grid_command
from kseg.experiment import leaderboard
from kseg.models import decoders, deep_supervision

SUPERVISED = [name for name, decoder in decoders.REGISTRY.items() if decoder.side_outputs is not None]
SIZE = 64
SMOKE = ["--preset", "smoke", "--dataset", "synthetic", "--quiet"]


def _model(name: str) -> keras.Model:
    return models.build(f"{name}:{decoders.get(name).test_encoder}", (SIZE, SIZE, 3), base_filters=8, depth=3)


def _images(n=2, seed=0):
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 3), dtype="float32")


def test_the_decoders_with_side_outputs_are_u_net_plus_plus_and_ege_unet():
    assert set(SUPERVISED) == {"unetpp", "egeunet"}


@pytest.mark.parametrize("name", SUPERVISED)
def test_each_side_output_gets_a_full_size_head_after_the_final_logits(name):
    model = _model(name)
    weights = deep_supervision.side_weights(model)
    trained = deep_supervision.training_model(model)
    assert trained.output.shape == (None, SIZE, SIZE, 1 + len(weights))
    stacked = keras.ops.convert_to_numpy(trained(_images(), training=False))
    final = keras.ops.convert_to_numpy(model(_images(), training=False))
    np.testing.assert_allclose(stacked[..., :1], final, atol=1e-5)  # channel 0: the model's own logits
    for mode, expected in (("final", stacked[..., :1]), ("mean", stacked.mean(axis=-1, keepdims=True))):
        kept = deep_supervision.inference_model(trained, mode, model.architecture)
        assert kept.output.shape == (None, SIZE, SIZE, 1) and kept.name == model.name
        np.testing.assert_allclose(keras.ops.convert_to_numpy(kept(_images(), training=False)), expected, atol=1e-5)


def test_the_declared_weights_are_the_papers():
    assert deep_supervision.side_weights(_model("egeunet")) == (0.1, 0.2, 0.3, 0.4, 0.5)  # stride 32 .. 2
    assert set(deep_supervision.side_weights(_model("unetpp"))) == {1.0}  # Zhou et al.: the mean of the heads


def test_a_decoder_without_side_outputs_is_refused_naming_those_with():
    with pytest.raises(ValueError, match="side outputs: unetpp, egeunet. Received: a model with the unet decoder"):
        deep_supervision.training_model(models.build("unet", (SIZE, SIZE, 3), base_filters=4, depth=2))


def test_the_loss_is_the_final_loss_plus_the_weighted_side_losses():
    rng = np.random.default_rng(0)
    y_true = (rng.random((2, 8, 8, 1)) > 0.5).astype("float32")
    y_pred = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    loss = losses.DeepSupervision("dice", weights=[0.25, 0.5])
    dice = losses.Dice()
    expected = sum(w * float(dice(y_true, y_pred[..., i : i + 1])) for i, w in enumerate([1.0, 0.25, 0.5]))
    assert float(loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)
    restored = losses.DeepSupervision.from_config(loss.get_config())
    assert float(restored(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="the final logits and 2 side outputs"):
        loss(y_true, y_pred[..., :2])


def test_iou_and_dice_read_the_final_channel():
    rng = np.random.default_rng(1)
    y_true = (rng.random((2, 8, 8, 1)) > 0.5).astype("float32")
    final = rng.normal(size=(2, 8, 8, 1)).astype("float32")
    stacked = np.concatenate([final, -final, final * 0], axis=-1)
    for metric in (metrics.IoU(), metrics.Dice()):
        np.testing.assert_allclose(metric.per_image(y_true, stacked), metric.per_image(y_true, final))


def test_a_deeply_supervised_grid_run_keeps_one_output_and_says_which(tmp_path):
    results = tmp_path / "lb.csv"
    args = [*SMOKE, "--models", "unetpp", "--losses", "bce", "--deep-supervision", "--results", str(results)]
    assert run_grid_command([*args, "--output", str(tmp_path / "runs")]) == 0
    row = pd.read_csv(results).iloc[0]
    assert row["status"] == "ok" and row["side_output"] in deep_supervision.MODES
    assert "ds" in leaderboard.recipe(row).split()
    saved = keras.saving.load_model(tmp_path / "runs" / row["run_id"] / "model.keras")
    assert saved.output.shape[-1] == 1 and saved.architecture == "unetpp:unet"


def test_the_grid_refuses_deep_supervision_of_a_decoder_without_side_outputs(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run_grid_command([*SMOKE, "--models", "unet", "--deep-supervision", "--results", str(tmp_path / "lb.csv")])
    assert stop.value.code == 2
    assert (
        "--deep-supervision, --models unet: Deep supervision needs a decoder with side outputs"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "lb.csv").exists()
