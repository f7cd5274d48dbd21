"""Segmentation architectures and their backbones (built from `conf/model/*.yaml`)."""

from segsuite.models.base import SegmentationModel, pad_to_multiple

__all__ = ["SegmentationModel", "pad_to_multiple"]
