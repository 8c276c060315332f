"""What a run record says about where it ran: library versions, device, git commit, peak memory."""

from __future__ import annotations

import os
import platform
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import psutil

_PACKAGES = ("scrapbench", "torch", "torchvision", "open_clip_torch", "ultralytics", "segment-anything",
             "anomalib", "schedulefree", "numpy", "scipy", "pandas")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: str) -> dict[str, object]:
    import torch

    info: dict[str, object] = {"device": device, "platform": platform.platform(),
                               "cpu_count": psutil.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def git_commit() -> str | None:
    """The commit of the scrapbench checkout, when it is one (an installed wheel has none)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class PeakMemory:
    """Samples this process's resident memory in a thread; ``peak_mb`` is the maximum seen.

    ``ru_maxrss`` only reports the whole process's lifetime peak, so it cannot tell runs apart.
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        self._process = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_bytes = self._process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


@contextmanager
def restored_environ(*keys: str) -> Iterator[None]:
    """Put the named environment variables back as they were (or unset) when the block ends."""
    saved = {key: os.environ.get(key) for key in keys}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
