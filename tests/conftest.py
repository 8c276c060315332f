"""Shared fixtures: the smoke-sized synthetic dataset, generated once per test session."""

from __future__ import annotations

import os

import pytest

# Tests never reach the network: weights must come from files the tests write themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
# Sleeping (not spinning) OpenMP threads: see benchmark/cli.py; set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory):
    from scrapbench.datasets import load_dataset

    return load_dataset("synthetic", preset="smoke", seed=0, cache_dir=tmp_path_factory.mktemp("synth_cache"))
