"""One run's configuration, the presets it starts from, and the identity (hash) that names it.

A run's identity is everything that changes what it computes: the RunConfig's fields (model,
loss, recipe, seeds, split, data fingerprint, precision, resolved jit), the Keras backend, the
kseg version and the device. :meth:`RunConfig.config_hash` hashes all of it in one place;
:meth:`RunConfig.group_hash` hashes the same minus the two seeds, so the leaderboard's mean and
spread are always over runs that differ only by seed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

from kseg import device
from kseg._errors import invalid_value, unknown_name
from kseg._version import __version__ as KSEG_VERSION
from kseg.experiment.presets import PRESETS
from kseg.precision import PRECISIONS, resolve_jit_compile, resolve_precision

SCHEDULES = ("plateau", "cosine", "constant")
AUGMENTATIONS = ("none", "flips", "full")
REFINE_CHOICES = ("none", "auto")
# The names of kseg.batch_norm.BATCH_NORMALIZATIONS (tests/test_config.py holds them equal), written
# here so that the grid's flags, declared by the knobs below, build without Keras.
BATCH_NORMS = ("keras", "fast")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expects an integer >= 1. Received: {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"expects a finite number > 0. Received: {value}")
    return value


def fraction(text: str, what: str = "the value") -> float:
    """A number in [0, 1), for a share such as ``--joint-ratio``."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what} expects a fraction in [0, 1). Received: {value}")
    return value


def _split_sizes(text: str):
    from kseg.data.split import parse_split_sizes

    return parse_split_sizes(text)


@dataclasses.dataclass(frozen=True)
class Knob:
    """How a RunConfig field shows outside the config, declared once beside the field
    (:func:`knob`): the grid's flag (``kseg.cli``), the leaderboard row's column
    (``kseg.experiment.run.base_row``, ``kseg.experiment.leaderboard.COLUMNS``) and its part of the recipe label
    (``kseg.experiment.leaderboard.recipe``).

    Attributes:
        help: the flag's help ("" for none).
        parse: the flag's type (a ValueError names what is wrong); None: the value is text.
        choices: the flag's allowed values.
        flag: the flag's name; "" for none (the field is set by other flags or by presets only).
        group: the flag's ``--help`` section: "recipe", "data", "start" or "" (the top).
        metavar: the flag's value in ``--help``.
        label: the recipe label's part for a row's value (a CSV cell), "" for none.
        missing: the part for a row without the column (written before the knob existed).
        neutral: added within a kseg version; at its default it computes what that version did
            before it existed, so it stays out of the identity there (old hashes hold).
        identity: part of the run's identity (False for where a file is, not what it holds).
        row: repeated in the leaderboard row.
    """

    help: str = ""
    parse: Callable[[str], Any] | None = None
    choices: tuple | None = None
    flag: str = ""
    group: str = "recipe"
    metavar: str | None = None
    label: Callable[[Any], str] = lambda value: ""
    missing: str = ""
    neutral: bool = False
    identity: bool = True
    row: bool = True


def knob(default: Any, help: str = "", *, flag: str | None = None, **how) -> Any:
    """A RunConfig field with its :class:`Knob`; ``flag`` defaults to ``--`` + the field's name
    with dashes, filled in by :func:`knobs`."""
    return dataclasses.field(default=default, metadata={"knob": Knob(help, flag=flag or "", **how), "cli": flag != ""})


def _plain(default: Any, **how) -> Any:
    """A field without a flag of its own (set by presets, other flags or kseg itself)."""
    return dataclasses.field(default=default, metadata={"knob": Knob(**how), "cli": False})


def _unless(default: Any, fmt: str) -> Callable[[Any], str]:
    """A label part ``fmt.format(value)`` where the value differs from ``default``."""
    return lambda value: "" if type(default)(value) == default else fmt.format(type(default)(value))


def _true(value: Any) -> bool:
    return str(value) in ("True", "true", "1", "1.0")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that decides what one training run computes.

    ``dataset``, ``data_fingerprint``, ``precision`` and ``jit_compile`` should be resolved
    (:func:`kseg.experiment.run.resolve_config` does it) before the config is hashed, so the hash says what
    actually ran. Each field's flag, row column and recipe label are declared with it
    (:class:`Knob`): a new knob is one field here (plus its test).

    Recipe fields:
        schedule: ``plateau`` (halve the LR when validation IoU stalls; the notebook's habit),
            ``cosine`` (linear warm-up over ``warmup_epochs``, then cosine decay to ``lr * 1e-2``
            at the last step, so the budget ends at a small LR) or ``constant``.
        weight_decay: decoupled weight decay (AdamW) when > 0, else Adam.
        ema: momentum of an exponential moving average of the weights (0: off); validation,
            checkpoints and the saved model then use the averaged weights.
        augment: ``full`` (flips, 90-degree rotations, small affine warps, colour jitter),
            ``flips`` (flips and 90-degree rotations only) or ``none``.
        illuminant: strength of the random per-channel gains (0: off).
        min_scale: the affine warp's smallest scale (``full`` augmentation; drawn from
            ``Uniform(min_scale, 1.1)``): below 0.9 it also shows lesions smaller than they are.
        colour_constancy: Shades-of-Gray normalisation as the model's first layer.
        val_every: validate (and checkpoint) every this many epochs, and always at the last.
        refine: ``auto`` chooses test-time flips/rotations and post-processing on the validation
            split after training; ``none`` keeps the plain thresholded output.
        batch_norm: ``keras`` (``keras.layers.BatchNormalization``) or ``fast``
            (``kseg.layers.FastBatchNormalization``: the same function in fewer passes).
        init_from: a run folder or ``.keras`` file whose weights the run starts from, matched by
            layer name and shape (:mod:`kseg.experiment.transfer`); empty: fresh weights. The path is not
            part of the identity; ``init_source`` (the source's label and hash, filled in by
            :func:`kseg.experiment.run.resolve_config`) is.
        folds, fold: K-fold cross-validation (``folds`` >= 2): the run tests on fold ``fold``
            of the split seed's stratified order and trains and validates on the rest
            (:func:`kseg.data.fold_indices`); 0: the ``split_sizes`` split.
        encoder_weights: a pretrained encoder's starting weights (``kseg.models.build``):
            empty (random), ``imagenet`` or a local weights file, which enters the identity by
            its content's digest rather than its path.
        joint_ratio, joint_source: training on other labelled sets beside the data
            (``--joint-source``): every batch draws ``joint_ratio`` of its cases from them
            (:class:`kseg.data.SourceMixSequence`), each set split apart by its own fixed seed
            (:func:`kseg.experiment.run.joint_split`); ``joint_source`` (their labels and fingerprints,
            filled in by :func:`kseg.experiment.run.resolve_config`) is part of the identity.
        freeze_encoder_epochs, encoder_lr_factor: the encoder's weights stay fixed for the first
            ``freeze_encoder_epochs`` epochs, then learn at ``encoder_lr_factor`` times the
            learning rate (:class:`kseg.optimizers.EncoderRateAdam`); the decoder learns at the
            full rate throughout.
    """

    model: str
    loss: str
    seed: int = 0
    split_seed: int | None = None
    dataset: str = "auto"
    data_fingerprint: str = ""
    mask_suffix: str = knob("", "folder datasets: mask file stem suffix, e.g. _segmentation", group="data", parse=str)
    preset: str = "cpu"
    # The recipe label lists its parts in this order.
    image_size: int = knob(128, "training image size", parse=positive_int, label=lambda v: f"{int(v)}px", missing="?px")
    base_filters: int = knob(16, "base width", parse=positive_int, label=lambda v: f"w{int(v)}", missing="w?")
    epochs: int = knob(40, parse=positive_int, label=lambda v: f"{int(v)}ep", missing="?ep")
    schedule: str = knob(
        "plateau",
        "plateau: halve on stalls; cosine: warm-up then cosine decay",
        choices=SCHEDULES,
        label=str,
        missing="plateau",  # what rows from before kseg 0.2 used
    )
    warmup_epochs: int = knob(0, parse=int, label=_unless(0, "wu{}"))
    lr: float = knob(1e-3, "peak learning rate", parse=positive_float, label=lambda v: f"lr{float(v):g}")
    batch_size: int = knob(8, parse=positive_int, label=_unless(8, "b{}"))
    weight_decay: float = knob(0.0, "AdamW decoupled weight decay (0: Adam)", parse=float, label=_unless(0.0, "wd{:g}"))
    ema: float = knob(0.0, "EMA momentum of the weights (0: off)", parse=float, label=_unless(0.0, "ema{:g}"))
    augment: str = knob(
        "full",
        "full, flips (no affine, no colour) or none",
        choices=AUGMENTATIONS,
        label=lambda v: "" if v == "full" else f"aug={v}",
    )
    illuminant: float = knob(
        0.0, "random per-channel gains exp(U(-s, s)) (0: off)", parse=float, label=_unless(0.0, "illum{:g}")
    )
    min_scale: float = knob(
        0.9,
        "full augmentation: smallest affine scale, Uniform(s, 1.1) (default 0.9)",
        parse=float,
        label=_unless(0.9, "zoom{:g}"),
        neutral=True,
    )
    colour_constancy: bool = knob(
        False, "Shades-of-Gray normalisation as the model's first layer", label=lambda v: "sog" if _true(v) else ""
    )
    precise_bn: bool = knob(
        False,
        "after training, set every BatchNorm's moving statistics to the mean of its batch statistics over the "
        "training images (kseg.batch_norm): what a run of a few steps needs",
        label=lambda v: "precisebn" if _true(v) else "",
        neutral=True,
    )
    deep_supervision: bool = knob(
        False,
        "a loss on the decoder's side outputs too, with its declared weights (unetpp, egeunet); the saved model "
        "predicts with the final output or the heads' mean, whichever validates better",
        label=lambda v: "ds" if _true(v) else "",
        neutral=True,
    )
    refine: str = knob(
        "none",
        "auto: choose TTA and post-processing on the validation split",
        choices=REFINE_CHOICES,
        label=lambda v: "" if v == "none" else f"refine={v}",
    )
    val_every: int = knob(
        1, "validate every N epochs (and at the last)", parse=positive_int, label=_unless(1, "val/{}")
    )
    batch_norm: str = knob(
        "keras",
        "keras: keras.layers.BatchNormalization; fast: kseg's FastBatchNormalization",
        choices=BATCH_NORMS,
        label=lambda v: "fastbn" if v == "fast" else "",
    )
    folds: int = _plain(0, label=_unless(0, "cv{}"), neutral=True)
    fold: int = _plain(0, neutral=True)
    init_from: str = knob(
        "",
        "start every run from this run folder's (or .keras file's) weights, matched by layer name and "
        "shape; the source's hash is part of each run's identity",
        group="start",
        parse=str,
        metavar="PATH",
        identity=False,
        row=False,
    )
    init_source: str = _plain("", label=lambda v: f"init={str(v).split(':')[0]}", neutral=True)
    encoder_weights: str = knob(
        "",
        "a pretrained encoder's starting weights: imagenet (downloads once), a local weights file or, for a "
        "keras-hub encoder, a preset folder; default random",
        group="",
        parse=str,
        metavar="imagenet|PATH",
        label=lambda v: f"enc={str(v).split(':')[0]}",
        neutral=True,
    )
    freeze_encoder_epochs: int = knob(
        0,
        "keep the encoder's weights fixed for the first N epochs (its BatchNormalization statistics still adapt)",
        group="start",
        parse=int,
        metavar="N",
        label=_unless(0, "freeze{}"),
        neutral=True,
    )
    encoder_lr_factor: float = knob(
        1.0,
        "the encoder learns at this times the learning rate (after any --freeze-encoder-epochs)",
        group="start",
        parse=positive_float,
        label=_unless(1.0, "enclr{:g}"),
        neutral=True,
    )
    pretrain_epochs: int = knob(
        8,
        "with --pretrain-on: the pretraining's epochs (the fine-tune's identity holds the pretraining's hash)",
        group="start",
        parse=positive_int,
        metavar="N",
        identity=False,
        row=False,
    )
    joint_ratio: float = knob(
        0.0,
        "with --joint-source: the fraction of every training batch drawn from the joint sets (the rest from the "
        "data's own training part), e.g. 0.5",
        group="data",
        parse=lambda text: fraction(text, "--joint-ratio"),
        metavar="R",
        label=_unless(0.0, "mix{:g}"),
        neutral=True,
    )
    joint_source: str = _plain(
        "", label=lambda v: "joint=" + "+".join(p.split(":")[0] for p in str(v).split("+")), neutral=True
    )
    eval_size: int = 256
    depth: int = _plain(4, row=False)
    patience: int = _plain(12, row=False)
    precision: str = "auto"
    jit_compile: str | bool = "auto"
    split_sizes: tuple = knob(
        (100, 50, 50),
        "train,val,test as counts (100,50,50) or fractions (0.6,0.2,0.2); default: the preset's (100,50,50; "
        "smoke 12,6,6)",
        flag="--split",
        group="data",
        parse=_split_sizes,
    )
    synthetic_n: int = _plain(200, row=False)

    def __post_init__(self) -> None:
        # Normalise so that equal configs hash equally: a list and a tuple of sizes are one split.
        object.__setattr__(self, "split_sizes", tuple(self.split_sizes))
        if self.split_seed is None:
            object.__setattr__(self, "split_seed", self.seed)
        for name, allowed in (
            ("schedule", SCHEDULES),
            ("augment", AUGMENTATIONS),
            ("refine", REFINE_CHOICES),
            ("batch_norm", BATCH_NORMS),
        ):
            if getattr(self, name) not in allowed:
                raise unknown_name(name, getattr(self, name), allowed)
        if not 0.0 <= self.ema < 1.0:
            raise invalid_value("ema", "a momentum in [0, 1)", self.ema)
        from kseg.data.augment import check_min_scale  # here: the grid's --help loads no OpenCV

        check_min_scale(self.min_scale)
        check_folds(self.folds, self.fold)
        if self.val_every < 1:
            raise invalid_value("val_every", "at least 1", self.val_every)
        if self.freeze_encoder_epochs < 0:
            raise invalid_value("freeze_encoder_epochs", "at least 0", self.freeze_encoder_epochs)
        if not 0.0 <= self.joint_ratio < 1.0:
            raise invalid_value("joint_ratio", "a fraction in [0, 1)", self.joint_ratio)
        for name in ("lr", "encoder_lr_factor"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise invalid_value(name, "a finite number > 0", getattr(self, name))

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "RunConfig":
        if preset not in PRESETS:
            raise unknown_name("preset", preset, PRESETS)
        fields = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(preset=preset, **fields)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """Everything that decides what this run computes: every field, the Keras backend, the
        kseg version and the device (a GPU's and a CPU's float results differ).

        A knob added within a kseg version is left out while it has the value that computes what
        the version did before it existed (:data:`NEUTRAL_KNOBS`, at their field defaults), so adding it leaves
        the hashes of the runs already made, and their resumption, as they were."""
        defaults = {field.name: field.default for field in dataclasses.fields(self)}
        if self.init_from and not self.init_source:
            raise ValueError(
                f"{self.model}: init_from {self.init_from!r} needs its init_source resolved "
                "(kseg.experiment.run.resolve_config) before the config is hashed."
            )
        fields = {
            k: v
            for k, v in self.to_dict().items()
            if k not in NOT_IDENTITY and not (k in NEUTRAL_KNOBS and v == defaults[k])
        }
        if self.encoder_weights not in ("", "imagenet"):
            fields["encoder_weights"] = _path_digest(self.encoder_weights)
        import keras  # here: declaring the knobs (the grid's --help) needs no backend

        return {
            **fields,
            "backend": keras.backend.backend(),
            "kseg_version": KSEG_VERSION,
            "device": device.device_description(),
        }

    @property
    def config_hash(self) -> str:
        """12 hex digits of SHA-256 over :meth:`identity`: two rows share it exactly when they ran
        the same experiment."""
        return _hash(self.identity())

    @property
    def group_hash(self) -> str:
        """The hash of the identity minus the seeds: runs that share it are repetitions of one
        experiment, and the leaderboard's mean and spread are over them. A split that follows
        the seed (the default) leaves the group with it; a fixed ``--split-seed`` stays in it, so
        runs on one split never mix with runs over several."""
        identity = self.identity()
        identity.pop("fold", None)  # a group pools its folds: each image is scored once
        seed, split_seed = identity.pop("seed"), identity.pop("split_seed")
        if split_seed != seed:
            identity["fixed_split_seed"] = split_seed
        return _hash(identity)

    @property
    def run_id(self) -> str:
        fold = f"-fold{self.fold}" if self.folds else ""
        model = self.model.replace(":", "_")  # "fpn:resnet50" names a folder on every file system
        return f"{model}-{self.loss}-seed{self.seed}{fold}-{self.config_hash}"


def check_folds(folds: int, fold: int = 0) -> None:
    """Raises ValueError unless ``folds`` is 0 (no cross-validation) or K >= 2 with ``0 <= fold < K``."""
    if folds == 1 or folds < 0:
        raise ValueError(f"--folds expects 0 (no cross-validation) or K >= 2. Received: {folds}")
    if not 0 <= fold < max(folds, 1):
        raise invalid_value("fold", f"in [0, {max(folds, 1)}) with folds={folds}", fold)


def knobs() -> dict[str, Knob]:
    """Every RunConfig field's :class:`Knob` by name, in declaration order, each flag named."""
    found = {}
    for field in dataclasses.fields(RunConfig):
        how = field.metadata.get("knob", Knob(flag=""))
        if field.metadata.get("cli") and not how.flag:
            how = dataclasses.replace(how, flag="--" + field.name.replace("_", "-"))
        found[field.name] = how
    return found


def flag_knobs() -> dict[str, Knob]:
    """The fields the grid sets by a flag of their own (``kseg.cli`` adds one per entry)."""
    return {name: how for name, how in knobs().items() if how.flag}


# Knobs added within kseg 0.3: at their field default they compute what 0.3 did without them.
NEUTRAL_KNOBS: tuple[str, ...] = tuple(name for name, how in knobs().items() if how.neutral)
# Where a source's weights are on this machine: its identity is ``init_source``, not its path.
NOT_IDENTITY: tuple[str, ...] = tuple(name for name, how in knobs().items() if not how.identity)
# The config fields a row repeats, so the leaderboard and its ablations read without config.json.
ROW_FIELDS: tuple[str, ...] = tuple(name for name, how in knobs().items() if how.row)


def _path_digest(path: str) -> str:
    """ "sha256:" and 12 hex digits of a file's bytes, or of a folder's files (a keras-hub preset)
    with their relative paths; once per file version."""
    if not os.path.isdir(path):
        stat = os.stat(path)
        return _cached_file_digest(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}:{_path_digest(str(file))}".encode())
    return "sha256:" + digest.hexdigest()[:12]


@functools.lru_cache(maxsize=16)
def _cached_file_digest(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:12]


def _hash(payload: dict[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


__all__ = [
    "PRESETS",
    "PRECISIONS",
    "SCHEDULES",
    "AUGMENTATIONS",
    "REFINE_CHOICES",
    "BATCH_NORMS",
    "NEUTRAL_KNOBS",
    "NOT_IDENTITY",
    "ROW_FIELDS",
    "Knob",
    "knob",
    "knobs",
    "flag_knobs",
    "check_folds",
    "positive_int",
    "positive_float",
    "fraction",
    "RunConfig",
    "resolve_precision",
    "resolve_jit_compile",
]
