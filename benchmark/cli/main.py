"""The ``scrapbench`` command line: one module per command in this package, assembled here."""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: with the default (spin), two processes sharing two
# cores make every small torch op wait for the other's spinning threads. It must be set before torch
# is imported, and torch is only imported by the commands when they run.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer

from scrapbench.cli import evaluate, list_methods, predict, prepare, report, run, synth, track, weights

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Pixel-level anomaly segmentation benchmark for steel-scrap recycling.")
app.command("list")(list_methods.list_command)
app.command()(run.run)
weights_app = typer.Typer(no_args_is_help=True, help="Pretrained weights: where they go, and whether they fit.")
weights_app.command("check")(weights.weights_check)
app.add_typer(weights_app, name="weights")
for command in (synth.synth, evaluate.evaluate, report.report, predict.predict, prepare.prepare, track.track):
    app.command()(command)


def main() -> None:  # pragma: no cover - console entry point
    app()
