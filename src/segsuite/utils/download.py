"""Files named by URL: downloaded once into torch.hub's cache and checked against their sha256.

Pretrained backbones (`pretrained: imagenet` or a URL) and zoo entries with a `url` come through
here. The cache is torch.hub's (`$TORCH_HOME/hub/checkpoints`, default `~/.cache/torch/hub/checkpoints`),
so a file torchvision already downloaded is reused. The expected hash is the full sha256 where a
record gives one (zoo entries), else the prefix torch.hub's file names carry
(`resnet50-0676ba61.pth`: the sha256 starts with `0676ba61`). The check runs on every use, not only
after a download, so a truncated or replaced cache file is refused. Offline, the error names the URL
and the cache path to put the file in.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# torch.hub's convention: `<name>-<first hex digits of the sha256>.<ext>`
HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


def is_url(text: str) -> bool:
    """Whether `text` is a URL this module downloads (http, https, or file for local copies)."""
    return str(text).startswith(("http://", "https://", "file://"))


def cache_path(url: str) -> Path:
    """Where `url`'s file lies in torch.hub's cache (read from `$TORCH_HOME` at each call)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def hash_in_name(url: str) -> str | None:
    """The sha256 prefix in the file name of `url` (torch.hub's convention), or None."""
    found = HASH_IN_NAME.search(os.path.basename(url.split("?")[0]))
    return found.group(1) if found else None


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_download(url: str, what: str, sha256: str | None = None) -> Path:
    """The local copy of `url` in torch.hub's cache, downloaded if absent, its hash checked.

    `sha256` is the expected hash (full or a prefix); None takes the prefix from the file name, and
    a name without one is not checked. `what` names the setting in errors (e.g. `pretrained=imagenet`).
    Offline (or any failed download) raises FileNotFoundError naming the URL and the cache path to
    put the file in; a file whose hash differs raises ValueError (a fresh download is removed, a
    file already in the cache is left for you to replace).
    """
    target = cache_path(url)
    expected = (sha256 or hash_in_name(url) or "").lower()
    fresh = not target.is_file()
    if fresh:
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s to %s", url, target)
        try:  # torch.hub writes a temp file beside the target and renames it: no partial file is left
            torch.hub.download_url_to_file(url, str(target), progress=True)
        except (OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise FileNotFoundError(f"{what}: cannot download {url} ({reason}); without network, put that file at "
                                    f"{target} (torch.hub's cache, under $TORCH_HOME) and run again") from None
    if expected:
        actual = sha256_of(target)
        if not actual.startswith(expected):
            if fresh:
                target.unlink(missing_ok=True)
                raise ValueError(f"{what}: the file downloaded from {url} has sha256 {actual}, not one "
                                 f"starting with {expected}; it was removed: try again, or check the URL")
            raise ValueError(f"{what}: {target} has sha256 {actual}, but the file of {url} has one starting "
                             f"with {expected}; the cached file is damaged or another one: delete it (it is "
                             f"downloaded again) or put the file from {url} there")
    return target
