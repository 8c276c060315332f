"""``.npz`` archives keyed by any name: a test image's id, however it is spelt, round-trips.

``np.savez_compressed(file, **arrays)`` takes the names as keyword arguments, so an image called
``file.png`` collides with the ``file`` argument and one called ``allow_pickle.png`` is swallowed by
that option. :func:`npz_bytes` writes the same archive (member ``<name>.npy`` per array, compressed,
the bytes ``savez_compressed`` would write) without passing names as arguments, so archives written
before read the same. ``np.load`` maps ``a.npy`` to the member of ``a`` when both names exist;
:func:`read_npz` looks every name up by its exact member.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

_SUFFIX = ".npy"


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """A compressed ``.npz`` archive of ``arrays`` under their names, as ``np.savez_compressed`` lays it out."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for name, value in arrays.items():
            if not isinstance(name, str) or "\0" in name:
                raise ValueError(f"{name!r} cannot name an array in an .npz archive")
            with archive.open(name + _SUFFIX, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    return buffer.getvalue()


class NpzArchive(Mapping[str, np.ndarray]):
    """The arrays of an open ``.npz`` file by exact name, each read (never unpickled) when asked for."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self._zip = archive
        self.files = [n[: -len(_SUFFIX)] for n in archive.namelist() if n.endswith(_SUFFIX)]

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            info = self._zip.getinfo(name + _SUFFIX)
        except KeyError:
            raise KeyError(f"{name!r} is not in {self._zip.filename}") from None
        with self._zip.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


@contextmanager
def read_npz(path: str | Path) -> Iterator[NpzArchive]:
    """Open an ``.npz`` archive (written by :func:`npz_bytes` or by numpy) for reading by name."""
    with zipfile.ZipFile(path) as archive:
        yield NpzArchive(archive)
