"""The benchmark tools: the worker on tiny configs of the current backend (fields, FLOP count,
failures), the jit choices, the profile's op classification, the native PyTorch twin (parameters
and FLOPs equal to kseg's, FLOPs equal to torch's own counter), the bf16 skip, the time-bounded
matmul peak and the command line. Tests that start processes are marked slow; those that need the
outside ../shared/bench/torch_reference.py skip with the reason where it is absent."""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH_REFERENCE = REPO.parent / "shared" / "bench" / "torch_reference.py"
# One worker process times every model of its list; "no_such_net" makes it fail after the first.
CONFIG = dict(
    models=["unet", "no_such_net"],
    image_size=32,
    base=4,
    depth=4,
    batch=2,
    precision="float32",
    jit_compile=False,
    steps=1,
    warmup=1,
    batch_norm="fast",
    # The exported engines' timing is the same code under every backend; the JAX and PyTorch
    # exporters (each a minute here) are tested by tests/test_export.py.
    onnx=keras.backend.backend() == "tensorflow",
)


def _load(name: str):
    """``benchmarks/<name>.py`` as a module (``name`` may be ``probes/<probe>``)."""
    module_name = "kseg_bench_" + name.replace("/", "_")
    spec = importlib.util.spec_from_file_location(module_name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def worker_rows() -> list[dict]:
    """bench.run_worker's rows: the worker subprocess exactly as the benchmark runs it."""
    return _load("bench").run_worker(keras.backend.backend(), CONFIG, timeout=300)


# One test reads the worker's rows: pytest -n 2 would start the worker once per test process.
@pytest.mark.slow
def test_worker_rows_give_every_field_then_an_error_row_for_a_model_it_cannot_build(worker_rows):
    assert [r["model"] for r in worker_rows] == ["unet", "no_such_net"]
    assert "error" not in worker_rows[0]
    assert "no_such_net" in worker_rows[1]["error"] and worker_rows[1]["backend"] == keras.backend.backend()
    row = worker_rows[0]
    assert row["backend"] == keras.backend.backend()
    assert row["model"] == "unet" and row["image_size"] == 32 and row["batch"] == 2
    assert row["jit"] is (keras.backend.backend() == "jax")  # JAX always compiles
    for key in ("train_img_s", "infer_img_s", "train_gflop_s", "peak_rss_mb", "gflops_fwd_per_image"):
        assert isinstance(row[key], float) and row[key] > 0, key
    assert row["train_steps_timed"] == row["infer_steps_timed"] == 1
    assert row["train_img_s"] == pytest.approx(2 / row["train_step_s"])
    assert row["train_gflop_s"] == pytest.approx(3 * row["gflops_fwd_per_image"] * row["train_img_s"])
    assert row["batch_norm"] == "fast"
    # The exported engines' inference, timed in a process of their own (TensorFlow exports with
    # tf2onnx, a test dependency, as are both runtimes).
    for engine in ("onnx", "openvino"):
        if CONFIG["onnx"]:
            assert row[f"{engine}_infer_img_s"] == pytest.approx(2 / statistics.median(row[f"{engine}_infer_times_s"]))
        else:
            assert f"{engine}_infer_img_s" not in row
    if "openvino_infer_img_s" in row:
        assert row["openvino_precision"] in ("f32", "bf16")


@pytest.mark.backend_independent  # counts from the layers' shapes
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
@pytest.mark.backend_independent  # counts from the layers' shapes
def test_gflops_match_torch_reference(name):
    pytest.importorskip("torch", reason="torch not installed: no native reference count")
    if not TORCH_REFERENCE.exists():
        pytest.skip(f"{TORCH_REFERENCE} not found (CI clones the repo next to shared/)")
    spec = importlib.util.spec_from_file_location("torch_reference", TORCH_REFERENCE)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    expected = reference.forward_gflops(reference.build(name, 4, 4), 32)
    from kseg import models

    model = models.build(name, input_shape=(32, 32, 3), base_filters=4, depth=4)
    assert _load("_worker").forward_gflops(model) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "backend, choice, expected",
    [
        ("tensorflow", "both", (False, True)),
        ("tensorflow", "off", (False,)),
        ("tensorflow", "on", (True,)),
        ("jax", "off", (True,)),  # JAX always compiles: "off" cannot apply, the one setting stays
        ("torch", "on", (True,)),  # torch.compile
        ("torch", "both", (False,)),  # torch.compile only when asked: minutes per model
    ],
)
@pytest.mark.backend_independent
def test_jit_options(backend, choice, expected):
    assert _load("bench").jit_options(backend, choice) == expected


@pytest.mark.parametrize(
    "event, expected",
    [
        ("unet/enc0_block0_relu_1/Relu:_MklNativeFusedConv2D", ("conv", "forward")),  # fused conv+ReLU
        (
            "gradient_tape/unet/dec1_block0_conv_1/convolution/Conv2DBackpropFilter:Conv2DBackpropFilter",
            ("conv", "backward"),
        ),
        ("gradient_tape/unet/dec0_up_1/ResizeNearestNeighborGrad:ResizeNearestNeighborGrad", ("upsample", "backward")),
        ("unet/enc2_pool_1/MaxPool2d/MaxPool:_MklNativeMaxPool", ("downsample", "forward")),
        ("unet/dec3_block1_bn_1/moments/SquaredDifference:SquaredDifference", ("batchnorm", "forward")),
        ("unet/dec3_concat_1/concat:ConcatV2", ("concat", "forward")),
        ("compile_loss/bce/Log1p:Log1p", ("loss", "both")),
        ("AddN_15:AddN", ("other", "backward")),
        ("adam/Sqrt_12:Sqrt", ("optimizer", "update")),
    ],
)
@pytest.mark.backend_independent
def test_profile_classifies_tensorflow_ops(event, expected):
    assert _load("probes/profile_step").keras_kind(event) == expected


@pytest.mark.parametrize(
    "node, node_type, expected",
    [
        ("segnet_1/enc0_pool_1/MaxPool2d__44", "MaxPool", "max pool"),
        ("segnet_1/enc0_pool_1/SelectV2", "Select", "pooling positions"),
        ("segnet_1/dec0_unpool_1/SelectV2/fq_output_0", "FakeQuantize", "unpooling"),
        ("unet2_1/dec0_block0_conv_1/BiasAdd/WithoutBiases", "Convolution", "conv"),
        ("unet2_1/dec0_concat_1/concat", "Concat", "concat"),
        ("Transpose__755", "Transpose", "(transpose, unnamed)"),
        ("input_layer", "Parameter", "input/output"),
    ],
)
@pytest.mark.backend_independent
def test_openvino_profile_names_each_node_by_its_layer(node, node_type, expected):
    assert _load("probes/openvino_layers").layer_kind(node, node_type) == expected


@pytest.mark.parametrize(
    "op_name, instruction, expected",
    [
        ("jit(train_step)/jvp(enc0_block1_conv)/conv_general_dilated", "convolution.3", ("conv", "forward")),
        (
            "jit(train_step)/transpose(jvp(dec0_block1_conv))/conv_general_dilated",
            "convolution.9",
            ("conv", "backward"),
        ),
        (
            "jit(train_step)/transpose(jvp(bottleneck_block0_bn))/reduce_sum",
            "reduce_fusion.2",
            ("batchnorm", "backward"),
        ),
        ("jit(train_step)/jvp(enc2_pool)/reduce_window_max", "wrapped_reduce-window", ("downsample", "forward")),
        ("jit(train_step)/transpose(jvp(dec1_up))/reduce_sum", "fusion.4", ("upsample", "backward")),
        ("jit(train_step)/transpose(jvp(compile_loss))/bce/mul", "multiply_fusion", ("loss", "both")),
        ("jit(train_step)/adam/sqrt", "sqrt_fusion.1", ("optimizer", "update")),
        ("state[0][41]", "copy.144", ("cast/copy", "both")),
        ("jit(train_step)/add", "add.3", ("other", "forward")),
    ],
)
@pytest.mark.backend_independent
def test_profile_classifies_jax_thunks(op_name, instruction, expected):
    assert _load("probes/profile_step").jax_kind(op_name, instruction) == expected


@pytest.mark.parametrize(
    "frames, expected",
    [
        (["aten::conv2d", "aten::convolution", "aten::mkldnn_convolution"], ("conv", "forward")),
        (
            ["autograd::engine::evaluate_function: ConvolutionBackward0", "aten::convolution_backward"],
            ("conv", "backward"),
        ),
        (
            ["autograd::engine::evaluate_function: UpsampleNearest2DBackward0", "aten::upsample_nearest2d_backward"],
            ("upsample", "backward"),
        ),
        (["Optimizer.step#Adam.step", "aten::sqrt"], ("optimizer", "update")),
        (["aten::max_pool2d", "aten::max_pool2d_with_indices"], ("downsample", "forward")),
        (["aten::empty"], ("other", "both")),
    ],
)
@pytest.mark.backend_independent
def test_profile_classifies_torch_ops(frames, expected):
    assert _load("probes/profile_step").torch_kind(frames) == expected


# --- the native PyTorch twin -------------------------------------------------------------------

MODELS = ("segnet", "unet", "unet2")
# Trainable parameters at base 32, depth 4 (kseg's Keras builders; test_models asserts them too).
PARAMS_BASE32 = {"segnet": 4_712_993, "unet": 7_852_545, "unet2": 8_114_625}
NO_REFERENCE = f"{TORCH_REFERENCE} not found (only a checkout next to shared/ has it)"


@pytest.fixture(scope="module")
def twin():
    pytest.importorskip("torch", reason="torch not installed: no native PyTorch twin")
    return _load("torch_twin")


def _keras_params(name: str, size: int, base: int) -> int:
    from kseg import models

    model = models.build(name, input_shape=(size, size, 3), base_filters=base, depth=4)
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size, base", [(64, 8), (128, 32)])
@pytest.mark.backend_independent  # counts from the layers' shapes
def test_twin_parameters_equal_the_keras_models(twin, name, size, base):
    params = twin.param_count(twin.build(name, base, 4))
    assert params == _keras_params(name, size, base)
    if base == 32:
        assert params == PARAMS_BASE32[name]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.backend_independent
def test_twin_flop_count_equals_flop_counter_mode(twin, name):
    model = twin.build(name, 8, 4)
    assert twin.forward_flops(name, 64, 8, 4) == twin.measured_forward_flops(model, 64)
    assert twin.forward_flops(name, 32, 8, 4, batch=2) == twin.measured_forward_flops(model, 32, batch=2)
    assert model.training  # counting does not leave the model in eval mode


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.backend_independent  # counts from the layers' shapes
def test_twin_flop_count_equals_the_keras_layers(twin, name):
    """bench.py asserts this for every Keras row; here on a small model of each kind."""
    from kseg import models

    keras_model = models.build(name, input_shape=(64, 64, 3), base_filters=8, depth=4)
    assert _load("_worker").forward_gflops(keras_model) == pytest.approx(twin.forward_gflops(name, 64, 8, 4), rel=1e-12)


@pytest.mark.backend_independent
def test_twin_flops_at_base_32_are_the_documented_ones(twin):
    """docs/benchmarks.md: segnet 3.804, unet 6.975, unet2 6.170 forward GFLOPs per 128-px image."""
    assert [round(twin.forward_gflops(n, 128, 32, 4), 3) for n in MODELS] == [3.804, 6.975, 6.170]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.backend_independent
def test_twin_forward_shape_and_batchnorm(twin, name):
    import torch

    model = twin.build(name, 4, 4)
    out = model(torch.rand(3, 3, 32, 48))
    assert tuple(out.shape) == (3, 1, 32, 48)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(bn.momentum == pytest.approx(0.1) and bn.eps == 1e-5 for bn in bns)
    # kseg's conv_block order: Conv -> ReLU -> BatchNorm
    block = next(m for m in model.modules() if isinstance(m, twin.ConvBlock))
    assert [type(m).__name__ for m in block] == ["Conv2d", "ReLU", "BatchNorm2d"]


@pytest.mark.backend_independent
def test_twin_rejects_unknown_names_and_sizes(twin):
    with pytest.raises(ValueError, match="unknown model"):
        twin.build("fcn")
    with pytest.raises(ValueError, match="divisible"):
        twin.forward_flops("unet", 40, 8, 4)


@pytest.mark.backend_independent
def test_twin_script_times_tiny_modes(twin, capsys):
    rows = twin.main(
        [
            "--model",
            "unet2",
            "--image-size",
            "32",
            "--base",
            "4",
            "--batch",
            "2",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--modes",
            "fp32,fp32-cl",
            "--threads",
            "1",
        ]
    )
    assert [r["mode"] for r in rows] == ["fp32", "fp32-cl"]
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == rows
    row = rows[0]
    assert row["params"] == twin.param_count(twin.build("unet2", 4, 4))
    assert row["gflops_fwd_per_image"] == twin.forward_gflops("unet2", 32, 4, 4)
    assert row["train_img_s"] > 0 and row["infer_img_s"] > 0 and row["train_steps_timed"] == 1


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.backend_independent
def test_twin_matches_the_outside_reference(twin, name):
    if not TORCH_REFERENCE.exists():
        pytest.skip(NO_REFERENCE)
    spec = importlib.util.spec_from_file_location("torch_reference", TORCH_REFERENCE)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    ref_params = sum(p.numel() for p in reference.build(name, 8, 4).parameters())
    assert twin.param_count(twin.build(name, 8, 4)) == ref_params
    assert twin.forward_gflops(name, 64, 8, 4) == pytest.approx(
        reference.forward_gflops(reference.build(name, 8, 4), 64), rel=1e-12
    )


# --- the machine: bf16 skip, flags, matmul peak ----------------------------------------------

CPUINFO_NO_BF16 = "processor\t: 0\nmodel name\t: Fake CPU\nflags\t\t: fpu sse2 avx2 avx512f\n"
CPUINFO_AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"


@pytest.fixture
def bench():
    return _load("bench")


@pytest.mark.backend_independent
def test_bf16_is_skipped_where_the_cpu_lacks_it(bench, monkeypatch):
    monkeypatch.setattr(bench.hardware, "read_cpuinfo", lambda: CPUINFO_NO_BF16)
    assert bench.hardware.cpu_flags() == {"fpu", "sse2", "avx2", "avx512f"}
    precisions, modes, notes = bench.plan_bf16(["float32", "mixed_bfloat16"], ["fp32", "fp32-cl", "bf16", "bf16-cl"])
    assert precisions == ["float32"] and modes == ["fp32", "fp32-cl"]
    assert len(notes) == 1 and notes[0].startswith("SKIP bf16")
    assert "mixed_bfloat16" in notes[0] and "torch bf16-cl" in notes[0] and "avx512_bf16" in notes[0]
    # --force-bf16 keeps them
    assert bench.plan_bf16(["mixed_bfloat16"], ["bf16"], force=True) == (["mixed_bfloat16"], ["bf16"], [])
    info = bench.hardware.machine_info()
    assert info["cpu_flags"] == {
        "avx2": True,
        "avx512f": True,
        "avx512_bf16": False,
        "amx_bf16": False,
        "amx_tile": False,
    }
    assert info["bf16_supported"] is False


@pytest.mark.parametrize(
    "cpuinfo", [CPUINFO_AMX, CPUINFO_NO_BF16.replace("avx512f", "avx512f avx512_bf16"), "Features\t: fp asimd bf16\n"]
)
@pytest.mark.backend_independent
def test_bf16_runs_where_the_cpu_has_it(bench, monkeypatch, cpuinfo):
    monkeypatch.setattr(bench.hardware, "read_cpuinfo", lambda: cpuinfo)
    assert bench.plan_bf16(["float32", "mixed_bfloat16"], ["fp32", "bf16-cl"]) == (
        ["float32", "mixed_bfloat16"],
        ["fp32", "bf16-cl"],
        [],
    )


@pytest.mark.backend_independent
def test_no_cpuinfo_means_no_bf16(bench, monkeypatch):
    monkeypatch.setattr(bench.hardware, "read_cpuinfo", lambda: "")
    supported, why = bench.hardware.bf16_support()
    assert not supported and "unknown" in why


@pytest.mark.backend_independent
def test_the_header_names_the_cpu_and_its_flags(bench):
    info = bench.hardware.machine_info({"avx2", "amx_tile"})
    line = bench.hardware.describe(info)
    assert info["cpu_model"] and info["cpu_model"] in line
    assert "avx2=yes" in line and "amx_tile=yes" in line and "avx512_bf16=no" in line


@pytest.mark.backend_independent
def test_matmul_peak_is_bounded_by_size(bench):
    # No wall-clock assertion: on a loaded machine any time limit fails for the wrong reason.
    peak = bench.measure_peak(seconds=0.3, bf16=False, start_n=64, max_n=512)
    assert peak["numpy_fp32_gflop_s"] > 0 and 64 <= peak["numpy_fp32_n"] <= 512
    assert "torch_bf16_gflop_s" not in peak and np.isnan(peak["bf16_peak_gflop_s"])
    assert peak["fp32_peak_gflop_s"] >= peak["numpy_fp32_gflop_s"]


@pytest.mark.backend_independent
def test_deadline(bench):
    assert bench.Deadline(0).timeout(900) == 900
    assert bench.Deadline(bench.MIN_START_S / 2).timeout(900) is None
    assert 100 < bench.Deadline(200).timeout(900) <= 200


# --- the command line ------------------------------------------------------------------------


@pytest.mark.backend_independent
def test_missing_reference_is_one_skip_line(bench, monkeypatch, tmp_path, capsys):
    """--torch-impl reference without ../shared: one SKIP line naming the path, and the Keras rows
    still run (faked here: no process is started)."""
    missing = tmp_path / "shared" / "bench" / "torch_reference.py"
    monkeypatch.setattr(bench, "TORCH_REFERENCE", missing)
    calls = []

    def fake_worker(backend, config, timeout):
        calls.append((backend, config["precision"]))
        return [
            {
                "backend": backend,
                "model": m,
                "precision": config["precision"],
                "jit": config["jit_compile"],
                "image_size": config["image_size"],
                "batch": config["batch"],
                "error": "faked",
            }
            for m in config["models"]
        ]

    monkeypatch.setattr(bench, "run_worker", fake_worker)
    bench.main(
        [
            "--torch-impl",
            "reference",
            "--no-peak",
            "--models",
            "unet",
            "--backends",
            "tensorflow",
            "--precisions",
            "float32",
            "--jit",
            "off",
            "--image-size",
            "32",
            "--base",
            "4",
        ]
    )
    out = capsys.readouterr().out
    skips = [line for line in out.splitlines() if line.startswith("SKIP torch reference")]
    assert skips and all(str(missing) in line for line in skips)
    assert calls == [("tensorflow", "float32")]
    assert out.splitlines()[0].startswith("cpu: ")


@pytest.mark.parametrize("script", ["bench.py", "probes/profile_step.py", "torch_twin.py"])
@pytest.mark.slow
@pytest.mark.backend_independent
def test_cli_help(script):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    if script != "torch_twin.py":
        assert "--torch-impl" in proc.stdout


@pytest.mark.slow
@pytest.mark.backend_independent
def test_a_stopped_process_keeps_the_rows_it_printed(bench):
    code = "import json, time; print(json.dumps({'model': 'unet'}), flush=True); time.sleep(60)"
    rows, error = bench.run_json_process([sys.executable, "-c", code], {}, timeout=2)
    assert rows == [{"model": "unet"}] and "timed out" in error


@pytest.mark.backend_independent
def test_backends_default_to_all_and_models_take_any_kseg_name(bench):
    args = bench.parse_args([])
    assert args.backends == ["tensorflow", "jax", "torch"] and args.models == ["segnet", "unet", "unet2"]
    args = bench.parse_args(["--backends", "torch", "all", "--models", "unet:unet", "fpn:mobilenetv2"])
    assert args.backends == ["tensorflow", "jax", "torch"] and args.models == ["unet", "fpn:mobilenetv2"]
    assert bench.twin_params("fpn:mobilenetv2", 16, 4) is None  # no native twin: its ratio columns stay empty
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "fpn:resnet5"])


PROBES = sorted((REPO / "benchmarks" / "probes").glob("*.py"))

LOAD_PROBES = """
import importlib.util, json, os, sys
found = {}
for path in json.loads(sys.argv[1]):
    before = list(sys.path)
    spec = importlib.util.spec_from_file_location("probe_" + os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its module-level imports; main() does not run
    found[path] = dict(
        added=[os.path.realpath(p) for p in sys.path if p not in before],
        REPO=os.path.realpath(module.REPO) if hasattr(module, "REPO") else None,
        HERE=os.path.realpath(module.HERE) if hasattr(module, "HERE") else None,
    )
    sys.path[:] = before
print("RESULT " + json.dumps(found))
"""


def test_the_probes_readme_names_every_probe_and_no_user_benchmark_moved():
    readme = (REPO / "benchmarks" / "probes" / "README.md").read_text()
    assert PROBES and all(f"`{path.name}`" in readme for path in PROBES)
    for kept in ("bench.py", "model_speed.py", "int8_engine.py", "torch_twin.py", "_timing.py", "_worker.py"):
        assert (REPO / "benchmarks" / kept).exists()


@pytest.mark.slow
@pytest.mark.backend_independent
def test_every_probe_finds_the_benchmark_helpers_from_its_folder(tmp_path):
    """Each probe of benchmarks/probes/ loads from another directory, and one that uses
    benchmarks/'s helpers (_timing, _hardware, torch_twin) puts benchmarks/ on sys.path."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD_PROBES, json.dumps([str(p) for p in PROBES])],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.split("RESULT ", 1)[1])
    benchmarks, repo = str((REPO / "benchmarks").resolve()), str(REPO.resolve())
    for path in PROBES:
        probe, source = found[str(path)], path.read_text()
        if any(helper in source for helper in ("from _timing", "from _hardware", "import torch_twin")):
            assert benchmarks in probe["added"], f"{path.name} does not put benchmarks/ on sys.path"
        assert probe["REPO"] in (None, repo), path.name
        assert probe["HERE"] in (None, benchmarks), path.name
