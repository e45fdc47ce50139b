"""Every encoder gives its pyramid levels at their strides; every encoder x decoder pair builds,
saves and loads without custom objects; one model of each encoder and of each decoder trains a
step and moves to another backend; pretrained weights come from a local file and never from a
download here. (Mirrors ``kseg/models/backbones`` and ``kseg/models/decoders``.)"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kseg import models
from kseg.models import backbones, decoders
from kseg.models.backbones import applications, hub
from kseg.models.base import ModelOptions
from tests.harness import BACKEND_INDEPENDENT_PASS, KERAS_HUB_MISSING, needs_keras_hub

ENCODERS = models.encoders()


def _installed(encoder: str) -> bool:
    return not (KERAS_HUB_MISSING and hub.is_hub_encoder(backbones.get(encoder)))


def _params(cases):
    """pytest params over encoders or (decoder, encoder) pairs, skipped (with why) where the encoder's
    optional package is missing."""
    return [
        pytest.param(*case, marks=[] if _installed(case[-1]) else [needs_keras_hub])
        for case in (c if isinstance(c, tuple) else (c,) for c in cases)
    ]


PAIRS = [(d, e) for d in models.available() for e in ENCODERS if decoders.get(d).pairs_with(e)]
# One model per encoder (under U-Net, which takes every encoder) and per decoder (on kseg's own
# U-Net encoder, the cheapest): what training and the move between backends exercise.
# Both from the registries: a new encoder or decoder trains and moves without a line here.
ONE_EACH = [("unet", e) for e in ENCODERS] + [
    (d, decoders.get(d).test_encoder) for d in models.available() if d != "unet"
]
# What differs between backends is kseg's own layers (unpooling, FastBN, the decoders) and how each
# source of encoders nests its graph: every pass trains and moves kseg's encoders and one encoder
# of each source (keras.applications' MobileNetV2, keras-hub's ResNet-18). The other applications
# (EfficientNetV2, ResNet50, DenseNet, ConvNeXt: more of the same Keras layers, 12-17 s a step
# under TensorFlow on a 2-core AVX2 EPYC) train in the backend-independent pass only, PyTorch's,
# where their eager steps cost 5-7 s.
FIRST_OF_EACH_SOURCE = (applications.ENCODERS[0].name, hub.ENCODERS[0].name)  # MobileNetV2, ResNet-18
PER_BACKEND = [(d, e) for d, e in ONE_EACH if not backbones.get(e).pretrained or e in FIRST_OF_EACH_SOURCE]
# JAX builds and first calls a keras.applications encoder op by op, and compiles its training
# step in ~50 s: a JAX process trains kseg's encoders only, and moves MobileNetV2 to TensorFlow.
KSEG_ONLY = [(d, e) for d, e in ONE_EACH if not backbones.get(e).pretrained]
JAX_LIGHT = KSEG_ONLY + [(d, e) for d, e in ONE_EACH if e == applications.ENCODERS[0].name]
TRAINED = {"jax": KSEG_ONLY, BACKEND_INDEPENDENT_PASS: ONE_EACH}.get(keras.backend.backend(), PER_BACKEND)
SIZE, DEPTH = 32, 3  # 32 px: the applications' stride 32; depth 3: P2 and a deeper level for FPN/DeepLab


def _build(decoder, encoder, **kwargs):
    return models.build(f"{decoder}:{encoder}", (SIZE, SIZE, 3), base_filters=4, depth=DEPTH, **kwargs)


def _flat_layers(model):
    """The layers, with a nested model's (a keras-hub backbone's) in its place."""
    nested = (_flat_layers(layer) if isinstance(layer, keras.Model) else [layer] for layer in model.layers)
    return [leaf for layers in nested for leaf in layers]


def _logits(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


def _images(n=2, seed=0):
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 3), dtype="float32")


@pytest.mark.backend_independent  # symbolic shapes
@pytest.mark.parametrize("encoder", _params(ENCODERS))
def test_each_level_has_its_stride(encoder):
    image = keras.Input((64, 64, 3))
    features = backbones.get(encoder).build(image, ModelOptions(base_filters=4, depth=DEPTH))
    assert features.levels == sorted(features.levels) and features.levels[-1] in (DEPTH, 5)
    for k in features.levels:
        assert tuple(features.level(k).shape[1:3]) == (64 // 2**k, 64 // 2**k), f"P{k}"
    assert (features.pooling_positions is not None) == (encoder == "segnet")


@pytest.mark.backend_independent  # the graph and the .keras file; ONE_EACH checks them per backend
@pytest.mark.parametrize("decoder, encoder", _params(PAIRS))
def test_every_pair_builds_saves_and_loads_without_custom_objects(decoder, encoder, tmp_path):
    model = _build(decoder, encoder)
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names)) and model.output.shape == (None, SIZE, SIZE, 1)
    assert model.name == models.canonical_name(decoder, encoder).replace(":", "_")
    images = _images()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [layer.name for layer in loaded.layers] == names
    # Called eagerly, not through predict: tracing a 400-layer graph twice would cost the test 10x.
    np.testing.assert_allclose(_logits(loaded, images), _logits(model, images), atol=1e-5)


def test_every_backend_trains_a_step_of_every_decoder_and_of_kseg_s_encoders():
    trained = {"jax": KSEG_ONLY, BACKEND_INDEPENDENT_PASS: ONE_EACH}
    for backend in ("tensorflow", "jax", "torch"):
        pairs = trained.get(backend, PER_BACKEND)
        assert {d for d, _ in pairs} == set(models.available()), backend
        assert {e for _, e in pairs} >= {e for e in ENCODERS if not backbones.get(e).pretrained}, backend
    assert {e for _, e in ONE_EACH} == set(ENCODERS)


@pytest.mark.backend_independent  # names are the graph's
@pytest.mark.parametrize("decoder, encoder", _params(ONE_EACH))
def test_the_same_model_built_twice_in_one_session_has_the_same_layer_names(decoder, encoder):
    """No layer name carries Keras's session counters ("re_lu_14" in a second build): weights
    match by name (--init-from) and encoder tables name layers."""
    first, second = (_build(decoder, encoder) for _ in range(2))
    names = [layer.name for layer in _flat_layers(first)]
    assert names == [layer.name for layer in _flat_layers(second)]
    assert [op.name for op in first.operations] == [op.name for op in second.operations]


@pytest.mark.parametrize("decoder, encoder", _params(TRAINED))
def test_one_training_step_is_finite_moves_the_weights_and_saves(decoder, encoder, tmp_path):
    keras.utils.set_random_seed(0)
    model = _build(decoder, encoder, batch_norm="fast")
    # Eager where that is cheap: tracing a 200-layer encoder's train step costs TensorFlow more than
    # the step; JAX, which compiles every op of an eager step on its own, compiles the step once.
    eager = keras.backend.backend() != "jax"
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", run_eagerly=eager)
    before = [w.copy() for w in model.get_weights()]
    masks = (_images(seed=1)[..., :1] > 0.5).astype("float32")
    loss = model.train_on_batch(_images(), masks)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    model.save(tmp_path / "trained.keras")
    loaded = keras.saving.load_model(tmp_path / "trained.keras")
    np.testing.assert_allclose(_logits(loaded, _images()), _logits(model, _images()), atol=1e-5)


_LOAD_ELSEWHERE = """
import json, sys
import keras, numpy as np
import kseg.models  # noqa: F401  (registers kseg's layers and model class)
cases = json.loads(sys.argv[1])
worst = {}
for case in cases:
    model = keras.saving.load_model(case["model"])
    images = np.load(case["images"])
    if keras.backend.backend() == "jax":  # eager JAX compiles op by op (MobileNetV2 10 s); predict once (1 s)
        got = model.predict(images, verbose=0)
    else:  # eager: no trace
        got = keras.ops.convert_to_numpy(model(images, training=False))
    expected = np.load(case["expected"])
    worst[case["name"]] = float(np.max(np.abs(got - expected)) / (1.0 + np.max(np.abs(expected))))
print("RESULT " + json.dumps(worst))
"""


def test_one_model_of_each_encoder_and_decoder_loads_under_another_backend(tmp_path):
    here = keras.backend.backend()
    other = {"tensorflow": "torch", "torch": "jax", "jax": "tensorflow"}[here]
    # Each pass moves its models one step round the cycle; MobileNetV2 takes TensorFlow -> PyTorch
    # and JAX -> TensorFlow, and PyTorch -> JAX (each model compiled there) moves kseg's own.
    moved = {"tensorflow": PER_BACKEND, "jax": JAX_LIGHT, "torch": KSEG_ONLY}[here]
    moved = [(d, e) for d, e in moved if _installed(e)]
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[other]
    if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode:
        pytest.skip(f"backend {other} is not installed")
    images = tmp_path / "images.npy"
    np.save(images, _images())
    cases = []
    for decoder, encoder in moved:
        model = _build(decoder, encoder)
        name = f"{decoder}_{encoder}"
        np.save(tmp_path / f"{name}.npy", _logits(model, np.load(images)))
        model.save(tmp_path / f"{name}.keras")
        cases.append(
            dict(
                name=name,
                model=str(tmp_path / f"{name}.keras"),
                images=str(images),
                expected=str(tmp_path / f"{name}.npy"),
            )
        )
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_ELSEWHERE, json.dumps(cases)],
        env={**os.environ, "KERAS_BACKEND": other},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    worst = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert set(worst) == {f"{d}_{e}" for d, e in moved}
    assert max(worst.values()) < 1e-4, worst


@pytest.mark.backend_independent
@pytest.mark.parametrize("encoder", _params(e for e in ENCODERS if backbones.get(e).pretrained))
def test_application_encoders_take_kseg_batch_norm_momentum(encoder):
    # 0.99 / 0.999 (the applications' own) left a from-scratch cpu run predicting nothing on validation.
    model = models.build(f"unet:{encoder}", (SIZE, SIZE, 3), base_filters=4, bn_momentum=0.8)
    norms = [layer for layer in _flat_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.momentum == 0.8 for layer in norms) and (norms or encoder == "convnexttiny")


def test_encoder_weights_from_a_local_file(tmp_path):
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    path = tmp_path / "mobilenetv2.weights.h5"
    reference.save_weights(path)
    model = _build("fpn", "mobilenetv2", encoder_weights=str(path))
    np.testing.assert_array_equal(
        model.get_layer("Conv1").get_weights()[0], reference.get_layer("Conv1").get_weights()[0]
    )
    fresh = _build("fpn", "mobilenetv2")
    assert not np.array_equal(fresh.get_layer("Conv1").get_weights()[0], reference.get_layer("Conv1").get_weights()[0])


def test_encoder_weights_refusals_name_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Received: encoder_weights='.*nowhere.h5' \(no such file\)"):
        _build("unet", "mobilenetv2", encoder_weights=str(tmp_path / "nowhere.h5"))
    with pytest.raises(ValueError, match="the unet encoder starts from random weights"):
        _build("unet", "unet", encoder_weights="imagenet")


def test_which_encoders_load_published_weights_is_declared_not_read_off_their_label():
    from kseg.models.backbones import applications, convolutional, hub

    assert {e.weights_from for e in applications.ENCODERS} == {"keras.applications"}
    assert all(hub.is_hub_encoder(e) and e.pretrained for e in hub.ENCODERS)
    own = [*convolutional.ENCODERS, *(backbones.get(name) for name in ("egeunet", "malunet", "unext"))]
    assert not any(e.pretrained or hub.is_hub_encoder(e) for e in own)


def test_a_failed_imagenet_download_names_the_offline_route(monkeypatch, tmp_path):
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):  # what get_file raises without a network, and no download here
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: [Errno -3]")

    monkeypatch.setattr(file_utils, "get_file", no_network)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(RuntimeError) as error:
        _build("unet", "mobilenetv2", encoder_weights="imagenet")
    message = str(error.value)
    assert "keras.applications.MobileNetV2(include_top=False, weights='imagenet')" in message
    assert f"{tmp_path}/models" in message and "--encoder-weights PATH" in message and "URL fetch failure" in message


@pytest.mark.parametrize(
    "name, message",
    [
        ("fpn:resnet5", "Unknown encoder 'resnet5'. Expected one of: segnet, unet, unet2, mobilenetv2"),
        ("hrnet", "Unknown decoder 'hrnet'. Expected one of: segnet, unet, unet2, fpn, deeplabv3plus"),
        ("segnet:unet", "pairs only with the 'segnet' encoder"),
    ],
)
def test_unknown_or_incompatible_names_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        models.build(name, (SIZE, SIZE, 3), base_filters=4, depth=DEPTH)


def test_application_encoders_need_the_stride_32_and_say_so():
    with pytest.raises(ValueError, match=r"divisible by 32 \(the resnet50 encoder's total stride\), e.g. 32"):
        models.build("fpn:resnet50", (48, 48, 3))
    assert models.total_stride("fpn:resnet50") == 32 and models.total_stride("unet", depth=3) == 8


def test_canonical_names():
    assert models.canonical_name("unet:unet") == "unet" == models.canonical_name("UNET")
    assert (
        models.canonical_name("fpn") == "fpn:resnet50"
        and models.canonical_name("unet", "mobilenetv2") == "unet:mobilenetv2"
    )
