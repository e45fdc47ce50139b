"""The data a grid shares: its main set (``--dataset``/``--data-dir``), the sets joined to it
(``--add-source``), trained on beside it (``--joint-source``) and scored after training
(``--external``), each loaded once per process at each size, and the split of a config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from kseg.data import SegmentationDataset, Split, concatenate, fold_indices, load_dataset, split_indices
from kseg.experiment import leaderboard, transfer
from kseg.experiment.config import RunConfig


class DataCache:
    """Loads each (dataset, size) once per process; the loaders' disk cache makes reloads cheap.
    What ``kseg.experiment.run.run_one`` and ``kseg.experiment.grid.run_grid`` read their data from; the grid makes one
    from ``--dataset``, ``--data-dir``, ``--mask-suffix``, ``--external``, ``--add-source`` and
    ``--joint-source``::

        from kseg.experiment.sources import DataCache
        data = DataCache("synthetic", None)                              # the built-in set
        data = DataCache("ph2", "../shared/data/ph2")                    # PH2 (None: its usual places)
        data = DataCache("folder", "data/isic", "_segmentation")         # images/ + masks/ folders
        data = DataCache("ph2", None, externals=[("data/isic", "_segmentation")])  # also scored on ISIC
        data = DataCache("ph2", None, joint=[("data/isic-train", "_segmentation")])  # also trained on ISIC
        parts, targets = data.parts(config)   # a RunConfig's split at its training and evaluation sizes

    Args:
        kind: a loader's name in :data:`kseg.data.LOADERS` (``auto``, ``ph2``, ``synthetic``,
            ``folder``, ...; :func:`kseg.data.load_dataset`).
        path: the data's folder (``None``: PH2's usual places, or the synthetic set).
        mask_suffix: folder datasets: the masks' file-stem suffix (``_segmentation`` for ISIC).
        externals: ``(folder, mask_suffix)`` of labelled sets (``images/`` + ``masks/``, or PH2)
            that every run is also scored on after training (``--external``): not part of a
            run's identity, since they change nothing it computes.
        sources: ``(folder, mask_suffix)`` of labelled sets joined to the data (``--add-source``):
            every part of the split then holds each source in proportion
            (:func:`kseg.data.concatenate`); the joined data's name and fingerprint are the run's.
        joint: ``(folder, mask_suffix)`` of labelled sets trained on beside the data
            (``--joint-source``), each split apart by its own fixed seed (:meth:`joint_parts`):
            a ``joint_ratio`` share of every batch comes from their training parts, their
            validation parts join the data's, and their test parts are scored on their own.
    """

    def __init__(
        self,
        kind: str,
        path: str | Path | None,
        mask_suffix: str = "",
        externals: Sequence[tuple[str, str]] = (),
        sources: Sequence[tuple[str, str]] = (),
        joint: Sequence[tuple[str, str]] = (),
    ):
        self.kind, self.path, self.mask_suffix = kind, path, mask_suffix
        self.externals = [(str(folder), suffix) for folder, suffix in externals]
        self.sources = [(str(folder), suffix) for folder, suffix in sources]
        self.joint = [(str(folder), suffix) for folder, suffix in joint]
        self._loaded: dict[tuple, SegmentationDataset] = {}

    def spec(self, absolute: bool = False) -> dict:
        """The arguments that rebuild this cache in another process (``DataCache(**spec)``);
        ``absolute`` paths for a worker whose working directory differs."""
        where = (lambda p: str(Path(p).absolute())) if absolute else str
        return dict(
            kind=self.kind,
            path=None if self.path is None else where(self.path),
            mask_suffix=self.mask_suffix,
            externals=[(where(f), s) for f, s in self.externals],
            sources=[(where(f), s) for f, s in self.sources],
            joint=[(where(f), s) for f, s in self.joint],
        )

    def resolve(self, size: int, synthetic_n: int = 200) -> str:
        """Loads once to learn which dataset ``auto`` means here; returns the data's name."""
        main = self._main(size, synthetic_n).name
        if self.kind == "auto":
            self.kind = main
        return self.get(size, synthetic_n).name

    def _main(self, size: int, synthetic_n: int) -> SegmentationDataset:
        key = ("main", size, synthetic_n)
        if key not in self._loaded:
            self._loaded[key] = load_dataset(
                self.kind,
                path=self.path,
                image_size=size,
                mask_suffix=self.mask_suffix,
                n=synthetic_n,
            )
        return self._loaded[key]

    def get(self, size: int, synthetic_n: int = 200) -> SegmentationDataset:
        """The data at ``size``: the main set, joined with the added sources if any."""
        main = self._main(size, synthetic_n)
        if not self.sources:
            return main
        key = ("joined", size, synthetic_n)
        if key not in self._loaded:
            added = [self.external(folder, suffix, size) for folder, suffix in self.sources]
            self._loaded[key] = concatenate(
                [main, *added], names=[main.name, *(leaderboard.folder_label(f) for f, _ in self.sources)]
            )
        return self._loaded[key]

    def external(self, folder: str, mask_suffix: str, size: int) -> SegmentationDataset:
        key = ("external", folder, mask_suffix, size)
        if key not in self._loaded:
            # auto: a folder with images/ and masks/, or PH2 in either layout.
            self._loaded[key] = load_dataset("auto", path=folder, image_size=size, mask_suffix=mask_suffix)
        return self._loaded[key]

    def fingerprint(self, config: RunConfig) -> str:
        """Fingerprint of the data a config trains and is scored on (both sizes)."""
        sizes = dict.fromkeys((config.image_size, config.eval_size))
        return "-".join(self.get(size, config.synthetic_n).fingerprint()[:8] for size in sizes)

    def parts(self, config: RunConfig) -> tuple[Split, Split]:
        """The config's split at the training size and at the evaluation size: one split (by
        ``split_seed``), applied to the data loaded at both sizes."""
        train_size = self.get(config.image_size, config.synthetic_n)
        eval_size = self.get(config.eval_size, config.synthetic_n)
        if config.folds:
            indices = fold_indices(train_size, config.split_seed, config.folds, config.fold, config.split_sizes)
        else:
            indices = split_indices(train_size, seed=config.split_seed, sizes=config.split_sizes)
        return (Split(*(train_size.subset(i) for i in indices)), Split(*(eval_size.subset(i) for i in indices)))

    def joint_parts(self, config: RunConfig) -> dict[str, tuple[Split, Split]]:
        """Each ``--joint-source`` set's split at the training and the evaluation size, by its
        label. A joint set is split by :data:`kseg.experiment.transfer.PRETRAIN_SEED` and
        :data:`kseg.experiment.transfer.PRETRAIN_SPLIT` whatever the run's seed: the same parts as a
        pretraining on it, so its test part stays unseen by both and every seed shares it."""
        parts = {}
        for folder, suffix in self.joint:
            train_size = self.external(folder, suffix, config.image_size)
            eval_size = self.external(folder, suffix, config.eval_size)
            indices = split_indices(train_size, seed=transfer.PRETRAIN_SEED, sizes=transfer.PRETRAIN_SPLIT)
            parts[leaderboard.folder_label(folder)] = (
                Split(*(train_size.subset(i) for i in indices)),
                Split(*(eval_size.subset(i) for i in indices)),
            )
        return parts

    def joint_identity(self, config: RunConfig) -> str:
        """``label:fingerprint`` of each joint set, ``+``-joined: the config's ``joint_source``."""
        return "+".join(
            f"{leaderboard.folder_label(folder)}:{self.external(folder, suffix, config.image_size).fingerprint()[:8]}"
            for folder, suffix in self.joint
        )


__all__ = ["DataCache"]
