"""File digests and the checksums that publishers of official weights actually publish.

Nothing here is invented: each rule reads a checksum from where its publisher puts it.

- OpenAI CLIP: the SHA-256 is a path segment of the download URL (``…/models/<sha256>/ViT-L-14-336px.pt``);
  open_clip checks it the same way when it downloads.
- torchvision (torch.hub) and open_clip's GitHub releases: the file name ends in ``-<hex>.<ext>``, the
  first hex digits of the file's SHA-256 (torch.hub's ``check_hash``; open_clip's downloader).
- Segment Anything: the file name ends in ``_<hex>.pth``, the first six hex digits of the file's MD5.
- Hugging Face: the cache keeps an LFS file as ``blobs/<etag>``; an LFS etag is the file's SHA-256.

A prefix of six or eight hex digits proves integrity (a truncated or corrupt download), not origin.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

_CHUNK = 8 << 20
_digests: dict[tuple[str, int, int, str], str] = {}


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks; remembered per (path, size, mtime) within a process."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, algorithm)
    if key not in _digests:
        digest = hashlib.new(algorithm)
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


@dataclass(frozen=True)
class PublishedChecksum:
    """A checksum (or its leading hex digits) as its publisher states it, and where it was read."""

    algorithm: str  # "sha256" or "md5"
    value: str  # full hex digest or a prefix of it
    source: str  # e.g. "the OpenAI download URL"
    file_name: str | None = None  # the official file name, when the rule comes from one

    def matches(self, path: str | Path) -> bool:
        return file_digest(path, self.algorithm).startswith(self.value)

    def describe(self) -> str:
        kind = self.algorithm.upper() if len(self.value) in (32, 64) else f"{self.algorithm.upper()} prefix"
        return f"{kind} {self.value} ({self.source})"


_OPENAI_URL = re.compile(r"/clip/models/([0-9a-f]{64})/[^/]+$")
_HASH_SUFFIX = re.compile(r"-([0-9a-f]{6,64})\.[A-Za-z0-9]+$")  # torch.hub's HASH_REGEX, anchored
_SAM_SUFFIX = re.compile(r"^sam_vit_[hlb]_([0-9a-f]{6})\.pth$")


def checksum_from_url(url: str) -> PublishedChecksum | None:
    """The checksum an official download URL carries, if its publisher puts one there."""
    parsed = urlparse(url)
    name = os.path.basename(parsed.path)
    if parsed.hostname and parsed.hostname.startswith("openaipublic") and (m := _OPENAI_URL.search(parsed.path)):
        return PublishedChecksum("sha256", m.group(1), "the OpenAI download URL", name)
    if parsed.hostname == "dl.fbaipublicfiles.com" and (m := _SAM_SUFFIX.match(name)):
        return PublishedChecksum("md5", m.group(1), "the Segment Anything file name", name)
    if parsed.hostname in ("download.pytorch.org", "github.com") and (m := _HASH_SUFFIX.search(name)):
        publisher = "torchvision" if parsed.hostname == "download.pytorch.org" else "GitHub release"
        return PublishedChecksum("sha256", m.group(1), f"the {publisher} file name", name)
    return None


def hugging_face_etag(path: str | Path) -> PublishedChecksum | None:
    """The SHA-256 a Hugging Face cache entry is stored under (``…/blobs/<sha256>``), if it is one."""
    path = Path(path)
    if not path.is_symlink():
        return None
    target = path.resolve()
    if target.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", target.name):
        return PublishedChecksum("sha256", target.name, "the Hugging Face etag")
    return None


def checksum_verdict(path: str | Path, published: PublishedChecksum | None, binding: bool) -> tuple[bool, str]:
    """(acceptable, text) for a file against a published checksum.

    ``binding``: the file claims to be the published one (it came by tag, or carries the official
    file name), so a mismatch means a corrupt or substituted file. Otherwise the comparison only says
    whether the file is the official release.
    """
    if published is None:
        return True, "none published"
    if published.matches(path):
        return True, f"= {published.describe()}"
    if binding:
        actual = file_digest(path, published.algorithm)
        return False, (f"≠ {published.describe()}: the file's {published.algorithm.upper()} is {actual}; "
                       f"re-download it (a corrupt or different file)")
    return True, f"not the official file ({published.describe()})"
