"""``python -m kseg export`` and ``predict --engine onnx|openvino`` (kseg.export): an exported model
predicts what the Keras model it came from predicts, for every network, under the active backend,
run by ONNX Runtime and by OpenVINO (in float32; its bfloat16 is a speed option).

CI runs this file under tensorflow, jax and torch; a (backend, format) pair that Keras cannot
export, or a missing exporter / runtime package, is skipped with the reason (``pytest -ra``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

import kseg
from kseg import export, refine
from kseg.cli import main
from kseg.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D
from kseg.models import backbones, decoders
from kseg.models.backbones.hub import is_hub_encoder
from kseg.predict import predict_mask_batch
from tests.harness import needs_keras_hub

SIZE = 32
NETWORKS = kseg.models.SEED_MODELS  # each the decoder on kseg's encoder of that name
BACKEND = keras.backend.backend()
TOLERANCE = 1e-4  # float32 logits


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path_factory.mktemp("kseg_cache")))


def _skip_unless_exportable(format: str) -> None:
    reason = export.unsupported_reason(format)
    if reason:
        pytest.skip(f"{format} under {BACKEND}: {reason}")
    if format == "saved_model" and importlib.util.find_spec("tensorflow") is None:
        pytest.skip("reloading a SavedModel needs tensorflow")


#: The engines that run an exported .onnx file, and the package each needs.
RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}


def _installed_runtimes() -> list[str]:
    """The exported-file engines whose runtime is installed here."""
    return [kind for kind, package in RUNTIMES.items() if importlib.util.find_spec(package)]


def _engine(kind: str, path: Path):
    """The exported file at ``path`` run by ``kind``, in float32 (skipped where its runtime is missing)."""
    if importlib.util.find_spec(RUNTIMES[kind]) is None:
        pytest.skip(f"the {kind} engine needs {RUNTIMES[kind]}: pip install 'kseg[{kind}]'")
    if kind == "onnx":
        return export.OnnxEngine(path, providers=["CPUExecutionProvider"])
    return export.OpenVinoEngine(path, precision="float32")


def _assert_same_logits(name: str, got: np.ndarray, expected: np.ndarray) -> None:
    """Logits equal within TOLERANCE; for SegNet, on all but 0.5% of the pixels.

    SegNet's pooling windows hold exact ties: conv -> ReLU -> BN maps every ReLU zero to the same
    value, and the first of equal values wins. A conv output that one runtime rounds to +1e-8 and
    another to 0 (a different summation order) moves that window's value to another position, and
    the next convolutions spread the move over a few pixels. OpenVINO did so once in 11 images
    of the JAX export (18 of 11264 logits off by up to 0.03, every other one within 2e-6).
    """
    off = np.abs(got - expected) > TOLERANCE
    if name == "segnet":
        assert off.mean() <= 0.005, f"{off.sum()} of {off.size} logits differ by more than {TOLERANCE}"
    else:
        np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


def _images(count: int, seed: int = 0, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    """Float32 NHWC images in [0, 1]: smooth blobs plus noise (no ties inside pooling windows)."""
    rng = np.random.default_rng(seed)
    low = rng.random((count, 5, 5, 3)).astype(np.float32)
    smooth = np.stack([cv2.resize(im, size[::-1], interpolation=cv2.INTER_CUBIC) for im in low])
    return np.clip(smooth + rng.normal(0, 0.05, smooth.shape), 0, 1).astype(np.float32)


def _randomise(model: keras.Model, seed: int) -> keras.Model:
    """Non-trivial batch-norm statistics (an untrained one is nearly the identity) and logits
    scaled away from 0 and centred so about half the pixels are foreground (masks compared
    exactly then cannot flip on a 1e-6 difference, and are not constant)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                    rng.normal(0, 0.1, beta.shape).astype(np.float32),
                    rng.normal(0, 0.1, mean.shape).astype(np.float32),
                    rng.uniform(0.5, 2.0, variance.shape).astype(np.float32),
                ]
            )
    last = model.layers[-1]
    kernel, bias = last.get_weights()
    last.set_weights([kernel * 20.0, bias * 20.0])
    median = float(np.median(keras.ops.convert_to_numpy(model(_images(4, seed=99), training=False))))
    last.set_weights([kernel * 20.0, bias * 20.0 - median])
    return model


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """``saved_model(name)``: (name, path of its .keras saved under the active backend with a
    refinement, the model reloaded from it), built once per module."""
    cache: dict[str, tuple[str, Path, keras.Model]] = {}

    def get(name: str) -> tuple[str, Path, keras.Model]:
        if name not in cache:
            keras.utils.set_random_seed(0)
            model = _randomise(kseg.models.build(name, input_shape=(SIZE, SIZE, 3), base_filters=4, depth=2), seed=1)
            path = tmp_path_factory.mktemp(name) / "model.keras"
            refine.save_with_refinement(model, path, refine.Refinement(tta="flip", postprocess="fill"))
            cache[name] = (name, path, keras.saving.load_model(path, compile=False))
        return cache[name]

    return get


@pytest.fixture(params=NETWORKS)
def saved(request, saved_model) -> tuple[str, Path, keras.Model]:
    return saved_model(request.param)


def test_segnet_has_the_pooling_position_layers(saved_model):
    kinds = {type(layer) for layer in saved_model("segnet")[2].layers}
    assert MaxPoolingWithArgmax2D in kinds and MaxUnpooling2D in kinds


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_onnx_export_predicts_what_keras_predicts(saved, runtime, tmp_path):
    _skip_unless_exportable("onnx")
    name, _, model = saved
    path = export.export_model(model, tmp_path / f"{name}.onnx", "onnx")
    engine = _engine(runtime, path)
    assert engine.input_shape[1:] == (SIZE, SIZE, 3)
    if BACKEND == "jax":
        assert engine.fixed_batch == export.JAX_ONNX_BATCH
    x = _images(11, seed=2)  # 11: not a multiple of the batch, so a fixed-batch export pads
    expected = keras.ops.convert_to_numpy(model.predict(x, batch_size=4, verbose=0))
    got = engine.predict(x, batch_size=4)
    assert got.shape == expected.shape == (11, SIZE, SIZE, 1) and got.dtype == np.float32
    _assert_same_logits(name, got, expected)
    assert 0.05 < np.mean(expected > 0) < 0.95, "the fixture's logits are (nearly) one-signed"


def _registered_models() -> list[str]:
    """Every encoder under the FPN decoder (kseg's own, but the seed networks' which NETWORKS
    exports, under U-Net, which pairs with them at any depth) and every decoder on kseg's U-Net
    encoder (SegNet's on its own): from the registries, so a new encoder or decoder is exported
    here without a line in this file."""
    by_encoder = [
        kseg.models.canonical_name("unet" if encoder.family == "kseg" else "fpn", name)
        for name, encoder in backbones.REGISTRY.items()
        if name not in NETWORKS
    ]
    by_decoder = [kseg.models.canonical_name(name, decoders.get(name).test_encoder) for name in kseg.models.available()]
    return [name for name in dict.fromkeys(by_encoder + by_decoder) if name not in NETWORKS]


# What a backend leaves to the others, and why: the other models of the registries run everywhere.
SKIPPED = {
    # ResNet50 is left to keras-hub's ResNet, the same operations (convolution, batch norm,
    # residual add, max pool) at a third of tf2onnx's conversion time (37 s here).
    "fpn:resnet50": "the same operations as fpn:hub_resnet18, which is exported",
    "fpn:convnexttiny": {
        "tensorflow": "tf2onnx converts neither ConvNeXt's exact GELU (Erfc) nor its grouped convolution",
        "torch": "torch.onnx cannot trace the shape arithmetic of keras.ops.layer_normalization",
    }.get(BACKEND),
}
if BACKEND == "tensorflow":  # DenseNet (22 s in tf2onnx): its convolution, batch norm, concatenation
    # and average pool are what the MobileNetV2 and ResNet exports convert; torch.onnx exports it.
    SKIPPED["fpn:densenet121"] = "22 s in tf2onnx for operations the other encoders' exports convert"
if BACKEND == "jax":  # jax2onnx takes 15-35 s a model here: one model per encoder family it alone exports
    SKIPPED.update(
        {
            name: "jax2onnx takes 15-35 s a model; torch and tensorflow export it"
            for name in ("fpn:efficientnetv2b0", "fpn:densenet121", "fpn:hub_resnet18", "fpn:mobilenetv2")
        }
    )


def _hub_marks(name: str) -> list:
    return [needs_keras_hub] if is_hub_encoder(kseg.models.resolve(name)[1]) else []


def _export_param(name: str):
    marks = _hub_marks(name)
    if SKIPPED.get(name):
        marks.append(pytest.mark.skip(reason=f"{name} under {BACKEND}: {SKIPPED[name]}"))
    return pytest.param(name, marks=marks)


@pytest.mark.parametrize("name", [_export_param(name) for name in _registered_models()])
def test_onnx_export_of_every_registered_encoder_and_decoder_predicts_what_keras_predicts(name, tmp_path):
    """Built under mixed_bfloat16, as a run trains it, so the export goes through ``as_float32``
    (MobileNetV3's bare ``x + 3.0`` ops once crashed it), and compared with that float32 twin."""
    _skip_unless_exportable("onnx")
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("needs onnxruntime: pip install 'kseg[onnx]'")
    keras.utils.set_random_seed(0)
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = kseg.models.build(name, (SIZE, SIZE, 3), base_filters=4, depth=3)
    finally:
        keras.config.set_dtype_policy(previous)
    twin = export.as_float32(model)
    path = export.export_model(model, tmp_path / "model.onnx", "onnx")
    x = _images(export.JAX_ONNX_BATCH if BACKEND == "jax" else 2, seed=4)
    expected = keras.ops.convert_to_numpy(twin(x, training=False))
    got = _engine("onnx", path).predict(x, batch_size=len(x))
    scale = 1.0 + np.abs(expected).max()  # random ResNet logits reach ~10
    np.testing.assert_allclose(got / scale, expected / scale, atol=TOLERANCE, rtol=0)


@pytest.mark.backend_independent  # Keras's graph cloning; the export above runs it per backend
@pytest.mark.parametrize("name", [pytest.param(name, marks=_hub_marks(name)) for name in _registered_models()])
def test_every_registered_model_has_a_float32_twin(name):
    """``as_float32`` copies every node of every registered model: layers get the float32
    policy, bare math ops (no dtype of their own) are copied as they are."""
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = kseg.models.build(name, (SIZE, SIZE, 3), base_filters=4, depth=3)
    finally:
        keras.config.set_dtype_policy(previous)
    twin = export.as_float32(model)
    assert {layer.dtype_policy.name for layer in twin._flatten_layers(include_self=False)} == {"float32"}
    assert [layer.name for layer in twin.layers] == [layer.name for layer in model.layers]
    for got, want in zip(twin.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_saved_model_export_predicts_what_keras_predicts(saved, tmp_path):
    _skip_unless_exportable("saved_model")
    import tensorflow as tf

    name, keras_path, model = saved
    path = export.export_model(
        model, tmp_path / f"{name}_saved_model", "saved_model", refine.load_refinement(keras_path)
    )
    x = _images(5, seed=3)
    expected = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
    reloaded = tf.saved_model.load(str(path))  # kept: its variables die with it
    got = reloaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
    assert export.load_saved_refinement(path) == refine.Refinement(tta="flip", postprocess="fill")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_fixed_batch_export_pads_the_last_batch(runtime, tmp_path):
    _skip_unless_exportable("onnx")
    keras.utils.set_random_seed(0)
    model = _randomise(kseg.models.unet(input_shape=(SIZE, SIZE, 3), base_filters=4, depth=2), seed=4)
    engine = _engine(runtime, export.export_model(model, tmp_path / "fixed.onnx", batch_size=3))
    assert engine.fixed_batch == 3
    x = _images(5, seed=5)
    np.testing.assert_allclose(
        engine.predict(x, batch_size=8), keras.ops.convert_to_numpy(model.predict(x, verbose=0)), atol=TOLERANCE, rtol=0
    )


def test_mixed_precision_model_exports_as_its_float32_twin(tmp_path):
    _skip_unless_exportable("onnx")
    keras.utils.set_random_seed(0)
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = kseg.models.unet(input_shape=(SIZE, SIZE, 3), base_filters=4, depth=2)
    finally:
        keras.config.set_dtype_policy(previous)
    twin = export.as_float32(model)
    assert twin is not model and {layer.dtype_policy.name for layer in twin.layers} == {"float32"}
    engine = export.OnnxEngine(export.export_model(model, tmp_path / "mixed.onnx"), providers=["CPUExecutionProvider"])
    x = _images(3, seed=6)
    np.testing.assert_allclose(
        engine.predict(x), keras.ops.convert_to_numpy(twin.predict(x, verbose=0)), atol=TOLERANCE, rtol=0
    )


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exported_engine_runs_the_same_pre_and_post_processing(saved, runtime, tmp_path):
    """predict_mask_batch with the refinement (flip TTA, hole filling) on images of odd sizes:
    the same logits (within tolerance) and the same masks from the Keras and the exported engine."""
    _skip_unless_exportable("onnx")
    name, path, model = saved
    onnx_path = export.export_model(model, tmp_path / f"{name}.onnx", refinement=refine.load_refinement(path))
    refinement = export.load_saved_refinement(onnx_path)
    assert refinement == refine.Refinement(tta="flip", postprocess="fill")
    engine = _engine(runtime, onnx_path)
    images = [
        (_images(1, seed=s, size=hw)[0] * 255).round().astype(np.uint8)
        for s, hw in enumerate([(97, 131), (20, 24), (32, 32), (200, 150)])
    ]
    keras_results = predict_mask_batch(model, images, refinement=refinement, batch_size=3)
    onnx_results = predict_mask_batch(engine, images, refinement=refinement, batch_size=3)
    for image, (keras_mask, keras_logits), (onnx_mask, onnx_logits) in zip(images, keras_results, onnx_results):
        assert onnx_mask.shape == image.shape[:2] and onnx_mask.dtype == np.uint8
        np.testing.assert_allclose(onnx_logits, keras_logits, atol=TOLERANCE, rtol=0)
        np.testing.assert_array_equal(onnx_mask, keras_mask)


def test_cli_export_then_predict_with_each_engine(saved_model, tmp_path, capsys):
    _skip_unless_exportable("onnx")
    engines = ["keras", *_installed_runtimes()]
    _, path, _ = saved_model("segnet")
    onnx_path = tmp_path / "exported" / "model.onnx"
    assert main(["export", "--model", str(path), "--format", "onnx", "--output", str(onnx_path)]) == 0
    assert onnx_path.is_file() and export.refinement_path(onnx_path).is_file()
    assert str(onnx_path) in capsys.readouterr().out
    folder = tmp_path / "in"
    folder.mkdir()
    for seed, hw in enumerate([(97, 131), (40, 50)]):
        image = (_images(1, seed=seed, size=hw)[0] * 255).round().astype(np.uint8)
        cv2.imwrite(str(folder / f"im{seed}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    for engine in engines:
        argv = [
            "predict",
            "--engine",
            engine,
            "--model",
            str(path if engine == "keras" else onnx_path),
            "--input",
            str(folder),
            "--output",
            str(tmp_path / engine),
            "--openvino-precision",
            "float32",
        ]
        assert main(argv) == 0
        assert f"tta=flip,post=fill, engine={engine}" in capsys.readouterr().out
    for stem in ("im0", "im1"):
        keras_mask = cv2.imread(str(tmp_path / "keras" / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        for engine in engines[1:]:
            exported_mask = cv2.imread(str(tmp_path / engine / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(exported_mask, keras_mask, err_msg=engine)


def test_cli_evaluate_scores_each_engine_alike(saved_model, tmp_path):
    """``evaluate --engine``: the same folder scored through the Keras model and its float32
    export on each runtime gives the same IoU, and each CSV row names its engine."""
    _skip_unless_exportable("onnx")
    import pandas as pd

    _, path, _ = saved_model("unet")
    onnx_path = export.export_model(
        keras.saving.load_model(path, compile=False), tmp_path / "model.onnx", refinement=refine.load_refinement(path)
    )
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for seed, hw in enumerate([(48, 64), (40, 40), (64, 50)]):
        image = (_images(1, seed=seed, size=hw)[0] * 255).round().astype(np.uint8)
        cv2.imwrite(str(tmp_path / "images" / f"case{seed}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        mask = (image.mean(axis=-1) > 127).astype(np.uint8) * 255  # any non-trivial labelling will do
        cv2.imwrite(str(tmp_path / "masks" / f"case{seed}.png"), mask)
    engines = ["keras", *_installed_runtimes()]
    csv = tmp_path / "scores.csv"
    for engine in engines:
        argv = [
            "evaluate",
            "--engine",
            engine,
            "--model",
            str(path if engine == "keras" else onnx_path),
            "--images",
            str(tmp_path / "images"),
            "--masks",
            str(tmp_path / "masks"),
            "--eval-size",
            "64",
            "--csv",
            str(csv),
            "--openvino-precision",
            "float32",
        ]
        assert main(argv) == 0
    rows = pd.read_csv(csv)
    assert list(rows["engine"]) == engines
    np.testing.assert_allclose(rows["test_iou"], rows["test_iou"].iloc[0], atol=1e-3)


def test_cli_export_errors(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "missing.keras"), "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "missing.keras" in err or "pip install" in err  # no onnx exporter here: that is said first
    if BACKEND == "torch":
        assert main(["export", "--model", str(tmp_path / "any.keras"), "--format", "saved_model"]) == 2
        assert "torch_xla" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "--engine",
                "onnx",
                "--model",
                str(tmp_path / "missing.onnx"),
                "--input",
                str(tmp_path),
                "--output",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )


@pytest.mark.backend_independent
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exported_engines_name_a_missing_or_corrupt_file(runtime, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        _engine(runtime, tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match="corrupt.onnx"):
        _engine(runtime, corrupt)


@pytest.mark.backend_independent
def test_openvino_engine_rejects_an_unknown_precision(tmp_path):
    pytest.importorskip("openvino", reason="the openvino engine needs openvino: pip install 'kseg[openvino]'")
    with pytest.raises(ValueError, match="fp8.*auto, float32, bfloat16"):
        export.OpenVinoEngine(tmp_path / "any.onnx", precision="fp8")


@pytest.mark.backend_independent
def test_unsupported_reasons_name_the_way_out():
    assert "torch_xla" in export.unsupported_reason("saved_model", "torch")
    assert "KERAS_BACKEND=tensorflow" in export.unsupported_reason("saved_model", "torch")
    assert "Unknown export format 'tflite'. Expected one of: onnx, saved_model. Received: export format='tflite'" in (
        export.unsupported_reason("tflite", "tensorflow")
    )
    assert "cannot export" in export.unsupported_reason("onnx", "numpy")
    assert export.default_output("runs/a/model.keras", "onnx") == Path("runs/a/model.onnx")
    assert export.default_output("runs/a/model.keras", "saved_model") == Path("runs/a/model_saved_model")


@pytest.mark.backend_independent
def test_refinement_beside_an_exported_file(tmp_path):
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"not read here")
    assert export.load_saved_refinement(artifact) == refine.Refinement()
    export.refinement_path(artifact).write_text('{"tta": "d4", "postprocess": "largest"}')
    assert export.load_saved_refinement(artifact) == refine.Refinement(tta="d4", postprocess="largest")


@pytest.mark.backend_independent
def test_repair_nd_max_pool_runs_the_2d_pool_jax2onnx_meant(tmp_path):
    """jax2onnx's 2-D max-pool: Unsqueeze twice, a 4-D MaxPool over (1, 1, B, H, W, C), Squeeze.
    ONNX Runtime rejects it; the repaired graph runs and pools 2x2 windows."""
    onnx = pytest.importorskip("onnx", reason="needs onnx: pip install 'kseg[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install 'kseg[onnx]'")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Unsqueeze", ["x", "axis0"], ["u0"]),
        helper.make_node("Unsqueeze", ["u0", "axis0"], ["u1"]),
        helper.make_node("MaxPool", ["u1"], ["pooled"], kernel_shape=[1, 2, 2, 1], strides=[1, 2, 2, 1]),
        helper.make_node("Squeeze", ["pooled", "axes01"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "jax2onnx_style_pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 3, 3])],
        initializer=[
            numpy_helper.from_array(np.asarray([0], np.int64), "axis0"),
            numpy_helper.from_array(np.asarray([0, 1], np.int64), "axes01"),
        ],
    )
    path = tmp_path / "pool.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    x = np.random.default_rng(0).random((2, 4, 6, 3)).astype(np.float32)
    with pytest.raises(Exception, match="pooling size"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert export.repair_nd_max_pool(path) == 1
    assert export.repair_nd_max_pool(path) == 0  # nothing left to repair
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, x.reshape(2, 2, 2, 3, 2, 3).max(axis=(2, 4)))


def test_time_engines_reports_images_per_second(saved_model, tmp_path):
    _skip_unless_exportable("onnx")
    _, _, model = saved_model("unet")
    engine = export.OnnxEngine(export.export_model(model, tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    rates = export.time_engines({"keras": model, "onnx": engine}, _images(8), repeats=1)
    assert set(rates) == {"keras", "onnx"} and all(rate > 0 for rate in rates.values())
