import keras
import pytest

from kseg.config import PRESETS, RunConfig, resolve_jit_compile, resolve_precision


def test_presets_fill_every_field_and_flags_override():
    config = RunConfig.from_preset("paper", model="unet", loss="bce", epochs=3, lr=None)
    assert (config.image_size, config.base_filters, config.epochs, config.lr) == (256, 64, 3, 1e-4)
    assert config.preset == "paper"


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="smoke, cpu, paper"):
        RunConfig.from_preset("gpu", model="unet", loss="bce")


def test_hash_changes_with_any_field_and_is_stable():
    a = RunConfig.from_preset("cpu", model="unet", loss="bce", seed=0)
    assert a.config_hash == RunConfig.from_preset("cpu", model="unet", loss="bce", seed=0).config_hash
    for change in ({"seed": 1}, {"loss": "dice"}, {"lr": 2e-3}, {"precision": "float32"}, {"dataset": "ph2"}):
        b = RunConfig.from_preset("cpu", **{"model": "unet", "loss": "bce", "seed": 0, **change})
        assert b.config_hash != a.config_hash, change
    assert len(a.config_hash) == 12 and a.run_id == f"unet-bce-seed0-{a.config_hash}"


def test_precision_and_jit_resolution():
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("auto") in ("float32", "mixed_bfloat16")
    if keras.backend.backend() == "jax":  # no GPU here: XLA's CPU bf16 gains nothing over float32
        assert resolve_precision("auto") == "float32"
    with pytest.raises(ValueError, match="Unknown precision 'fp8'"):
        resolve_precision("fp8")
    assert resolve_jit_compile("false") is False and resolve_jit_compile(True) is True
    assert resolve_jit_compile("auto") is (keras.backend.backend() == "jax")  # this machine has no GPU
    with pytest.raises(ValueError, match="jit_compile must be"):
        resolve_jit_compile("maybe")


def test_smoke_preset_is_small():
    assert PRESETS["smoke"]["epochs"] <= 2 and PRESETS["smoke"]["image_size"] <= 32
