"""Import and train ultralytics so that it stays offline and writes only inside the run folder.

What ultralytics 8.x does on its own, and what this module does about it:

- On import it creates ``settings.json`` in its config dir (``~/.config/Ultralytics``) and checks
  connectivity. :func:`import_ultralytics` imports it with ``YOLO_CONFIG_DIR`` pointing into the
  caller's work folder and ``YOLO_OFFLINE=1`` (both only if the user has not set them; restored
  afterwards — ultralytics reads them once, at import). If ultralytics was imported earlier in
  the process, its config dir is whatever that import chose.
- ``check_det_dataset`` fetches ``Arial.ttf`` for plot labels (an HTTP request, then a download
  into the config dir), whatever ``plots`` says. :func:`sandboxed_training` replaces that check
  with a no-op while training: plots are off, so no font is needed.
- Trainers attach logging integrations (MLflow, ClearML, Comet, DVC, ...) enabled in settings,
  some of which write next to the working directory, and may send usage events. They are
  switched off in memory for the duration of training; the settings file is not rewritten.
- ``select_device`` pins torch to ``cpu_count - 1`` threads (1 on a 2-core machine) for the rest of
  the process, and training ends by switching deterministic algorithms (and cuDNN's) off globally.
  :func:`restored_torch_state` puts both back; during training the caller's thread count is
  restored as soon as the trainer has picked its device (we load data in the main process, so
  no core needs to be left free for loader workers).
- Model weights are downloaded only for a model *name* that is not a local file; callers pass a
  YAML (random init) or an existing ``.pt`` path, never a bare name.
- It logs to the console (a handler bound to ``sys.stdout`` when it is imported, including a
  settings notice during the import itself), draws its own progress bars and validation tables,
  and triggers Python warnings. :func:`third_party_output` sends all of that to a log file in the
  run's work folder unless the user asked for it (``--verbose``).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from scrapbench.run.provenance import restored_environ

_INTEGRATION_SETTINGS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb", "sync")
_LOGGER_NAME = "ultralytics"  # ultralytics.utils.LOGGING_NAME (read without importing ultralytics)
LOG_FILE_NAME = "ultralytics.log"


class _LogDiverter(logging.Filter):
    """On ultralytics' logger: while ``target`` is set, its records go there instead of the console.

    A filter on the logger rather than a replaced handler, because ultralytics creates its console
    handler while it is being imported, and the settings notice it logs during that import must be
    diverted as well; logger filters survive that set-up.
    """

    def __init__(self) -> None:
        super().__init__()
        self.target: logging.Handler | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if self.target is None:
            return True
        self.target.handle(record)
        return False


class _LogFormatter(logging.Formatter):
    """Plain text for a file: no terminal colour codes, the level named only from warnings up."""

    _ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def format(self, record: logging.LogRecord) -> str:
        text = self._ANSI.sub("", super().format(record))
        return text if record.levelno < logging.WARNING else f"{record.levelname}: {text}"


_DIVERTER = _LogDiverter()


@contextlib.contextmanager
def third_party_output(log_path: str | Path, verbose: bool) -> Iterator[TextIO]:
    """Unless ``verbose``: ultralytics' log records, anything printed and Python warnings go to ``log_path``
    (appended) instead of the console. Yields the console's stderr, for our own progress bars."""
    console = sys.stderr
    if verbose:
        yield console
        return
    logger = logging.getLogger(_LOGGER_NAME)
    logger.addFilter(_DIVERTER)  # no-op when already there
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    previous = _DIVERTER.target
    with open(log_path, "a", encoding="utf-8") as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(_LogFormatter("%(message)s"))
        _DIVERTER.target = handler
        try:
            # Warnings are printed to sys.stderr as it is when they are shown, so they follow the redirect.
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield console
        finally:
            _DIVERTER.target = previous


def import_ultralytics(config_dir: str | Path) -> ModuleType:
    """``import ultralytics`` with its config dir in ``config_dir`` and offline mode on (first import)."""
    if "ultralytics" in sys.modules:
        return sys.modules["ultralytics"]
    config_dir = Path(config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    pil_open = Image.open
    with restored_environ("YOLO_CONFIG_DIR", "YOLO_OFFLINE"):
        os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
        os.environ.setdefault("YOLO_OFFLINE", "1")
        module = importlib.import_module("ultralytics")
    # ultralytics replaces PIL.Image.open process-wide with a version that, on an unreadable file,
    # tries to pip-install pi-heif; that turned our "corrupt image" errors into ModuleNotFoundError.
    Image.open = pil_open
    return module


@contextlib.contextmanager
def restored_torch_state() -> Iterator[None]:
    """Undo what ultralytics changes globally: torch thread count and the determinism flags of torch,
    cuDNN and oneDNN."""
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill_memory = torch.utils.deterministic.fill_uninitialized_memory
    backend_flags = [(backend, name, getattr(backend, name)) for backend, name in (
        (torch.backends.cudnn, "deterministic"), (torch.backends.cudnn, "benchmark"),
        (torch.backends.mkldnn, "deterministic"))]
    try:
        with restored_environ("CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED"):
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill_memory
        for backend, name, value in backend_flags:
            setattr(backend, name, value)


@contextlib.contextmanager
def sandboxed_training(model: Any, show_bars: bool) -> Iterator[None]:
    """While ``model`` (an ultralytics ``YOLO``) trains: no font download, no logging integrations,
    the caller's torch threads and determinism flags kept, ultralytics' progress bars only if ``show_bars``."""
    import torch
    import ultralytics.data.utils as data_utils
    import ultralytics.utils as ultralytics_utils
    from ultralytics.utils import SETTINGS

    threads = torch.get_num_threads()
    model.add_callback("on_pretrain_routine_start", lambda trainer: torch.set_num_threads(threads))

    saved_settings = {key: SETTINGS[key] for key in _INTEGRATION_SETTINGS}
    saved_check_font = data_utils.check_font
    saved_verbose = ultralytics_utils.VERBOSE
    # dict.update, not SETTINGS.update: the latter rewrites the user's settings file.
    dict.update(SETTINGS, dict.fromkeys(_INTEGRATION_SETTINGS, False))
    data_utils.check_font = _no_font
    # ultralytics' TQDM reads this flag when a bar is made and stays hidden without it; its log records
    # (tables, summaries) are not affected, so they still reach the console or the log file.
    ultralytics_utils.VERBOSE = saved_verbose and show_bars
    try:
        with restored_torch_state():
            yield
    finally:
        dict.update(SETTINGS, saved_settings)
        data_utils.check_font = saved_check_font
        ultralytics_utils.VERBOSE = saved_verbose


def _no_font(font: str = "Arial.ttf") -> None:
    """Stand-in for ``ultralytics.utils.checks.check_font`` (plots are off; nothing to render)."""
    return None
