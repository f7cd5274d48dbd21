"""Write a PNG grid of (augmented) samples: image, coloured mask, and a legend of the classes shown.

    segsuite-browse dataset=voc [dataset.root=...] [split=train] [num=8] [augment=true]
                    [seed=0] [out=browse_<dataset>_<split>.png]

(or `python -m segsuite.tools.browse_dataset ...`). `augment=true` applies the training pipeline of
conf/augmentation/default.yaml (with the dataset's crop size); `augment=false` shows the files as loaded.
Ignored pixels (255) are drawn white.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from hydra.utils import instantiate

from segsuite.tools.verify_dataset import SCRIPT_KEYS, build_dataset, compose_dataset_config, parse_args
from segsuite.utils.visualize import colorize, denormalise


def render(samples: list[tuple[np.ndarray, np.ndarray, str]], classes, palette, ignore_index: int, out: Path) -> Path:
    """Grid of `samples` (image uint8 HWC, mask int, name): image and mask side by side per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt

    rows = len(samples)
    fig, axes = plt.subplots(rows, 2, figsize=(8, 2.6 * rows + 0.8), squeeze=False)
    present: set[int] = set()
    for row, (image, mask, name) in enumerate(samples):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(name, fontsize=8)
        axes[row, 1].imshow(colorize(mask, palette, ignore_index), interpolation="nearest")
        present |= set(np.unique(mask).tolist())
        for ax in axes[row]:  # keep the frame: padding (ignore) is white like the page
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [mpatches.Patch(color=np.asarray(palette[k]) / 255.0, label=f"{k} {classes[k]}")
               for k in sorted(present) if k < len(classes)]
    if ignore_index in present:
        handles.append(mpatches.Patch(facecolor="white", edgecolor="black", label=f"{ignore_index} ignore"))
    fig.legend(handles=handles, loc="lower center", ncol=min(4, max(1, len(handles))), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.012 * (len(handles) // 4), 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    name, options, overrides = parse_args(sys.argv[1:] if argv is None else argv, __doc__)
    options = {**SCRIPT_KEYS, **options}
    cfg = compose_dataset_config(name, overrides)
    augment = options["augment"].lower() in ("1", "true", "yes")
    transform = instantiate(cfg.augmentation.train) if augment else None
    dataset = build_dataset(cfg, options["split"], transform=transform)
    rng = np.random.default_rng(int(options["seed"]))
    count = min(int(options["num"]), len(dataset))
    samples = []
    for index in rng.choice(len(dataset), size=count, replace=False):
        item = dataset[(int(index), int(options["seed"]) + int(index))]
        image = item["image"].numpy() if augment else item["image"]
        mask = item["mask"].numpy() if augment else item["mask"]
        if augment:
            image = denormalise(image, cfg.dataset.mean, cfg.dataset.std)
        samples.append((image, mask, item["name"]))
    out = Path(options["out"] or f"browse_{cfg.dataset.name}_{options['split']}.png")
    render(samples, dataset.classes, dataset.palette, dataset.ignore_index, out)
    print(f"wrote {out} ({count} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
