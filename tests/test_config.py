"""RunConfig: presets, the config hash and group hash (a run's identity), and what ``auto`` resolves
to for precision and jit on each kind of machine (monkeypatched, so it holds on any machine)."""

import dataclasses

import keras
import pytest

import kseg
from kseg.experiment import config as kconfig
from kseg.experiment.config import PRESETS, RunConfig, resolve_jit_compile, resolve_precision
from tests.data_utils import write_synthetic_folder


def test_presets_fill_every_field_and_flags_override():
    config = RunConfig.from_preset("paper", model="unet", loss="bce", epochs=3, lr=None)
    assert (config.image_size, config.base_filters, config.epochs, config.lr) == (256, 64, 3, 1e-4)
    assert config.preset == "paper"


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="smoke, cpu, dermoscopy, paper"):
        RunConfig.from_preset("gpu", model="unet", loss="bce")


def test_hash_changes_with_any_field_and_is_stable():
    a = RunConfig.from_preset("cpu", model="unet", loss="bce", seed=0)
    assert a.config_hash == RunConfig.from_preset("cpu", model="unet", loss="bce", seed=0).config_hash
    for change in ({"seed": 1}, {"loss": "dice"}, {"lr": 2e-3}, {"precision": "float32"}, {"dataset": "ph2"}):
        b = RunConfig.from_preset("cpu", **{"model": "unet", "loss": "bce", "seed": 0, **change})
        assert b.config_hash != a.config_hash, change
    assert len(a.config_hash) == 12 and a.run_id == f"unet-bce-seed0-{a.config_hash}"


# Every recipe knob, with two values (the test takes the one that differs from the preset's, so
# it holds whatever the preset says): each decides what a run computes.
RECIPE_CHANGES = {
    "schedule": ("cosine", "plateau"),
    "warmup_epochs": (2, 0),
    "weight_decay": (1e-4, 0.0),
    "ema": (0.99, 0.0),
    "augment": ("flips", "full"),
    "illuminant": (0.2, 0.0),
    "colour_constancy": (True, False),
    "val_every": (2, 1),
    "refine": ("auto", "none"),
    "batch_size": (4, 8),
    "lr": (3e-4, 1e-3),
    "image_size": (64, 128),
    "base_filters": (8, 16),
    "epochs": (3, 40),
    "batch_norm": ("fast", "keras"),
    "min_scale": (0.5, 0.9),
}


@pytest.mark.parametrize("field, values", RECIPE_CHANGES.items(), ids=list(RECIPE_CHANGES))
def test_every_recipe_knob_changes_the_hash_and_the_group(field, values):
    base = RunConfig.from_preset("cpu", model="unet", loss="bce")
    value = values[0] if getattr(base, field) != values[0] else values[1]
    changed = base.replace(**{field: value})
    assert getattr(changed, field) != getattr(base, field)
    assert changed.config_hash != base.config_hash
    assert changed.group_hash != base.group_hash


def test_a_knob_at_its_neutral_value_leaves_the_identity_as_before_it_existed():
    config = RunConfig.from_preset("cpu", model="unet", loss="bce")
    neutral = {field.name: field.default for field in dataclasses.fields(RunConfig)}
    for knob in kconfig.NEUTRAL_KNOBS:
        assert getattr(config, knob) == neutral[knob] and knob not in config.identity()
        assert knob in config.replace(**{knob: "imagenet" if knob == "encoder_weights" else 0.5}).identity()


def test_an_encoder_weights_file_enters_the_identity_by_content_not_path(tmp_path):
    first, second, other = tmp_path / "a.weights.h5", tmp_path / "b.weights.h5", tmp_path / "c.weights.h5"
    first.write_bytes(b"same"), second.write_bytes(b"same"), other.write_bytes(b"different")
    config = RunConfig.from_preset("cpu", model="fpn:mobilenetv2", loss="bce")
    hashes = [config.replace(encoder_weights=str(path)).config_hash for path in (first, second, other)]
    assert hashes[0] == hashes[1] != hashes[2] != config.config_hash
    assert config.replace(encoder_weights=str(first)).identity()["encoder_weights"].startswith("sha256:")
    assert "fpn_mobilenetv2-bce-seed0-" in config.run_id  # no ":" in a folder name


@pytest.mark.parametrize(
    "change",
    [
        {"mask_suffix": "_segmentation"},
        {"split_sizes": (60, 20, 20)},
        {"split_sizes": (0.6, 0.2, 0.2)},
        {"data_fingerprint": "0123abcd-4567ef89"},
        {"jit_compile": True},
        {"precision": "mixed_bfloat16"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_what_decides_a_result_changes_the_hash(change):
    base = RunConfig.from_preset("cpu", model="unet", loss="bce", jit_compile=False, precision="float32")
    changed = base.replace(**change)
    assert changed.config_hash != base.config_hash and changed.group_hash != base.group_hash


def test_kseg_version_backend_and_device_are_part_of_the_hash(monkeypatch):
    config = RunConfig.from_preset("cpu", model="unet", loss="bce")
    before = config.config_hash, config.group_hash
    assert config.identity()["kseg_version"] == kseg.__version__
    assert config.identity()["backend"] == keras.backend.backend()
    monkeypatch.setattr(kconfig, "KSEG_VERSION", "9.9.9")
    assert config.identity()["kseg_version"] == "9.9.9"
    after_version = config.config_hash, config.group_hash
    assert after_version[0] != before[0] and after_version[1] != before[1]
    monkeypatch.setattr(kconfig.device, "device_description", lambda: "gpu")
    assert config.config_hash not in (before[0], after_version[0])


def test_list_and_tuple_split_sizes_are_one_split():
    a = RunConfig.from_preset("cpu", model="unet", loss="bce", split_sizes=[100, 50, 50])
    assert a.config_hash == RunConfig.from_preset("cpu", model="unet", loss="bce").config_hash


def test_split_seed_defaults_to_the_seed():
    assert RunConfig.from_preset("cpu", model="unet", loss="bce", seed=3).split_seed == 3
    assert RunConfig.from_preset("cpu", model="unet", loss="bce", seed=3, split_seed=5).split_seed == 5


def test_group_hash_ignores_the_seeds_and_nothing_else():
    def config(**seeds):
        return RunConfig.from_preset("cpu", model="unet", loss="bce", **seeds)

    base = config(seed=0)
    # Splits that follow the seed: one group over seeds.
    for seeds in ({"seed": 1}, {"seed": 2, "split_seed": 2}):
        other = config(**seeds)
        assert other.group_hash == base.group_hash, seeds
        assert other.config_hash != base.config_hash, seeds
    # One fixed split for every seed (--split-seed): a group of its own, over the seeds.
    fixed = config(seed=0, split_seed=7)
    assert fixed.group_hash != base.group_hash
    assert config(seed=1, split_seed=7).group_hash == fixed.group_hash
    assert config(seed=1, split_seed=8).group_hash != fixed.group_hash
    for change in ({"loss": "dice"}, {"model": "segnet"}, {"epochs": 3}, {"dataset": "ph2"}, {"preset": "paper"}):
        assert base.replace(**change).group_hash != base.group_hash, change


@pytest.mark.parametrize(
    "field, value",
    [
        ("schedule", "linear"),
        ("augment", "rotate"),
        ("refine", "always"),
        ("ema", 1.0),
        ("val_every", 0),
        ("batch_norm", "fused"),
        ("min_scale", 0.0),
    ],
)
def test_bad_recipe_values_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        RunConfig.from_preset("cpu", model="unet", loss="bce", **{field: value})


# (backend, on a GPU, CPU has bf16) -> (precision "auto", jit "auto")
MACHINES = [
    ("tensorflow", True, False, "mixed_bfloat16", True),
    ("jax", True, False, "mixed_bfloat16", True),
    ("torch", True, False, "mixed_bfloat16", False),
    ("tensorflow", False, True, "mixed_bfloat16", False),
    ("torch", False, True, "mixed_bfloat16", False),
    ("jax", False, True, "float32", True),  # XLA's CPU bf16 gains nothing over float32
    ("tensorflow", False, False, "float32", True),  # XLA trains float32 1.3-1.6x faster than TF's kernels
    ("jax", False, False, "float32", True),
    ("torch", False, False, "float32", False),
]


@pytest.mark.parametrize("backend, gpu, bf16, precision, jit", MACHINES)
def test_auto_precision_and_jit_per_machine(monkeypatch, backend, gpu, bf16, precision, jit):
    monkeypatch.setattr(kconfig.device, "on_gpu", lambda: gpu)
    monkeypatch.setattr(kconfig.device, "cpu_has_bf16", lambda: bf16)
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    assert resolve_precision("auto") == precision
    assert resolve_jit_compile("auto") is jit
    assert resolve_precision("float32") == "float32" and resolve_precision("mixed_float16") == "mixed_float16"
    assert resolve_jit_compile("false") is False and resolve_jit_compile(True) is True
    assert kconfig.device.device_description() == "gpu" if gpu else "cores)" in kconfig.device.device_description()


def test_bad_precision_and_jit_values():
    with pytest.raises(
        ValueError, match=r"Unknown precision 'fp8'. Expected one of: auto, float32, .*Received: precision='fp8'"
    ):
        resolve_precision("fp8")
    with pytest.raises(ValueError, match=r"`jit_compile` must be auto, true or false. Received: jit_compile='maybe'"):
        resolve_jit_compile("maybe")


def test_on_gpu_reads_the_backends_devices(monkeypatch):
    monkeypatch.setattr(keras.distribution, "list_devices", lambda: ["cpu:0", "cuda:0"])
    assert kconfig.device.on_gpu() is True
    monkeypatch.setattr(keras.distribution, "list_devices", lambda: ["CPU:0"])
    assert kconfig.device.on_gpu() is False


def test_smoke_preset_is_small():
    assert PRESETS["smoke"]["epochs"] <= 2 and PRESETS["smoke"]["image_size"] <= 32


# ----- the data's identity: a folder's content, not its path ------------------------------------


def test_folder_content_decides_the_hash(tmp_path, monkeypatch):
    from kseg.experiment.run import resolve_config
    from kseg.experiment.sources import DataCache

    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path / "cache"))
    first = write_synthetic_folder(tmp_path / "first", seed=0)
    second = write_synthetic_folder(tmp_path / "second", seed=1)
    copy = write_synthetic_folder(tmp_path / "copy_of_first", seed=0)
    config = RunConfig.from_preset("smoke", model="unet", loss="bce", dataset="folder")
    resolved = {
        name: resolve_config(config, DataCache("folder", path))
        for name, path in (("first", first), ("second", second), ("copy", copy))
    }
    assert resolved["first"].data_fingerprint and resolved["first"].dataset == "folder"
    assert resolved["first"].config_hash != resolved["second"].config_hash
    assert resolved["first"].group_hash != resolved["second"].group_hash
    # The same files elsewhere are the same experiment.
    assert resolved["first"].config_hash == resolved["copy"].config_hash
    # Both sizes (training and evaluation) are fingerprinted.
    assert resolved["first"].data_fingerprint.count("-") == 1


def test_resolve_config_fills_in_auto(tmp_path, monkeypatch):
    from kseg.experiment.run import resolve_config
    from kseg.experiment.sources import DataCache

    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KSEG_PH2_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))  # no PH2 there: auto is synthetic
    data = DataCache("auto", None)
    config = RunConfig.from_preset("smoke", model="unet", loss="bce")
    with pytest.warns(UserWarning):
        resolved = resolve_config(config, data)
    assert resolved.dataset == "synthetic" and data.kind == "synthetic"
    assert resolved.precision == resolve_precision("auto") and resolved.jit_compile is resolve_jit_compile("auto")
    # jit "auto" and the value it resolves to are one experiment; the other value is another.
    explicit = resolve_config(config.replace(jit_compile=resolve_jit_compile("auto")), data)
    assert explicit.config_hash == resolved.config_hash
    other = resolve_config(config.replace(jit_compile=not resolve_jit_compile("auto")), data)
    assert other.config_hash != resolved.config_hash


# One example per flag knob, (the flag's text, the field's value), each unlike the cpu preset's:
# a knob added to RunConfig without its line here fails the test below.
FLAG_EXAMPLES = {
    "mask_suffix": ("_segmentation", "_segmentation"),
    "image_size": ("64", 64),
    "base_filters": ("8", 8),
    "epochs": ("3", 3),
    "schedule": ("constant", "constant"),
    "warmup_epochs": ("1", 1),
    "lr": ("3e-4", 3e-4),
    "batch_size": ("4", 4),
    "weight_decay": ("1e-4", 1e-4),
    "ema": ("0.99", 0.99),
    "augment": ("flips", "flips"),
    "illuminant": ("0.2", 0.2),
    "min_scale": ("0.5", 0.5),
    "colour_constancy": (None, True),
    "precise_bn": (None, True),
    "deep_supervision": (None, True),
    "refine": ("none", "none"),
    "val_every": ("3", 3),
    "batch_norm": ("keras", "keras"),
    "init_from": ("runs/source", "runs/source"),
    "encoder_weights": ("imagenet", "imagenet"),
    "freeze_encoder_epochs": ("2", 2),
    "encoder_lr_factor": ("0.1", 0.1),
    "split_sizes": ("60,20,20", (60, 20, 20)),
    "pretrain_epochs": ("16", 16),
    "joint_ratio": ("0.5", 0.5),
}


@pytest.mark.parametrize("name", list(kconfig.flag_knobs()))
def test_each_knob_declared_once_gives_its_flag_column_hash_and_label(name):
    import argparse

    from kseg import cli
    from kseg.experiment import leaderboard, run

    knob = kconfig.flag_knobs()[name]
    text, value = FLAG_EXAMPLES[name]
    args = cli.add_grid_arguments(argparse.ArgumentParser()).parse_args([knob.flag] + ([text] if text else []))
    fixed = dict(model="fpn:mobilenetv2", loss="bce", init_source="x:1")
    base = RunConfig.from_preset("cpu", **fixed)
    config = RunConfig.from_preset("cpu", **fixed, **{name: getattr(args, name)})
    assert getattr(config, name) == value != getattr(base, name)
    assert (name in leaderboard.COLUMNS) == knob.row == (name in run.base_row(config))
    assert (config.config_hash != base.config_hash) == knob.identity
    if knob.label(value):
        assert knob.label(value) in leaderboard.recipe(run.base_row(config)).split()
        assert knob.label(value) not in leaderboard.recipe(run.base_row(base)).split()


def test_the_batch_norm_knob_names_the_library_s_batch_norms():
    """config.py writes the names so that the grid's flags build without Keras; they stay the library's."""
    from kseg.batch_norm import BATCH_NORMALIZATIONS

    assert kconfig.BATCH_NORMS == tuple(BATCH_NORMALIZATIONS)
