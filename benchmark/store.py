"""Results on disk: atomic writes and the layout of a results folder.

    OUT/<dataset>/<preset>/<method>/seed<k>/
        run.json        # written last: its presence marks a finished run
        metrics.json    # pooled pixel metrics (+ image-level, breakdowns)
        per_image.csv   # one row per test image
        maps.npz        # optional: anomaly maps as float16
        model/          # fitted state (method.json + state.safetensors + state.json), for `scrapbench predict`
        work/           # the method's scratch space (training artefacts)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_dir(out: str | Path, dataset: str, preset: str, method: str, seed: int) -> Path:
    return Path(out) / dataset / preset / method / f"seed{seed}"


def is_finished(directory: Path) -> bool:
    return (directory / "run.json").is_file()


def iter_run_records(out: str | Path):
    """Yield (run folder, run.json content) for every finished run below ``out``."""
    for path in sorted(Path(out).glob("**/run.json")):
        try:
            yield path.parent, json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: corrupt run record ({exc}); delete the folder to recompute") from exc
