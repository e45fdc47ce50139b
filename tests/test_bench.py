"""The benchmark tools: the worker on tiny configs of the current backend (fields, FLOP count,
failures), the jit choices and the profile's op classification."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH_REFERENCE = REPO.parent / "shared" / "bench" / "torch_reference.py"
# One worker process times every model of its list; "no_such_net" makes it fail after the first.
CONFIG = dict(models=["unet", "no_such_net"], image_size=32, base=4, depth=4, batch=2,
              precision="float32", jit_compile=False, steps=1, warmup=1)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"kseg_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def worker_rows() -> list[dict]:
    """bench.run_worker's rows: the worker subprocess exactly as the benchmark runs it."""
    return _load("bench").run_worker(keras.backend.backend(), CONFIG, timeout=300)


@pytest.fixture(scope="module")
def row(worker_rows) -> dict:
    return worker_rows[0]


def test_a_model_the_worker_cannot_build_is_an_error_row_after_the_good_ones(worker_rows):
    assert [r["model"] for r in worker_rows] == ["unet", "no_such_net"]
    assert "error" not in worker_rows[0]
    assert "no_such_net" in worker_rows[1]["error"] and worker_rows[1]["backend"] == keras.backend.backend()


def test_worker_row_fields(row):
    assert row["backend"] == keras.backend.backend()
    assert row["model"] == "unet" and row["image_size"] == 32 and row["batch"] == 2
    assert row["jit"] is (keras.backend.backend() == "jax")  # JAX always compiles
    for key in ("train_img_s", "infer_img_s", "train_gflop_s", "peak_rss_mb", "gflops_fwd_per_image"):
        assert isinstance(row[key], float) and row[key] > 0, key
    assert row["train_steps_timed"] == row["infer_steps_timed"] == 1
    assert row["train_img_s"] == pytest.approx(2 / row["train_step_s"])
    assert row["train_gflop_s"] == pytest.approx(3 * row["gflops_fwd_per_image"] * row["train_img_s"])


def test_gflops_of_a_single_conv_by_hand():
    """Conv2D 3->5, 3x3, same, on 8x8: 8*8*5 outputs x 3*3*3 MACs; Conv2DTranspose 5->2, k2 s2:
    8*8*5 inputs x 2*2*2 MACs; x2 for FLOPs."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(5, 3, padding="same")(inputs)
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)
    model = keras.Model(inputs, x)
    expected = 2 * (8 * 8 * 5 * 27 + 8 * 8 * 5 * 8) / 1e9
    assert _load("_worker").forward_gflops(model) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["segnet", "unet", "unet2"])
def test_gflops_match_torch_reference(name):
    torch = pytest.importorskip("torch", reason="torch not installed: no native reference count")
    if not TORCH_REFERENCE.exists():
        pytest.skip(f"{TORCH_REFERENCE} not found (CI clones the repo next to shared/)")
    spec = importlib.util.spec_from_file_location("torch_reference", TORCH_REFERENCE)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    expected = reference.forward_gflops(reference.build(name, 4, 4), 32)
    from kseg import models

    model = models.build(name, input_shape=(32, 32, 3), base_filters=4, depth=4)
    assert _load("_worker").forward_gflops(model) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("backend, choice, expected", [
    ("tensorflow", "both", (False, True)), ("tensorflow", "off", (False,)), ("tensorflow", "on", (True,)),
    ("jax", "off", (True,)),  # JAX always compiles: "off" cannot apply, the one setting stays
    ("torch", "on", (False,)),  # torch.compile is not benchmarked
])
def test_jit_options(backend, choice, expected):
    assert _load("bench").jit_options(backend, choice) == expected


@pytest.mark.parametrize("event, expected", [
    ("unet/enc0_block0_relu_1/Relu:_MklNativeFusedConv2D", ("conv", "forward")),  # fused conv+ReLU
    ("gradient_tape/unet/dec1_block0_conv_1/convolution/Conv2DBackpropFilter:Conv2DBackpropFilter",
     ("conv", "backward")),
    ("gradient_tape/unet/dec0_up_1/ResizeNearestNeighborGrad:ResizeNearestNeighborGrad", ("upsample", "backward")),
    ("unet/enc2_pool_1/MaxPool2d/MaxPool:_MklNativeMaxPool", ("downsample", "forward")),
    ("unet/dec3_block1_bn_1/moments/SquaredDifference:SquaredDifference", ("batchnorm", "forward")),
    ("unet/dec3_concat_1/concat:ConcatV2", ("concat", "forward")),
    ("compile_loss/bce/Log1p:Log1p", ("loss", "both")),
    ("AddN_15:AddN", ("other", "backward")),
    ("adam/Sqrt_12:Sqrt", ("optimizer", "update")),
])
def test_profile_classifies_tensorflow_ops(event, expected):
    assert _load("profile_step").keras_kind(event) == expected


@pytest.mark.parametrize("frames, expected", [
    (["aten::conv2d", "aten::convolution", "aten::mkldnn_convolution"], ("conv", "forward")),
    (["autograd::engine::evaluate_function: ConvolutionBackward0", "aten::convolution_backward"],
     ("conv", "backward")),
    (["autograd::engine::evaluate_function: UpsampleNearest2DBackward0", "aten::upsample_nearest2d_backward"],
     ("upsample", "backward")),
    (["Optimizer.step#Adam.step", "aten::sqrt"], ("optimizer", "update")),
    (["aten::max_pool2d", "aten::max_pool2d_with_indices"], ("downsample", "forward")),
    (["aten::empty"], ("other", "both")),
])
def test_profile_classifies_torch_ops(frames, expected):
    assert _load("profile_step").torch_kind(frames) == expected
