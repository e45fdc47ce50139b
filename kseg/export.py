"""Exporting a trained model for inference without kseg or Keras, and running the ONNX export.

``python -m kseg export --model RUN/model.keras --format onnx|saved_model --output PATH`` calls
:func:`export_model`, which goes through Keras's own ``model.export(path, format=...)`` under the
active backend (``KERAS_BACKEND``) and writes the run's refinement (test-time augmentation and
post-processing, stored inside the ``.keras`` zip) beside the artifact as ``PATH.refinement.json``.

``python -m kseg predict --engine onnx|openvino --model PATH.onnx`` runs the artifact with ONNX
Runtime (:class:`OnnxEngine`) or OpenVINO (:class:`OpenVinoEngine`), which offer the two things :mod:`kseg.predict` and
:mod:`kseg.evaluation` ask of a model (``input_shape`` and ``predict(x, batch_size=...)``), so the
pre- and post-processing (resize in, :func:`kseg.refine.resize_logits` out, threshold, refinement)
is the very code the Keras engine runs.

What each backend can export (Keras 3.15; the packages are in the ``kseg[onnx]`` extra):

============  ===========================================  ==================================
backend       ``onnx``                                     ``saved_model``
============  ===========================================  ==================================
tensorflow    tf2onnx + onnx; any batch size               built in; any batch size
jax           jax2onnx; a fixed batch size (see below)     jax2tf (needs tensorflow)
torch         torch.onnx (onnx, onnxscript); any batch     no: Keras needs torch_xla for it
============  ===========================================  ==================================

JAX: jax2onnx 0.17 cannot lower an integer remainder (SegNet's pooling positions) under a symbolic
batch dimension, so JAX exports have a fixed batch size (:data:`JAX_ONNX_BATCH` unless
``batch_size`` is given); :class:`OnnxEngine` pads the last, partial batch. jax2onnx also writes
2-D max-pooling as a 4-D ``MaxPool`` over ``(1, 1, B, H, W, C)``, which ONNX Runtime rejects
("Unsupported pooling size"); :func:`repair_nd_max_pool` rewrites each such node as the 2-D pool
it is, in NCHW between two transposes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from kseg import refine
from kseg._errors import unknown_name

__all__ = [
    "FORMATS",
    "JAX_ONNX_BATCH",
    "OPENVINO_PRECISIONS",
    "OnnxEngine",
    "OpenVinoEngine",
    "as_float32",
    "default_output",
    "export_model",
    "load_saved_refinement",
    "refinement_path",
    "repair_nd_max_pool",
    "time_engines",
    "unsupported_reason",
]

#: kseg's format names -> Keras's ``model.export(format=...)`` names.
FORMATS = {"onnx": "onnx", "saved_model": "tf_saved_model"}
#: Batch size of an ONNX export under JAX when none is given (see the module docstring).
JAX_ONNX_BATCH = 8
#: What ``pip install`` brings each (backend, format)'s exporter; ``None``: built in.
_EXPORTER_MODULES = {
    ("tensorflow", "onnx"): ("tf2onnx", "onnx"),
    ("jax", "onnx"): ("jax2onnx", "onnx"),
    ("torch", "onnx"): ("onnx", "onnxscript"),
    ("tensorflow", "saved_model"): (),
    ("jax", "saved_model"): ("tensorflow",),
}


def unsupported_reason(format: str, backend: str | None = None) -> str | None:
    """Why ``format`` cannot be exported under ``backend`` (default: the active one) here, or
    ``None`` when it can: an unknown format, a backend Keras has no exporter for, or a missing package."""
    import importlib.util

    backend = backend or keras.backend.backend()
    if format not in FORMATS:
        return str(unknown_name("export format", format, FORMATS))
    if (backend, format) not in _EXPORTER_MODULES:
        if backend == "torch" and format == "saved_model":
            return (
                "Keras exports a SavedModel under the torch backend only through torch_xla; export the same "
                ".keras file with KERAS_BACKEND=tensorflow (or jax) instead"
            )
        return f"Keras cannot export {format} under the {backend} backend"
    missing = [m for m in _EXPORTER_MODULES[backend, format] if importlib.util.find_spec(m) is None]
    if missing:
        extra = "tensorflow" if missing == ["tensorflow"] else "onnx"
        return f"exporting {format} under {backend} needs {', '.join(missing)}: pip install 'kseg[{extra}]'"
    return None


def refinement_path(path: str | os.PathLike) -> Path:
    """Where :func:`export_model` stores the refinement of the artifact at ``path``: ``PATH.refinement.json``."""
    path = Path(path)
    return path.with_name(path.name + ".refinement.json")


def load_saved_refinement(path: str | os.PathLike) -> refine.Refinement:
    """The refinement a model file carries: inside a ``.keras`` zip, or beside an exported
    artifact (``PATH.refinement.json``); ``Refinement()`` when there is none."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return refine.load_refinement(path)
    sidecar = refinement_path(path)
    if sidecar.is_file():
        return refine.Refinement.from_dict(json.loads(sidecar.read_text()))
    return refine.Refinement()


def default_output(model_path: str | os.PathLike, format: str) -> Path:
    """``RUN/model.keras`` -> ``RUN/model.onnx`` (onnx) or ``RUN/model_saved_model`` (a folder)."""
    model_path = Path(model_path)
    return (
        model_path.with_suffix(".onnx") if format == "onnx" else model_path.with_name(f"{model_path.stem}_saved_model")
    )


def _input_spec(model: keras.Model, batch_size: int | None) -> keras.InputSpec:
    shape = tuple(model.input_shape)
    if len(shape) != 4 or None in shape[1:]:
        raise ValueError(f"model {model.name!r} has no fixed input size ({shape}); kseg models do")
    return keras.InputSpec(shape=(batch_size, *shape[1:]), dtype="float32")


@contextlib.contextmanager
def _log_level(logger: logging.Logger, level: int):
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def as_float32(model: keras.Model) -> keras.Model:
    """``model`` itself if every layer computes in float32, else a float32 copy with the same
    weights (a ``mixed_bfloat16`` or ``mixed_float16`` run keeps its variables in float32, so the
    copy is the model the mixed one approximates)."""
    if all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers(include_self=True)):
        return model

    def float32_layer(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Layer):  # a bare math op (``x + 3.0``) takes no dtype: its inputs'
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    # recursive: a nested model (a keras-hub backbone, ConvNeXt's stages) is copied layer by layer too
    copy = keras.models.clone_model(model, clone_function=float32_layer, recursive=True)
    copy.set_weights(model.get_weights())
    return refine.attach(copy, refine.attached(model))


def export_model(
    model: keras.Model,
    path: str | os.PathLike,
    format: str = "onnx",
    refinement: refine.Refinement | None = None,
    batch_size: int | None = None,
    verbose: bool = False,
) -> Path:
    """Exports ``model`` with ``model.export(path, format=...)`` under the active backend and
    writes ``refinement`` (default: the one attached to the model, see ``kseg.refine.attached``)
    to ``PATH.refinement.json``.

    Args:
        model: a kseg model (NHWC float32 images in [0, 1] -> NHW1 logits).
        path: the ``.onnx`` file, or the SavedModel folder.
        format: ``"onnx"`` or ``"saved_model"``.
        refinement: what ``predict --engine onnx`` applies by default (``--tta saved``).
        batch_size: a fixed batch size for the artifact; ``None``: any batch size, except ONNX
            under JAX (:data:`JAX_ONNX_BATCH`, see the module docstring).
        verbose: Keras's export messages.

    Returns:
        ``path``. Raises ``ValueError`` for a format the backend cannot export and ``ImportError``
        (naming the package) for a missing exporter.
    """
    reason = unsupported_reason(format)
    if reason:
        raise (ImportError if "pip install" in reason else ValueError)(reason)
    if format == "onnx":
        model = as_float32(model)  # Keras's ONNX export needs the float32 policy
    backend = keras.backend.backend()
    if batch_size is None and format == "onnx" and backend == "jax":
        batch_size = JAX_ONNX_BATCH
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    serde_log = logging.getLogger("onnx_ir.serde")  # jax2onnx: "value type ... is not known", harmless
    with warnings.catch_warnings(), _log_level(serde_log, logging.ERROR):
        # torch's tracer warns about every Python-level shape check in Keras's ops; none matter here
        # (kseg models have static shapes), and the parity tests check the result.
        warnings.filterwarnings("ignore", message=r".*np\.object", category=FutureWarning)  # Keras's tf2onnx patch
        if backend == "torch":
            # Keras's torch backend has loaded torch already; kseg only names its warning class.
            warnings.filterwarnings("ignore", category=sys.modules["torch"].jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)  # torch.export internals
        model.export(
            str(path), format=FORMATS[format], verbose=verbose, input_signature=[_input_spec(model, batch_size)]
        )
    if format == "onnx" and backend == "jax":
        repair_nd_max_pool(path)
    refinement = refine.attached(model) if refinement is None else refinement
    refinement_path(path).write_text(json.dumps(refinement.to_dict(), indent=2))
    return path


def repair_nd_max_pool(path: str | os.PathLike) -> int:
    """Rewrites, in the ONNX file at ``path``, each ``MaxPool`` over the trailing 4 axes of
    ``(1, 1, B, H, W, C)`` whose window spans only H and W (how jax2onnx writes a 2-D max-pool)
    as ``Squeeze -> Transpose(NCHW) -> 2-D MaxPool -> Transpose(NHWC) -> Unsqueeze``. ONNX Runtime
    runs at most 3-D pooling. Returns how many nodes it rewrote."""
    import onnx
    from onnx import helper, numpy_helper

    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    nodes, rewritten = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel = list(attrs.get("kernel_shape", []))
        strides = list(attrs.get("strides", [1] * len(kernel)))
        pads = list(attrs.get("pads", [0] * 2 * len(kernel)))
        dilations = list(attrs.get("dilations", [1] * len(kernel)))
        pooled_over_hw_only = (
            node.op_type == "MaxPool"
            and node.domain in ("", "ai.onnx")
            and len(kernel) == 4
            and kernel[0] == kernel[3] == strides[0] == strides[3] == 1
            and pads[0] == pads[3] == pads[4] == pads[7] == 0
            and dilations[0] == dilations[3] == 1
            and set(attrs) <= {"kernel_shape", "strides", "pads", "dilations"}
            and len(node.output) == 1
        )
        if not pooled_over_hw_only:
            nodes.append(node)
            continue
        tag = f"kseg_pool2d_{rewritten}"
        axes = f"{tag}_axes"
        graph.initializer.append(numpy_helper.from_array(np.asarray([0, 1], dtype=np.int64), axes))
        pool2d = {"kernel_shape": kernel[1:3], "strides": strides[1:3], "pads": [pads[1], pads[2], pads[5], pads[6]]}
        if dilations[1:3] != [1, 1]:
            pool2d["dilations"] = dilations[1:3]
        nodes += [
            helper.make_node("Squeeze", [node.input[0], axes], [f"{tag}_nhwc"], name=f"{tag}_squeeze"),
            helper.make_node("Transpose", [f"{tag}_nhwc"], [f"{tag}_nchw"], name=f"{tag}_to_nchw", perm=[0, 3, 1, 2]),
            helper.make_node("MaxPool", [f"{tag}_nchw"], [f"{tag}_pooled"], name=f"{tag}_maxpool", **pool2d),
            helper.make_node("Transpose", [f"{tag}_pooled"], [f"{tag}_back"], name=f"{tag}_to_nhwc", perm=[0, 2, 3, 1]),
            helper.make_node("Unsqueeze", [f"{tag}_back", axes], [node.output[0]], name=f"{tag}_unsqueeze"),
        ]
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.checker.check_model(graph_model)
        onnx.save(graph_model, str(path))
    return rewritten


class _ExportedEngine:
    """What every engine that runs an exported ``.onnx`` file shares: the ``input_shape`` and
    ``predict(x, batch_size=..., verbose=0) -> logits`` that :mod:`kseg.predict`,
    :mod:`kseg.evaluation` and :mod:`kseg.refine` ask of a model, batching (zero-padding the last
    batch of a fixed-batch artifact) and input checks. A subclass loads the file, sets
    ``input_shape`` (``(batch or None, H, W, C)``) and runs one batch in ``_run``."""

    path: Path
    input_shape: tuple

    def _check_file(self, path: str | os.PathLike) -> Path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: exported model file not found")
        return path

    def _set_input_shape(self, shape: Sequence) -> None:
        batch, *rest = shape
        if len(rest) != 3 or not all(isinstance(d, int) for d in rest):
            raise ValueError(f"{self.path}: expected a fixed (H, W, C) input. Received: {list(shape)}")
        #: The batch size the artifact was exported with, or ``None`` when it takes any.
        self.fixed_batch = batch if isinstance(batch, int) else None
        self.input_shape = (self.fixed_batch, *rest)
        self.name = self.path.stem

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.predict(x)

    def predict(self, x: np.ndarray, batch_size: int = 8, verbose: int = 0) -> np.ndarray:
        """float32 logits ``(N, H, W, 1)`` for float32 NHWC images ``x`` at the model's size, run
        ``batch_size`` at a time (the exported batch size, zero-padded, for a fixed-batch artifact)."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.input_shape[1:]):
            raise ValueError(
                f"expected a batch of shape (N, {', '.join(map(str, self.input_shape[1:]))}); got {x.shape}"
            )
        step = self.fixed_batch or max(1, int(batch_size))
        outputs = []
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            count = len(chunk)
            if self.fixed_batch and count < self.fixed_batch:
                chunk = np.concatenate([chunk, np.zeros((self.fixed_batch - count, *chunk.shape[1:]), np.float32)])
            outputs.append(self._run(chunk)[:count])
        if not outputs:
            return np.zeros((0, *self.input_shape[1:3], 1), np.float32)
        return np.concatenate(outputs).astype(np.float32, copy=False)


class OnnxEngine(_ExportedEngine):
    """An exported ``.onnx`` kseg model run by ONNX Runtime (``predict --engine onnx``), usable
    wherever kseg takes a model for inference.

    Args:
        path: the ``.onnx`` file from :func:`export_model`.
        providers: ONNX Runtime execution providers (default: all available).

    Example:

    >>> engine = OnnxEngine("runs/X/model.onnx")
    >>> kseg.predict.predict_masks(engine, image, refinement=load_saved_refinement("runs/X/model.onnx"))
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None):
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError("the onnx engine needs ONNX Runtime: pip install 'kseg[onnx]'") from error
        self.path = self._check_file(path)
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), providers=list(providers or onnxruntime.get_available_providers())
            )
        except Exception as error:  # onnxruntime raises its own types for a bad file
            raise ValueError(f"{self.path}: cannot load the ONNX model ({type(error).__name__}: {error})") from error
        (model_input,) = self.session.get_inputs()
        self.input_name = model_input.name
        self.output_name = self.session.get_outputs()[0].name
        self._set_input_shape(model_input.shape)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]


#: ``OpenVinoEngine``'s precisions -> OpenVINO's ``INFERENCE_PRECISION_HINT`` (``auto``: none given).
OPENVINO_PRECISIONS = {"auto": None, "float32": "f32", "bfloat16": "bf16"}


class OpenVinoEngine(_ExportedEngine):
    """An exported ``.onnx`` kseg model run by OpenVINO on the CPU (``predict --engine openvino``),
    usable wherever kseg takes a model for inference.

    OpenVINO reads the ONNX file itself and compiles it once per batch size it is given: a
    static shape lets it plan every layer for that shape (the dynamic-batch graph was slower in
    a trial on the CPU of docs/benchmarks.md). It compiles for latency, one stream on all cores,
    since a call predicts one batch (its throughput mode splits the cores into streams that each
    want a batch of their own).

    Args:
        path: the ``.onnx`` file from :func:`export_model`.
        precision: ``auto`` (OpenVINO's choice: bfloat16 on a CPU with bf16 hardware, float32
            elsewhere), ``float32`` (the export's own arithmetic: equal to the Keras model within
            float32 rounding) or ``bfloat16``.

    Example:

    >>> engine = OpenVinoEngine("runs/X/model.onnx")
    >>> logits = engine.predict(images)  # (N, H, W, 1)
    """

    def __init__(self, path: str | os.PathLike, precision: str = "auto"):
        try:
            import openvino
        except ImportError as error:
            raise ImportError("the openvino engine needs OpenVINO: pip install 'kseg[openvino]'") from error
        if precision not in OPENVINO_PRECISIONS:
            raise unknown_name("precision", precision, OPENVINO_PRECISIONS)
        self.path = self._check_file(path)
        self.precision = precision
        self.core = openvino.Core()
        try:
            self.model = self.core.read_model(str(self.path))
        except Exception as error:  # OpenVINO raises RuntimeError and its own types for a bad file
            raise ValueError(f"{self.path}: cannot load the ONNX model ({type(error).__name__}: {error})") from error
        (model_input,) = self.model.inputs
        self._set_input_shape([None if d.is_dynamic else d.get_length() for d in model_input.get_partial_shape()])
        self._requests: dict[int, object] = {}

    def _request(self, batch_size: int):
        """The infer request of the model compiled for ``batch_size`` images (compiled on first use)."""
        if batch_size not in self._requests:
            model = self.model.clone()
            model.reshape([batch_size, *self.input_shape[1:]])
            config = {"PERFORMANCE_HINT": "LATENCY"}
            if OPENVINO_PRECISIONS[self.precision]:
                config["INFERENCE_PRECISION_HINT"] = OPENVINO_PRECISIONS[self.precision]
            if self.precision == "float32":
                config["EXECUTION_MODE_HINT"] = "ACCURACY"  # no lossy rewrites either
            self._requests[batch_size] = self.core.compile_model(model, "CPU", config).create_infer_request()
        return self._requests[batch_size]

    def inference_precision(self, batch_size: int = 1) -> str:
        """The arithmetic OpenVINO compiled the model to run in (``bf16``, ``f32``), for ``batch_size``."""
        return self._request(batch_size).get_compiled_model().get_property("INFERENCE_PRECISION_HINT").to_string()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        request = self._request(len(batch))
        request.infer({0: batch})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)


def time_engines(engines: dict[str, object], batch: np.ndarray, repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Images per second of each engine's ``predict`` on ``batch`` (one call per repeat, after
    ``warmup`` untimed calls), the best of ``repeats``, in the same process. A rough guide only:
    it measures whatever else the machine is doing too."""
    rates = {}
    for name, engine in engines.items():
        for _ in range(warmup):
            engine.predict(batch, batch_size=len(batch), verbose=0)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            engine.predict(batch, batch_size=len(batch), verbose=0)
            best = min(best, time.perf_counter() - start)
        rates[name] = len(batch) / best
    return rates
