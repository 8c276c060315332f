"""TorchScript archives that torch.jit.save cannot write: hand-written ``data.pkl`` opcodes around module objects.

torch.jit.save writes each module once, as ``GLOBAL __torch__… / EMPTY_TUPLE / NEWOBJ``, then ``BUILD``
with a dict of its attributes. Through the pickle memo a crafted file can make any graph of them (a
module that contains itself, a chain of shared children) or break that pattern.
"""

from __future__ import annotations

import pickle
import signal
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NEW_MODULE = pickle.GLOBAL + b"__torch__\nM\n" + pickle.EMPTY_TUPLE + pickle.NEWOBJ  # an unbuilt module


def text(value: str) -> bytes:
    data = value.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def put(index: int) -> bytes:
    return pickle.LONG_BINPUT + struct.pack("<I", index)


def get(index: int) -> bytes:
    return pickle.LONG_BINGET + struct.pack("<I", index)


def script_pickle(*ops: bytes) -> bytes:
    """A protocol-2 pickle of ``ops``; the object left on top of the stack is what it holds."""
    return pickle.PROTO + b"\x02" + b"".join(ops) + pickle.STOP


def module_graph(children: list[dict[str, int]]) -> bytes:
    """The ``data.pkl`` of modules ``0 … n-1`` (``0`` is the root) whose attributes name other modules
    by index: ``[{"me": 0}]`` is a module that contains itself."""
    ops = [NEW_MODULE + put(i) for i in range(len(children))]  # each object once, in the memo
    for i, attributes in enumerate(children):
        items = b"".join(text(name) + get(target) for name, target in attributes.items())
        ops.append(get(i) + pickle.EMPTY_DICT + pickle.MARK + items + pickle.SETITEMS + pickle.BUILD)
    return script_pickle(*ops, get(0))


def write_script_archive(path: Path, data_pkl: bytes | None) -> Path:
    """The records of a torch.jit.save archive around ``data_pkl`` (left out when None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        if data_pkl is not None:
            archive.writestr(f"{path.stem}/data.pkl", data_pkl)
        archive.writestr(f"{path.stem}/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr(f"{path.stem}/version", "3\n")
    return path


class TookTooLong(BaseException):
    """Raised by :func:`finishes_within`; a BaseException, so that no error handling turns it into a refusal."""


@contextmanager
def finishes_within(seconds: int) -> Iterator[None]:
    """Interrupt the block (the main thread) with :class:`TookTooLong` after ``seconds``: a reader that would
    hang fails its test instead."""
    def alarm(signum, frame):
        raise TookTooLong(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
