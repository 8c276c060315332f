"""ultralytics checkpoints (``yolov8x-seg.pt``, ``yolo11x-seg.pt``): a trust boundary.

Such a file is a pickled Python module: reading it means unpickling it, and unpickling runs whatever
the file asks for. It cannot be read weights-only: its module classes would have to be allow-listed,
and the weights-only unpickler also lets a file *call* an allow-listed class with arguments of its
choosing. So scrapbench hands an ultralytics checkpoint to ultralytics only when

- the user vouched for the exact file: its SHA-256 equals ``yolo_weights_sha256`` (compare it with the
  digest of the release asset on https://github.com/ultralytics/assets/releases, or compute it on a
  machine you trust); scrapbench ships no checksum of its own for these files;
- it does not lie inside a scrapbench model folder (``method.json``) or dataset (``dataset.yaml``);
- and ultralytics then reads a copy, written into the run's private work folder while it was hashed,
  so that the file cannot change between the check and the load.

Before that only static checks run: the pickle's opcodes are listed, never executed
(``torch.serialization.get_unsafe_globals_in_checkpoint``), to see that the file is an ultralytics
segmentation checkpoint of the configured family.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from scrapbench.core.method import WeightsError
from scrapbench.methods.common.checkpoints import (
    TORCH_LEGACY,
    TORCH_ZIP,
    WeightCheck,
    checkpoint_format,
    inside_scrapbench_folder,
)
from scrapbench.methods.common.checksums import file_digest

RELEASES = "https://github.com/ultralytics/assets/releases"
# A class that only one family's segmentation models contain (matched on the class name: older
# checkpoints name other module paths, which ultralytics maps when it loads them).
_FAMILY_MARKERS = {"yolo11": "C3k2", "yolov8": "C2f"}
_SEGMENTATION_MARKERS = ("SegmentationModel", "Segment")


def pickled_classes(path: Path) -> set[str]:
    """Class names an ultralytics checkpoint's pickle refers to, read from its opcodes (nothing executed)."""
    if checkpoint_format(path) not in (TORCH_ZIP, TORCH_LEGACY):
        raise WeightsError(f"YOLO checkpoint {path} is not a torch checkpoint file")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as exc:  # a truncated or foreign file: say which
        raise WeightsError(f"YOLO checkpoint {path} could not be read: {type(exc).__name__}: {exc}") from exc
    return set(names)


def yolo_family(classes: set[str]) -> tuple[str | None, bool]:
    """(family, is a segmentation model) from the class names of a checkpoint."""
    short = {name.rsplit(".", 1)[-1] for name in classes if name.startswith("ultralytics.")}
    family = next((f for f, marker in _FAMILY_MARKERS.items() if marker in short), None)
    return family, all(marker in short for marker in _SEGMENTATION_MARKERS)


def verify_yolo_checkpoint(path: Path, family: str, sha256: str | None, setting: str) -> str:
    """Static checks and the user's SHA-256; returns the file's SHA-256 or raises a WeightsError saying what to do."""
    holder = inside_scrapbench_folder(path)
    if holder is not None:
        raise WeightsError(f"YOLO checkpoint {path} lies inside {holder}, a scrapbench model folder or dataset: "
                           f"pickled files there are never loaded; use the file from the ultralytics release")
    classes = pickled_classes(path)
    found, segmentation = yolo_family(classes)
    if not any(name.startswith("ultralytics.") for name in classes):
        raise WeightsError(f"YOLO checkpoint {path} is not an ultralytics checkpoint (it names no ultralytics class)")
    if not segmentation or found != family:
        raise WeightsError(f"YOLO checkpoint {path} is a {found or 'unknown'} "
                           f"{'segmentation' if segmentation else 'non-segmentation'} model, not a {family} "
                           f"segmentation model")
    actual = file_digest(path)
    if sha256 is None:
        raise WeightsError(
            f"YOLO checkpoint {path} is a pickled module, so loading it runs code from the file. scrapbench "
            f"loads it only if you vouch for it: its SHA-256 is {actual}; if that is the digest of "
            f"{path.name} on {RELEASES}, set {setting}={actual}")
    sha256 = str(sha256)  # a YAML --set value of only digits would arrive as an int
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise WeightsError(f"{setting}={sha256!r} is not a SHA-256 (64 hex digits)")
    if actual != sha256.lower():
        raise WeightsError(f"YOLO checkpoint {path} has SHA-256 {actual}, not the {sha256.lower()} set in "
                           f"{setting}; the file changed or is another file. Not loaded")
    return actual


def trusted_copy(path: Path, sha256: str, workdir: Path) -> Path:
    """The copy ultralytics may read: ``path`` copied into ``workdir/pretrained`` while hashed, if the
    copy's SHA-256 is ``sha256`` (else an error and no copy)."""
    folder = workdir / "pretrained"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    digest = hashlib.sha256()
    with open(path, "rb") as source, open(target, "wb") as copy:
        while chunk := source.read(8 << 20):
            digest.update(chunk)
            copy.write(chunk)
    if digest.hexdigest() != sha256.lower():
        target.unlink()
        raise WeightsError(f"YOLO checkpoint {path} changed while it was read (SHA-256 {digest.hexdigest()}); "
                           f"not loaded")
    return target


def check_loaded_yolo(model: torch.nn.Module, path: Path, family: str, scale: str) -> None:
    """After ultralytics loaded a checkpoint: its model config must be the configured family and scale."""
    yaml = getattr(model, "yaml", None) or {}
    yaml_file = str(yaml.get("yaml_file", ""))
    if yaml.get("scale") != scale or not yaml_file.startswith(family):
        raise WeightsError(f"YOLO checkpoint {path} holds {yaml_file or 'an unknown model'} "
                           f"(scale {yaml.get('scale')!r}), not {family}{scale}-seg")


def inspect_yolo(path: Path | None, family: str, scale: str, sha256: str | None, setting: str,
                 pin_setting: str) -> WeightCheck:
    """A :class:`WeightCheck` of a configured ultralytics checkpoint (static checks only; nothing unpickled)."""
    check = WeightCheck(f"YOLO {family}{scale}-seg", setting, "random", architecture=f"{family}{scale}-seg.yaml")
    if path is None:
        return check
    check.path = str(path.resolve())
    if not path.is_file():
        check.status, check.detail = "missing", "not found"
        check.where = (f"download {path.name} from {RELEASES} to {path.resolve()}, then vouch for it: "
                       f"{pin_setting}=<its SHA-256> (this check prints it)")
        return check
    check.format = "ultralytics checkpoint (pickled module)"
    try:
        check.sha256 = verify_yolo_checkpoint(path, family, sha256, pin_setting)
    except WeightsError as exc:
        check.status, check.detail = "invalid", str(exc)
        check.sha256 = file_digest(path) if checkpoint_format(path) != "unknown" else None
        return check
    check.status = "ok"
    check.architecture = f"{family} segmentation (classes read statically); scale checked when loaded"
    check.checksum = f"= {pin_setting} (your SHA-256; none published with the file)"
    return check

