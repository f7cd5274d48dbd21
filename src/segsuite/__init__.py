"""segsuite: a semantic-segmentation experiment suite on PyTorch Lightning and Hydra.

`segsuite.load(name_or_path, device=..., tta=...)` returns a predictor for a zoo name, a checkpoint
file or a run directory (`segsuite.prediction.load`); it is imported on first use, so
`import segsuite` stays light.
"""

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def __getattr__(name: str) -> object:
    if name == "load":
        from segsuite.prediction import load

        return load
    raise AttributeError(f"module 'segsuite' has no attribute {name!r}")
