"""Build Pascal VOC "aug" labels from the SBD release: SegmentationClassAug/ and train_aug.txt.

    segsuite-prepare-voc-aug --sbd data/benchmark_RELEASE --voc data/VOCdevkit/VOC2012

Writes `<voc>/SegmentationClassAug/<id>.png` (grey PNG, value = class 0..20, 255 = ignore) for every
SBD image (from `dataset/cls/<id>.mat`, field `GTcls.Segmentation`) and every VOC train/val image
(the official VOC label wins where both exist), and `<voc>/ImageSets/Segmentation/train_aug.txt` =
(SBD train + SBD val + VOC train) - VOC val, sorted (10,582 ids for the official releases).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from tqdm import tqdm

SBD_DOWNLOAD = "http://home.bharathh.info/pubs/codes/SBD/download.html (benchmark.tgz)"
VOC_DOWNLOAD = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar)"


class PrepareError(RuntimeError):
    """An input file or folder is missing or unreadable."""


def read_ids(path: Path, download: str) -> list[str]:
    """Ids listed one per line in `path`."""
    if not path.is_file():
        raise PrepareError(f"{path} not found; download and extract {download}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def read_sbd_label(path: Path) -> np.ndarray:
    """`GTcls.Segmentation` of an SBD .mat file as uint8 [H, W]."""
    try:
        content = scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=True)
        segmentation = np.asarray(content["GTcls"].Segmentation)
    except FileNotFoundError as err:
        raise PrepareError(f"{path} not found; is the SBD release complete? ({SBD_DOWNLOAD})") from err
    except Exception as err:
        raise PrepareError(f"{path}: cannot read GTcls.Segmentation ({type(err).__name__}: {err})") from err
    if segmentation.ndim != 2 or segmentation.size == 0 or segmentation.max() > 255 or segmentation.min() < 0:
        raise PrepareError(f"{path}: GTcls.Segmentation has shape {segmentation.shape}; "
                           "expected a 2-D label map 0..255")
    return segmentation.astype(np.uint8)


def read_voc_label(path: Path) -> np.ndarray:
    """Class indices of a VOC palette PNG (the palette index is the class)."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode != "P":
            raise PrepareError(f"{path}: expected a palette (mode P) PNG, got mode {image.mode}")
        return np.array(image)


def train_aug_ids(sbd_train: list[str], sbd_val: list[str], voc_train: list[str], voc_val: list[str]) -> list[str]:
    """(SBD train + SBD val + VOC train) - VOC val, sorted."""
    return sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - set(voc_val))


def prepare(sbd: Path, voc: Path, progress: bool = True) -> tuple[int, int]:
    """Write SegmentationClassAug/ and train_aug.txt under `voc`; return (labels written, train_aug size)."""
    sbd_dataset = sbd / "dataset"
    for folder, download in ((sbd_dataset / "cls", SBD_DOWNLOAD), (voc / "SegmentationClass", VOC_DOWNLOAD),
                             (voc / "JPEGImages", VOC_DOWNLOAD)):
        if not folder.is_dir():
            raise PrepareError(f"{folder} not found; download and extract {download}")
    lists = voc / "ImageSets" / "Segmentation"
    sbd_train, sbd_val = (read_ids(sbd_dataset / "train.txt", SBD_DOWNLOAD),
                          read_ids(sbd_dataset / "val.txt", SBD_DOWNLOAD))
    voc_train, voc_val = read_ids(lists / "train.txt", VOC_DOWNLOAD), read_ids(lists / "val.txt", VOC_DOWNLOAD)
    out_dir = voc / "SegmentationClassAug"
    out_dir.mkdir(exist_ok=True)
    voc_ids = set(voc_train) | set(voc_val)
    all_ids = sorted(set(sbd_train) | set(sbd_val) | voc_ids)
    for image_id in tqdm(all_ids, desc="SegmentationClassAug", unit="label", disable=not progress):
        if image_id in voc_ids:
            label = read_voc_label(voc / "SegmentationClass" / f"{image_id}.png")
        else:
            label = read_sbd_label(sbd_dataset / "cls" / f"{image_id}.mat")
        if not cv2.imwrite(str(out_dir / f"{image_id}.png"), label):
            raise PrepareError(f"cannot write {out_dir / f'{image_id}.png'}")
    train_aug = train_aug_ids(sbd_train, sbd_val, voc_train, voc_val)
    missing = [i for i in train_aug if not (voc / "JPEGImages" / f"{i}.jpg").is_file()]
    if missing:
        raise PrepareError(f"{len(missing)} train_aug images are not in {voc / 'JPEGImages'} (e.g. {missing[:3]}); "
                           f"is this the VOC2012 release?")
    (lists / "train_aug.txt").write_text("".join(f"{i}\n" for i in train_aug))
    return len(all_ids), len(train_aug)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sbd", type=Path, required=True, help="SBD benchmark_RELEASE folder (holds dataset/cls/)")
    parser.add_argument("--voc", type=Path, required=True, help="VOCdevkit/VOC2012 folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        written, size = prepare(args.sbd, args.voc, progress=not args.no_progress)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {written} labels to {args.voc / 'SegmentationClassAug'} and "
          f"{size} ids to {args.voc / 'ImageSets/Segmentation/train_aug.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
