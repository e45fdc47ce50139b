"""keras-hub backbones as encoders (``kseg/models/backbones/hub.py``): the levels are the
backbone's own ``pyramid_outputs``, the weights come from a local preset folder or weights file
(never a download here), and a missing keras-hub or a wrong preset is refused by name. Building,
training, saving and moving between backends are in test_model_family with every encoder; what
these check is keras-hub's and kseg's plumbing, the same on every backend (one pass: tests/conftest.py)."""

import sys

import keras
import numpy as np
import pytest

from kseg import models
from kseg.cli import run_grid_command
from kseg.models.backbones import hub
from tests.harness import needs_keras_hub

pytestmark = pytest.mark.backend_independent
SIZE = 64


def _backbone():
    import keras_hub

    spec = next(spec for spec in hub._BACKBONES if spec.name == "hub_resnet18")
    return keras_hub.models.ResNetBackbone(**spec.config, image_shape=(SIZE, SIZE, 3))


def _encoder_weights(model):
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.get_layer("hub_resnet18").weights}


@needs_keras_hub
def test_the_levels_are_the_backbones_pyramid_outputs():
    backbone = _backbone()
    encoder_model = models.build_encoder("unet:hub_resnet18", (SIZE, SIZE, 3))
    assert sorted(encoder_model.output) == sorted(backbone.pyramid_outputs) == ["P2", "P3", "P4", "P5"]
    for key, level in encoder_model.output.items():
        assert tuple(level.shape) == tuple(backbone.pyramid_outputs[key].shape), key


@needs_keras_hub
def test_a_local_preset_folder_gives_its_weights(tmp_path):
    backbone = _backbone()
    backbone.save_to_preset(str(tmp_path / "preset"))
    model = models.build("fpn:hub_resnet18", (SIZE, SIZE, 3), encoder_weights=str(tmp_path / "preset"))
    fresh = models.build("fpn:hub_resnet18", (SIZE, SIZE, 3))
    saved = {v.path: keras.ops.convert_to_numpy(v) for v in backbone.weights}
    loaded, random = _encoder_weights(model), _encoder_weights(fresh)
    kernel = next(path for path in saved if path.endswith("conv1_conv/kernel"))
    np.testing.assert_array_equal(loaded[kernel], saved[kernel])
    assert not np.array_equal(random[kernel], saved[kernel])
    assert len(loaded) == len(saved)


@needs_keras_hub
def test_a_weights_file_gives_its_weights(tmp_path):
    backbone = _backbone()
    backbone.save_weights(tmp_path / "resnet18.weights.h5")
    model = models.build("unet:hub_resnet18", (SIZE, SIZE, 3), encoder_weights=str(tmp_path / "resnet18.weights.h5"))
    loaded = _encoder_weights(model)
    for variable in backbone.weights:
        np.testing.assert_array_equal(loaded[variable.path], keras.ops.convert_to_numpy(variable))


@needs_keras_hub
def test_another_backbones_preset_or_depth_is_refused_by_name(tmp_path):
    import keras_hub

    densenet = keras_hub.models.DenseNetBackbone(stackwise_num_repeats=[1, 1, 1, 1], image_shape=(SIZE, SIZE, 3))
    densenet.save_to_preset(str(tmp_path / "densenet"))
    with pytest.raises(ValueError, match="hub_resnet18 encoder: .*DenseNetBackbone"):
        models.build("unet:hub_resnet18", (SIZE, SIZE, 3), encoder_weights=str(tmp_path / "densenet"))
    spec = hub._BACKBONES[0]
    deeper = keras_hub.models.ResNetBackbone(
        **{**spec.config, "stackwise_num_blocks": [3, 4, 6, 3]}, image_shape=(SIZE, SIZE, 3)
    )
    deeper.save_to_preset(str(tmp_path / "resnet34"))
    with pytest.raises(ValueError, match=r"another ResNetBackbone: \{'stackwise_num_blocks': \[3, 4, 6, 3\]\}"):
        models.build("unet:hub_resnet18", (SIZE, SIZE, 3), encoder_weights=str(tmp_path / "resnet34"))
    with pytest.raises(FileNotFoundError, match="a keras-hub preset folder or a .weights.h5 file"):
        models.build("unet:hub_resnet18", (SIZE, SIZE, 3), encoder_weights=str(tmp_path / "nowhere"))


@needs_keras_hub
def test_a_failed_imagenet_download_names_the_offline_route(monkeypatch):
    import keras_hub

    def no_network(*args, **kwargs):  # no download here: what kagglehub raises without a network
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.ResNetBackbone, "from_preset", no_network)
    with pytest.raises(RuntimeError) as error:
        models.build("unet:hub_resnet18", (SIZE, SIZE, 3), encoder_weights="imagenet")
    message = str(error.value)
    assert "ResNetBackbone.from_preset('resnet_18_imagenet')" in message and "www.kaggle.com" in message
    assert ".save_to_preset('FOLDER')" in message and "--encoder-weights FOLDER" in message


def test_without_keras_hub_the_grid_refuses_the_model_before_any_run(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import keras_hub raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        run_grid_command(["--preset", "smoke", "--dataset", "synthetic", "--quiet", "--models", "unet:hub_resnet18"])
    assert exit_info.value.code == 2
    assert 'error: --models unet:hub_resnet18: keras-hub encoders need keras-hub: pip install "kseg[hub]"' in (
        capsys.readouterr().err
    )
    with pytest.raises(ImportError, match=r"kseg\[hub\]"):
        models.build("unet:hub_resnet18", (SIZE, SIZE, 3))
