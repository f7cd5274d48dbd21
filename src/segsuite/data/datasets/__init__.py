"""One module per dataset; every dataset follows the item contract of `SegDataset`."""

from segsuite.data.datasets.base import DatasetError, SegDataset
from segsuite.data.datasets.synthetic import SyntheticShapes

__all__ = ["DatasetError", "SegDataset", "SyntheticShapes"]
from segsuite.data.datasets.ade20k import ADE20K
from segsuite.data.datasets.camvid import CamVid
from segsuite.data.datasets.cityscapes import Cityscapes
from segsuite.data.datasets.cocostuff import CocoStuff10k, CocoStuff164k
from segsuite.data.datasets.folder import FolderDataset, ImageMaskDataset
from segsuite.data.datasets.voc import VOCSegmentation

__all__ += ["ADE20K", "CamVid", "Cityscapes", "CocoStuff10k", "CocoStuff164k", "FolderDataset",
            "ImageMaskDataset", "VOCSegmentation"]
