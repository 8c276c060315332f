"""What every command shares: the console (user text printed escaped), one-line errors, option texts."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

# No markup and no :emoji: codes: everything printed holds user text (paths, dataset and class names,
# error messages), and "[/x]" in a path would vanish or crash the print. Styles go through Text.
# soft_wrap: a long path stays one line that can be copied.
console = Console(markup=False, emoji=False, soft_wrap=True)

FORCE_HELP = ("Replace an --out that another scrapbench command wrote (a folder or file without scrapbench's "
              "marker is never replaced).")
PRECISION_HELP = ("Network precision: auto (bf16 on CUDA GPUs that compute it natively, fp16 on older ones, fp32 on "
                  "CPU) | fp32 | bf16 | fp16. Part of a run's identity.")


def fail(message: str) -> None:
    console.print(Text.assemble(("error: ", "bold red"), str(message)))
    raise typer.Exit(code=2)


def with_weights(names: list[str], overrides: dict, weights: str | None) -> dict:
    """The preset's overrides plus ``--weights``, which sets the one chosen method's weights field."""
    from scrapbench.core.registry import get_spec

    overrides = dict(overrides)
    if weights is None:
        return overrides
    if len(names) != 1:
        fail("--weights needs exactly one method (use --set METHOD.FIELD=PATH for several)")
    field_name = get_spec(names[0]).load_class().weights_field
    if field_name is None:
        fail(f"method {names[0]!r} takes no pretrained weights")
    overrides.setdefault(names[0], {})[field_name] = weights
    return overrides


def error_text(exc: BaseException) -> str:
    """One line for an expected error: KeyError's bare message, OSError's file and reason."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
