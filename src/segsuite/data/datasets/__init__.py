"""One module per dataset; every dataset follows the item contract of `SegDataset`."""

from segsuite.data.datasets.base import DatasetError, SegDataset
from segsuite.data.datasets.synthetic import SyntheticShapes

__all__ = ["DatasetError", "SegDataset", "SyntheticShapes"]
from segsuite.data.datasets.folder import FolderDataset, ImageMaskDataset  # noqa: E402
from segsuite.data.datasets.camvid import CamVid  # noqa: E402
from segsuite.data.datasets.voc import VOCSegmentation  # noqa: E402
from segsuite.data.datasets.cityscapes import Cityscapes  # noqa: E402
from segsuite.data.datasets.ade20k import ADE20K  # noqa: E402
from segsuite.data.datasets.cocostuff import CocoStuff10k, CocoStuff164k  # noqa: E402

__all__ += ["ADE20K", "CamVid", "Cityscapes", "CocoStuff10k", "CocoStuff164k", "FolderDataset",
            "ImageMaskDataset", "VOCSegmentation"]
