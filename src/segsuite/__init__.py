"""segsuite: a semantic-segmentation experiment suite on PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
