"""Start a run from another model's weights (``--init-from``) and pretrain once per architecture
on another labelled set (``--pretrain-on``).

A source is a run folder (``runs/RUN``, holding ``model.keras``) or a ``.keras`` file. Its
weights are copied layer by layer where a layer of the same name has weights of the same shapes;
every other layer keeps its fresh initialisation, and :class:`InitReport` counts both. A source's
identity (:func:`source_identity`) is its run's ``config_hash`` where the run folder says it, else
a digest of its weights, so a run's hash changes with the weights it starts from.

Leakage: a model must never be scored on images it saw before its own training.
:func:`check_no_overlap` compares case ids (file stems) of the pretraining set with every set a
run is scored on, and the grid refuses an overlap before any run starts.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import keras
import numpy as np

MODEL_FILE = "model.keras"
# The loss a pretraining run trains with: per-pixel BCE gives every pixel a gradient from the first
# step on a set whose lesions cover 0.4-99.96% of the frame, and the probe of issue "Transfer"
# found Dice and Focal fine-tunes gained as much from a BCE-pretrained source as BCE ones.
PRETRAIN_LOSS = "bce"
# Pretraining: one seed and one split of the source set, shared by every fine-tuned seed; the
# validation part picks the kept epoch, the test part gives the pretraining row its own score.
PRETRAIN_SEED = 0
PRETRAIN_SPLIT = (0.95, 0.025, 0.025)


@dataclasses.dataclass(frozen=True)
class InitReport:
    """What :func:`load_matching_weights` copied: weight tensors loaded from the source and left
    fresh (no layer of that name in the source, or other shapes), and the first layers that did
    not match (for error messages)."""

    loaded: int
    fresh: int
    unmatched_layers: tuple[str, ...]


def source_model_path(source: str | Path) -> Path:
    """The ``.keras`` file of a source: ``source`` itself, or ``source/model.keras`` for a run
    folder. Raises ``FileNotFoundError`` naming what is missing."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"--init-from expects a run folder holding {MODEL_FILE} or a .keras file. Received: {source} "
            f"({path} does not exist)"
        )
    return path


def _run_config(model_path: Path) -> dict:
    """The source run's ``config.json`` (beside its model), or ``{}`` for a bare ``.keras`` file."""
    config_file = model_path.parent / "config.json"
    if model_path.name != MODEL_FILE or not config_file.is_file():
        return {}
    return json.loads(config_file.read_text())


def load_source(source: str | Path) -> keras.Model:
    """The source model, uncompiled. Raises ``ValueError`` naming the file if it is not a model
    Keras can load (kseg registers its layers, so no custom objects are needed)."""
    path = source_model_path(source)
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):  # Keras says "File not found" for those
        what = "not a .keras file" if path.suffix != ".keras" else "not a Keras archive (a .keras file is a zip)"
        raise ValueError(f"--init-from expects a kseg model (.keras). Received: {path}, which is {what}")
    import kseg.models  # noqa: F401  registers every kseg layer and the model class for load_model

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a file that is not its archive
        raise ValueError(
            f"--init-from expects a kseg model (.keras). Received: {path}, which Keras cannot load "
            f"({type(error).__name__}: {error})"
        ) from error


def weights_digest(model: keras.Model) -> str:
    """12 hex digits of SHA-256 over every weight's name, shape and bytes, in layer order."""
    digest = hashlib.sha256()
    for layer in model.layers:
        for variable in layer.weights:
            value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
            digest.update(f"{layer.name}/{variable.name}{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()[:12]


def source_identity(source: str | Path) -> str:
    """``"<label>:<id>"``: the label is the source run's dataset (else the file's stem), the id its
    ``config_hash`` (else :func:`weights_digest`). Part of every descendant run's hash."""
    path = source_model_path(source)
    config = _run_config(path)
    if config.get("config_hash"):
        return f"{config.get('dataset') or path.parent.name}:{config['config_hash']}"
    return f"{path.stem}:{_file_digest(str(path.resolve()), path.stat().st_mtime_ns)}"


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, mtime_ns: int) -> str:
    """:func:`weights_digest` of a file, once per file version: every config of a grid resolves it."""
    return weights_digest(load_source(path))


def source_case_ids(source: str | Path) -> set[str]:
    """The case ids a source run trained or validated on (its ``split.json``, joint sources
    included), or an empty set where the source is a bare ``.keras`` file that does not say."""
    split_file = source_model_path(source).parent / "split.json"
    if not split_file.is_file():
        return set()
    parts = json.loads(split_file.read_text())
    seen = set(parts.get("train", [])) | set(parts.get("val", []))
    for joint in parts.get("joint", {}).values():
        seen |= set(joint.get("train", [])) | set(joint.get("val", []))
    return seen


def case_stem(case_id: str) -> str:
    """A case id without the source prefix a joined dataset gives it (``isic/ISIC_0000001``)."""
    return case_id.rsplit("/", 1)[-1]


def load_matching_weights(model: keras.Model, source: keras.Model | str | Path) -> InitReport:
    """Copies into ``model`` the weights of every ``source`` layer with the same name whose
    weights all have the same shapes; the rest of ``model`` keeps its initialisation. BatchNorm
    moving statistics are weights too, so they start from the source's and then follow the new
    data at the layer's momentum.

    Raises ``ValueError`` naming the source and the first unmatched layers when nothing matches.

    >>> report = load_matching_weights(model, "runs/unet-bce-seed0-0123456789ab")
    >>> report.loaded, report.fresh
    (92, 0)
    """
    label = source if isinstance(source, (str, Path)) else source.name
    source_model = load_source(source) if isinstance(source, (str, Path)) else source
    by_name = {layer.name: layer for layer in source_model.layers}
    loaded, fresh, unmatched = 0, 0, []
    for layer in model.layers:
        if not layer.weights:
            continue
        other = by_name.get(layer.name)
        same = other is not None and [tuple(w.shape) for w in other.weights] == [tuple(w.shape) for w in layer.weights]
        if same:
            layer.set_weights(other.get_weights())
            loaded += len(layer.weights)
        else:
            fresh += len(layer.weights)
            unmatched.append(layer.name)
    if not loaded:
        raise ValueError(
            f"--init-from expects a model with layers of the same names and shapes as {model.name}'s. Received: "
            f"{label}, which matches none (first unmatched layers: {', '.join(unmatched[:5])})"
        )
    return InitReport(loaded, fresh, tuple(unmatched))


def check_no_overlap(seen: Iterable[str], scored: Mapping[str, Iterable[str]], what: str) -> None:
    """Raises ``ValueError`` when a case of ``seen`` (ids a source trained on) is in one of the
    ``scored`` sets (name -> ids), naming the set and the first shared ids. Ids compare by
    :func:`case_stem`, so a case joined under a source prefix still matches its bare id."""
    seen = {case_stem(i) for i in seen}
    for name, ids in scored.items():
        shared = sorted(seen & {case_stem(i) for i in ids})
        if shared:
            raise ValueError(
                f"{what} expects no case in common with the sets runs are scored on. Received: {name} shares "
                f"{len(shared)} case(s) with it (e.g. {', '.join(shared[:5])}); a score on images seen in "
                "pretraining is worthless"
            )


__all__ = [
    "InitReport",
    "PRETRAIN_LOSS",
    "PRETRAIN_SEED",
    "PRETRAIN_SPLIT",
    "case_stem",
    "check_no_overlap",
    "load_matching_weights",
    "load_source",
    "source_case_ids",
    "source_identity",
    "source_model_path",
    "weights_digest",
]
