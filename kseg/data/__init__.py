"""Datasets for kseg: PH2, image/mask folders and a synthetic dermoscopy set.

Every loader returns a :class:`SegmentationDataset` of float32 images in [0, 1] and float32
masks that are exactly 0 or 1; :func:`split` makes seeded, stratified train/val/test parts and
:class:`SegmentationSequence` batches them (with augmentation) for ``model.fit``;
:class:`SourceMixSequence` draws each batch from several sets by fixed shares.
"""

from typing import TYPE_CHECKING

from kseg._lazy import loader
from kseg.data.augment import augment_pair
from kseg.data.cache import cache_dir
from kseg.data.dataset import SegmentationDataset, concatenate
from kseg.data.folder import load_folder
from kseg.data.io import IMAGE_EXTENSIONS, read_image, read_mask
from kseg.data.load import LOADERS, load_dataset
from kseg.data.ph2 import download_ph2, find_ph2, load_ph2
from kseg.data.split import Split, fold_indices, load_split, parse_split_sizes, save_split, split, split_indices
from kseg.data.synthetic import synthetic

if TYPE_CHECKING:  # for type checkers; at run time loaded on first use (below)
    from kseg.data.sequence import SegmentationSequence, SourceMixSequence, batch_shares

# The batches subclass keras.utils.PyDataset: loaded on first use, so that reading data starts no backend.
__getattr__, __dir__ = loader(
    __name__,
    {name: "kseg.data.sequence" for name in ("sequence", "SegmentationSequence", "SourceMixSequence", "batch_shares")},
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "LOADERS",
    "SegmentationDataset",
    "SegmentationSequence",
    "SourceMixSequence",
    "batch_shares",
    "Split",
    "augment_pair",
    "cache_dir",
    "concatenate",
    "download_ph2",
    "find_ph2",
    "load_dataset",
    "load_folder",
    "load_ph2",
    "load_split",
    "read_image",
    "read_mask",
    "save_split",
    "parse_split_sizes",
    "split",
    "split_indices",
    "fold_indices",
    "synthetic",
]
