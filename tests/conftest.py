"""Shared fixtures (the smoke-sized synthetic dataset, generated once per test session) and the test order.

`make test` runs the suite on two pytest-xdist workers, one test file per work unit (``--dist loadfile``).
Files that hold a ``slow`` test are handed out first, so that the long end-to-end runs start at once
instead of leaving one worker busy at the end while the other idles.
"""

from __future__ import annotations

import os

import pytest

# Tests never reach the network: weights must come from files the tests write themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
# Sleeping (not spinning) OpenMP threads: see benchmark/cli/main.py; set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, files with a ``slow`` test go first; the order inside each file is kept."""
    if not hasattr(config, "workerinput"):  # a plain (one-process) run keeps pytest's own order
        return
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: same-file tests stay together, in order


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Tests never write into the user's scrapbench cache (synthetic data, remembered file checks)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCRAPBENCH_CACHE", str(tmp_path_factory.mktemp("scrapbench_cache")))
        yield


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory):
    from scrapbench.datasets import load_dataset

    return load_dataset("synthetic", preset="smoke", seed=0, cache_dir=tmp_path_factory.mktemp("synth_cache"))


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory):
    """A tiny random CLIP saved the way users save open_clip weights: (path, state_dict)."""
    import torch

    from scrapbench.methods.common.clip_weights import load_clip

    model = load_clip("scrapbench-vit-tiny", None, 64, init_seed=123).model
    path = tmp_path_factory.mktemp("weights") / "tiny_clip.pt"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


@pytest.fixture
def one_thread():
    """This process with the torch threads of a worker that computes with one (the thread count is in the identity)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(where)``: from now on, writing a file whose path ``where`` accepts fails as on a full disk
    (the file is created, then writing it raises ENOSPC without a file name, as ``write`` does)."""
    import errno
    from pathlib import Path

    def fill(where):
        for name in ("write_bytes", "write_text"):
            original = getattr(Path, name)

            def failing(self, data, *args, _original=original, **kwargs):
                if not where(self):
                    return _original(self, data, *args, **kwargs)
                open(self, "wb").close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(Path, name, failing)

    return fill
