"""Starting from another model's weights: --init-from loads exactly the source's matching weights,
counts what it loaded, refuses a useless source before any run, enters the run's identity, and
--pretrain-on pretrains once per architecture and never scores on the sets it pretrained on."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pandas as pd
import pytest

from kseg import models
from kseg.cli import run_grid_command
from kseg.experiment import grid, leaderboard, training, transfer
from kseg.experiment.config import RunConfig
from kseg.experiment.run import resolve_config
from kseg.experiment.sources import DataCache
from tests.data_utils import write_synthetic_folder

SMOKE = ["--preset", "smoke", "--dataset", "synthetic", "--quiet"]
SHAPE = (32, 32, 3)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KSEG_PH2_DIR", raising=False)


def _saved_source(tmp_path, name: str = "unet", seed: int = 1, **kwargs) -> tuple[keras.Model, str]:
    """A model with non-default weights (BatchNorm statistics too), saved as a run folder would
    hold it."""
    keras.utils.set_random_seed(seed)
    model = models.build(name, input_shape=SHAPE, base_filters=4, depth=2, **kwargs)
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    run_dir = tmp_path / f"source-{name}"
    run_dir.mkdir()
    model.save(run_dir / "model.keras")
    return model, str(run_dir)


@pytest.mark.parametrize("name", models.SEED_MODELS)
def test_init_from_loads_exactly_the_source_weights(tmp_path, name):
    source, run_dir = _saved_source(tmp_path, name)
    keras.utils.set_random_seed(7)  # another initialisation than the source's
    model = models.build(name, input_shape=SHAPE, base_filters=4, depth=2)
    images = np.random.default_rng(0).random((3, *SHAPE), dtype=np.float32)
    assert not np.allclose(model.predict(images, verbose=0), source.predict(images, verbose=0))

    report = transfer.load_matching_weights(model, run_dir)
    assert report.fresh == 0 and report.unmatched_layers == ()
    assert report.loaded == len(model.weights) == len(source.weights)
    np.testing.assert_array_equal(model.predict(images, verbose=0), source.predict(images, verbose=0))


def test_init_from_in_fit_starts_from_the_source(tmp_path):
    """Through RunConfig and fit: the row's counts, and zero epochs' worth of change would leave the
    source's predictions (checked on the model fit builds, before its first step)."""
    source, run_dir = _saved_source(tmp_path)
    config = RunConfig.from_preset("smoke", model="unet", loss="bce", init_from=run_dir, init_source="src:1")
    model = training.build_architecture(config, "float32")
    report = transfer.load_matching_weights(model, config.init_from)
    images = np.random.default_rng(1).random((2, *SHAPE), dtype=np.float32)
    np.testing.assert_array_equal(model.predict(images, verbose=0), source.predict(images, verbose=0))
    assert training.check_init(config) == report


def test_a_partial_match_counts_what_it_loaded(tmp_path):
    source, run_dir = _saved_source(tmp_path, "unet")
    # U-Net-2 shares U-Net's encoder blocks (names and shapes); its strided/transposed convolutions
    # and the decoder blocks after them (other input widths) have no counterpart.
    model = models.build("unet2", input_shape=SHAPE, base_filters=4, depth=2)
    report = transfer.load_matching_weights(model, run_dir)
    assert report.loaded > 0 and report.fresh > 0
    assert report.loaded + report.fresh == len(model.weights)
    assert "enc0_down" in report.unmatched_layers and "enc0_block0_conv" not in report.unmatched_layers
    np.testing.assert_array_equal(
        model.get_layer("enc1_block1_conv").get_weights()[0], source.get_layer("enc1_block1_conv").get_weights()[0]
    )


def test_a_useless_source_fails_naming_the_file_and_the_layers(tmp_path):
    inputs = keras.Input((4,))
    other = keras.Model(inputs, keras.layers.Dense(2, name="head")(inputs))
    other.save(tmp_path / "other.keras")
    model = models.build("unet", input_shape=SHAPE, base_filters=4, depth=2)
    with pytest.raises(ValueError, match=r"other\.keras.*matches none \(first unmatched layers: enc0_block0_conv"):
        transfer.load_matching_weights(model, tmp_path / "other.keras")

    (tmp_path / "broken.keras").write_text("not a zip")
    with pytest.raises(ValueError, match=r"broken\.keras, which is not a Keras archive"):
        transfer.load_matching_weights(model, tmp_path / "broken.keras")
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as archive:  # a zip, but no model inside
        archive.writestr("notes.txt", "nothing")
    with pytest.raises(ValueError, match=r"empty\.keras, which Keras cannot load"):
        transfer.load_matching_weights(model, tmp_path / "empty.keras")
    with pytest.raises(FileNotFoundError, match=r"Received: .*missing"):
        transfer.source_identity(tmp_path / "missing")


@pytest.mark.backend_independent
def test_the_init_changes_the_hash_and_the_path_does_not():
    plain = RunConfig(model="unet", loss="bce")
    a = plain.replace(init_from="runs/a", init_source="isic:0123456789ab")
    moved = plain.replace(init_from="/elsewhere/a/model.keras", init_source="isic:0123456789ab")
    b = plain.replace(init_from="runs/b", init_source="isic:ba9876543210")
    assert len({plain.config_hash, a.config_hash, b.config_hash}) == 3
    assert a.config_hash == moved.config_hash and a.group_hash == moved.group_hash
    # At its default the knob is not in the identity, so runs made before it keep their hashes.
    assert "init_source" not in plain.identity() and "init_from" not in a.identity()
    with pytest.raises(ValueError, match="init_source resolved"):
        plain.replace(init_from="runs/a").config_hash


def test_source_identity_is_the_run_hash_or_a_weights_digest(tmp_path):
    _, run_dir = _saved_source(tmp_path)
    digest = transfer.source_identity(run_dir)
    assert digest.startswith("model:") and len(digest.split(":")[1]) == 12
    (tmp_path / "source-unet" / "config.json").write_text(
        json.dumps({"config_hash": "00aa11bb22cc", "dataset": "isic"})
    )
    assert transfer.source_identity(run_dir) == "isic:00aa11bb22cc"
    config = resolve_config(
        RunConfig.from_preset("smoke", model="unet", loss="bce", init_from=run_dir), DataCache("synthetic", None)
    )
    assert config.init_source == "isic:00aa11bb22cc"


@pytest.mark.backend_independent
def test_the_grid_refuses_a_useless_source_before_any_run(tmp_path, capsys):
    (tmp_path / "broken.keras").write_text("not a zip")
    results = tmp_path / "lb.csv"
    code = run_grid_command(
        [
            *SMOKE,
            "--models",
            "unet",
            "--losses",
            "bce",
            "--init-from",
            str(tmp_path / "broken.keras"),
            "--results",
            str(results),
            "--output",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2 and not results.exists()
    assert "broken.keras" in capsys.readouterr().err


@pytest.mark.backend_independent
def test_init_from_a_grid_run_records_counts_in_the_row(tmp_path):
    results, runs = tmp_path / "lb.csv", tmp_path / "runs"
    common = ["--models", "unet", "--losses", "bce", "--results", str(results), "--output", str(runs)]
    assert run_grid_command([*SMOKE, *common]) == 0
    source = runs / pd.read_csv(results)["run_id"].item()
    # Seed 1's test split holds cases the seed-0 source trained on: refused before any run.
    assert run_grid_command([*SMOKE, *common, "--seeds", "1", "--init-from", str(source)]) == 2
    assert run_grid_command([*SMOKE, *common, "--losses", "dice", "--init-from", str(source)]) == 0
    row = leaderboard.read(results).iloc[-1]
    assert row["init_source"].startswith("synthetic:") and row["init_loaded"] > 0 and row["init_fresh"] == 0
    assert "init=synthetic" in leaderboard.recipe(row)


@pytest.mark.backend_independent
def test_pretraining_runs_once_per_architecture_also_when_resumed(tmp_path, capsys):
    source = write_synthetic_folder(tmp_path / "source", n=40, seed=1)
    results, runs = tmp_path / "lb.csv", tmp_path / "runs"
    common = [
        *SMOKE,
        "--models",
        "unet",
        "--pretrain-on",
        str(source),
        "--pretrain-epochs",
        "1",
        "--results",
        str(results),
        "--output",
        str(runs),
    ]
    assert run_grid_command([*common, "--losses", "bce"]) == 0
    assert run_grid_command([*common, "--losses", "bce", "dice"]) == 0  # resumed and extended
    table = leaderboard.read(results)
    pretrained = table[table["dataset"] == "source"]
    assert len(pretrained) == 1 and pretrained["loss"].item() == transfer.PRETRAIN_LOSS
    fine_tuned = table[table["dataset"] == "synthetic"]
    assert list(fine_tuned["loss"]) == ["bce", "dice"]
    assert set(fine_tuned["init_source"]) == {f"source:{pretrained['config_hash'].item()}"}
    assert "pretrained already" in capsys.readouterr().out


@pytest.mark.backend_independent
def test_pretraining_configs_share_one_run_per_architecture():
    data = DataCache("synthetic", None)
    configs = grid.expand(
        ["unet", "segnet"], ["bce", "dice"], [0, 1], "smoke", data, precision="float32", pretrain_epochs=3
    )
    source = DataCache("synthetic", "pretraining-set")
    source.resolve(32)
    pretraining, fine_tuned = grid.pretraining_configs(configs, source, "runs")
    assert [c.model for c in pretraining] == ["unet", "segnet"]
    assert all(c.loss == "bce" and c.seed == 0 and c.epochs == 3 for c in pretraining)
    assert len({c.config_hash for c in fine_tuned}) == len(configs)
    assert {c.init_source for c in fine_tuned} == {f"pretraining_set:{c.config_hash}" for c in pretraining}


@pytest.mark.backend_independent
def test_an_external_set_that_overlaps_the_pretraining_set_is_refused(tmp_path, capsys):
    source = write_synthetic_folder(tmp_path / "source", n=40, seed=1)
    results = tmp_path / "lb.csv"
    code = run_grid_command(
        [
            *SMOKE,
            "--models",
            "unet",
            "--losses",
            "bce",
            "--pretrain-on",
            str(source),
            "--external",
            str(source),
            "--results",
            str(results),
            "--output",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2 and not results.exists()
    err = capsys.readouterr().err
    assert f"--external {source} shares 40 case(s)" in err and "synthetic_1_0000" in err


# ----- joint sources (--joint-source): trained beside the data, split apart, scored apart -----


ONE_RUN = dict(model="unet", loss="bce", precision="float32")


def _joint_grid(tmp_path, *extra: str) -> list[str]:
    return [
        *SMOKE,
        "--models",
        "unet",
        "--losses",
        "bce",
        "--results",
        str(tmp_path / "lb.csv"),
        "--output",
        str(tmp_path / "runs"),
        *extra,
    ]


@pytest.mark.backend_independent
def test_each_joint_source_keeps_its_own_split_whatever_the_run_seed(tmp_path):
    folder = write_synthetic_folder(tmp_path / "isic", n=80, seed=3)
    data = DataCache("synthetic", None, joint=[(str(folder), "")])
    seed0, seed1 = (
        resolve_config(RunConfig.from_preset("smoke", **ONE_RUN, seed=s, joint_ratio=0.5), data) for s in (0, 1)
    )
    parts0, parts1 = data.joint_parts(seed0)["isic"][0], data.joint_parts(seed1)["isic"][0]
    assert parts0.ids() == parts1.ids()  # the run's seed moves the data's split, not the joint set's
    assert data.parts(seed0)[0].ids() != data.parts(seed1)[0].ids()
    train, val, test = (set(ids) for ids in parts0.ids().values())
    assert not (train & val or train & test or val & test) and len(train | val | test) == 80
    again = DataCache("synthetic", None, joint=[(str(folder), "")])  # a fresh process: the same parts
    assert again.joint_parts(seed0)["isic"][0].ids() == parts0.ids()
    # The same parts as a pretraining on that folder: its test part stays unseen by both.
    source = DataCache("folder", str(folder))
    pretraining, _ = grid.pretraining_configs([seed0], source, tmp_path / "runs")
    assert source.parts(pretraining[0])[0].ids() == parts0.ids()
    plain = resolve_config(RunConfig.from_preset("smoke", **ONE_RUN), DataCache("synthetic", None))
    assert seed0.joint_source.startswith("isic:") and seed0.config_hash != plain.config_hash


@pytest.mark.backend_independent
def test_a_joint_run_trains_on_both_and_scores_the_joint_test_part_apart(tmp_path):
    folder = write_synthetic_folder(tmp_path / "isic", n=80, seed=3)
    assert run_grid_command(_joint_grid(tmp_path, "--joint-source", str(folder), "--joint-ratio", "0.5")) == 0
    row = leaderboard.read(tmp_path / "lb.csv").iloc[-1]
    assert row["dataset"] == "synthetic" and row["joint_ratio"] == 0.5 and row["joint_source"].startswith("isic:")
    assert 0 <= row["test_iou_source_isic"] <= 1
    # Validation, where the kept epoch and the refinement were chosen, weighs both; each is shown.
    assert 0 <= row["val_iou_source_isic"] <= 1 and 0 <= row["val_iou_source_synthetic"] <= 1
    assert "mix0.5" in leaderboard.recipe(row) and "joint=isic" in leaderboard.recipe(row)
    split = json.loads((tmp_path / "runs" / row["run_id"] / "split.json").read_text())
    assert len(split["test"]) == 6 and len(split["joint"]["isic"]["test"]) == 2  # 80 * 2.5%
    per_image = leaderboard.read_per_image(tmp_path / "lb.csv")
    assert sorted(per_image.loc[per_image["set"] == "source_isic", "case_id"]) == sorted(split["joint"]["isic"]["test"])
    # A model trained on joint sources guards them too when it is the next run's --init-from.
    seen = transfer.source_case_ids(tmp_path / "runs" / row["run_id"])
    assert set(split["joint"]["isic"]["train"]) <= seen and not set(split["joint"]["isic"]["test"]) & seen


@pytest.mark.backend_independent
def test_a_joint_source_that_overlaps_a_scored_set_or_the_data_is_refused(tmp_path, capsys):
    folder = write_synthetic_folder(tmp_path / "isic", n=40, seed=3)
    joint = ["--joint-source", str(folder), "--joint-ratio", "0.5"]
    assert run_grid_command(_joint_grid(tmp_path, *joint, "--external", str(folder))) == 2
    assert f"--joint-source {folder} expects no case in common" in capsys.readouterr().err
    # The data itself as a joint source: its test split would be trained on.
    data = ["--dataset", "folder", "--data-dir", str(folder), "--split", "20,10,10"]
    assert run_grid_command([*_joint_grid(tmp_path, *joint), *data]) == 2
    assert "the data these runs train and test on shares 40 case(s)" in capsys.readouterr().err
    assert not (tmp_path / "lb.csv").exists()


@pytest.mark.backend_independent
def test_a_joint_source_needs_a_ratio_and_a_ratio_needs_a_source(tmp_path, capsys, monkeypatch):
    folder = write_synthetic_folder(tmp_path / "isic", n=40, seed=3)
    assert run_grid_command(_joint_grid(tmp_path, "--joint-source", str(folder))) == 2
    assert "expects --joint-ratio R > 0" in capsys.readouterr().err
    assert run_grid_command(_joint_grid(tmp_path, "--joint-ratio", "0.5")) == 2
    assert "--joint-ratio 0.5 (preset smoke) expects --joint-source" in capsys.readouterr().err
    monkeypatch.delenv("KSEG_ISIC2018_TRAIN_DIR", raising=False)
    assert run_grid_command([*_joint_grid(tmp_path), "--preset", "dermoscopy"]) == 2
    assert "--preset dermoscopy trains beside ISIC 2018" in capsys.readouterr().err
