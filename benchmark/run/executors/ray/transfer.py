"""What crosses between the Ray driver and its workers: where a worker gets the dataset, run folders as archives."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scrapbench.datasets.types import Dataset
from scrapbench.run.executors import ExecutorError


@dataclass(frozen=True)
class DataSource:
    """How a worker gets the dataset: ``regenerated`` (synthetic) or ``read`` from ``spec``, or ``shipped``."""

    mode: str
    spec: str
    preset: str
    seed: int
    fingerprint: str
    layout: str  # digest of the splits' ids: a worker's dataset must have the driver's splits too
    shipped: Any = None  # ObjectRef of the in-memory dataset when shipped


def absolute_spec(spec: str) -> str:
    """A dataset spec whose folder is absolute, so that workers with another working folder find it."""
    from scrapbench.datasets.resolve import parse_benchmark_spec

    if spec == "synthetic":
        return spec
    parsed = parse_benchmark_spec(spec)
    if parsed is None:
        return str(Path(spec).resolve())
    categories = f"#{','.join(parsed.categories)}" if parsed.categories else ""
    return f"{parsed.kind}:{parsed.root.resolve()}{categories}"


def spec_path(spec: str) -> Path:
    """The folder a dataset spec reads (``mvtec:ROOT#cat`` → ROOT)."""
    from scrapbench.datasets.resolve import parse_benchmark_spec

    parsed = parse_benchmark_spec(spec)
    return Path(parsed.root if parsed is not None else spec).resolve()


def rearranged(dataset: Dataset) -> bool:
    """Whether the driver rearranged the splits (``scrapbench.datasets.protocols``): no spec reopens them."""
    return any(isinstance(dataset.notes.get(key), dict) for key in ("training", "supervised_split"))


def layout(dataset: Dataset) -> str:
    """Digest of the splits as the runs see them: names, image ids, which are anomalous."""
    digest = hashlib.sha256()
    for split in (dataset.train, dataset.test):
        digest.update(json.dumps([split.name, list(split.ids), list(split.has_anomaly)]).encode())
    return digest.hexdigest()


def pack(folder: Path) -> bytes:
    """``folder``'s files and folders as an uncompressed tar archive (a link is refused: it is not shipped)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                raise ExecutorError(f"{path}: a run folder holds a symbolic link, which is not shipped")
            archive.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return buffer.getvalue()


def unpack(data: bytes, folder: Path) -> None:
    """Extract an archive made by :func:`pack` into ``folder``: only plain files and folders, all inside it.

    By hand rather than ``TarFile.extractall(filter="data")``: that filter still extracts links that stay
    inside the folder (a run folder has none, so any is refused here), and it is missing from Python
    releases this project supports (3.10 before 3.10.12)."""
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
        for member in archive.getmembers():
            target = (root / member.name).resolve()
            if not (member.isfile() or member.isdir()) or root not in (target, *target.parents):
                raise ExecutorError(f"refused archive entry {member.name!r} from a worker")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            with source, open(target, "wb") as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
