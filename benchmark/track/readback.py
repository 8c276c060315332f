"""A grid read back from MLflow into run folders, for ``scrapbench report --from mlflow:URI``.

Each child run of the experiment becomes its run folder again (``<dataset>/<preset>/<method>/seed<k>``, from its
``scrapbench.folder`` tag) with the artifacts the report reads; the report is then built from those folders by the
same code as from a results folder, so the tables are the same. Where an experiment holds several child runs of one
folder (a run recomputed with another identity), the newest FINISHED one stands, as the newer folder replaced the
older one on disk; a folder with failed runs only gets the newest one's ``error.json``, so the report lists it.
Everything read from the tracker is checked: folder names must be one safe path component each.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from scrapbench.storage.atomic import atomic_write_json
from scrapbench.storage.run_folder import RunFolderError, run_dir
from scrapbench.track import TrackError
from scrapbench.track.log import mlflow_client
from scrapbench.track.records import (
    ERROR_ARTIFACT,
    ERROR_TAG,
    EXPERIMENT_PREFIX,
    FAILED,
    FINISHED,
    FOLDER_TAG,
    RUN_ARTIFACTS,
)

_SEED = re.compile(r"seed(\d+)")


def scrapbench_experiments(client: Any) -> list[str]:
    """The names of the experiments scrapbench logged to (``scrapbench/<dataset>/<preset>``)."""
    return sorted(e.name for e in client.search_experiments() if e.name.startswith(EXPERIMENT_PREFIX))


def download_grid(uri: str, experiment: str | None, dest: Path, verbose: bool = False, progress: bool = True) -> int:
    """Write the run folders of ``experiment`` (the only scrapbench experiment if None) below the empty or new
    folder ``dest``; returns how many. TrackError names what is missing, or what the tracker answered."""
    try:
        client = mlflow_client(uri, verbose)
        names = scrapbench_experiments(client)
        if experiment is None:
            if len(names) != 1:
                raise TrackError(f"{uri} holds {len(names)} scrapbench experiments; choose one with --experiment: "
                                 f"{', '.join(names) or '(none)'}")
            experiment = names[0]
        found = client.get_experiment_by_name(experiment)
        if found is None or found.lifecycle_stage != "active":
            raise TrackError(f"no experiment {experiment!r} at {uri}; scrapbench's there: {', '.join(names) or 'none'}")
        chosen = _chosen_runs(client, found.experiment_id)
        if not chosen:
            raise TrackError(f"experiment {experiment!r} at {uri} holds no runs of scrapbench")
        from tqdm.auto import tqdm

        for parts, run in tqdm(sorted(chosen.items()), desc="reading back", unit="run", disable=not progress):
            _write_run(client, run, _folder(dest, parts))
    except TrackError:
        raise
    except Exception as exc:  # the tracker's own errors: one line naming it
        from scrapbench.run.compute import one_line_error

        raise TrackError(f"reading {uri}: {one_line_error(exc)}") from exc
    return len(chosen)


def _chosen_runs(client: Any, experiment_id: str) -> dict[tuple[str, ...], Any]:
    """One child run per run folder: the newest FINISHED one, else the newest FAILED one."""
    from mlflow.entities import ViewType

    runs = []
    token = None
    while True:
        page = client.search_runs([experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                  page_token=token)
        runs += [run for run in page if FOLDER_TAG in run.data.tags and run.info.status in (FINISHED, FAILED)]
        token = page.token
        if not token:
            break
    chosen: dict[tuple[str, ...], Any] = {}
    rank = {FAILED: 0, FINISHED: 1}
    for run in runs:
        parts = tuple(run.data.tags[FOLDER_TAG].split("/"))
        best = chosen.get(parts)
        key = (rank[run.info.status], run.info.end_time or 0, run.info.start_time or 0)
        if best is None or key > (rank[best.info.status], best.info.end_time or 0, best.info.start_time or 0):
            chosen[parts] = run
    return chosen


def _folder(dest: Path, parts: tuple[str, ...]) -> Path:
    """The run folder a child run names (its tag is checked: four safe names, the last ``seed<k>``)."""
    match = _SEED.fullmatch(parts[-1]) if len(parts) == 4 else None
    if match is None:
        raise TrackError(f"a child run's {FOLDER_TAG} tag {'/'.join(parts)!r} is not <dataset>/<preset>/<method>/"
                         f"seed<k>")
    try:
        return run_dir(dest, parts[0], parts[1], parts[2], int(match.group(1)))
    except RunFolderError as exc:
        raise TrackError(f"a child run's {FOLDER_TAG} tag: {exc}") from exc


def _write_run(client: Any, run: Any, folder: Path) -> None:
    """The child run's artifacts into ``folder`` (a failed run without ``error.json``: one from its tags)."""
    folder.mkdir(parents=True, exist_ok=True)
    run_id = run.info.run_id
    listed = {entry.path for entry in client.list_artifacts(run_id) if not entry.is_dir}
    wanted = RUN_ARTIFACTS if run.info.status == FINISHED else (ERROR_ARTIFACT,)
    for name in wanted:
        if name in listed:
            client.download_artifacts(run_id, name, str(folder))
    if run.info.status == FAILED and ERROR_ARTIFACT not in listed:
        tags = run.data.tags
        seed = _SEED.fullmatch(folder.name)
        atomic_write_json(folder / ERROR_ARTIFACT, {"method": folder.parent.name,
                                                    "seed": int(seed.group(1)) if seed else folder.name,
                                                    "message": tags.get(ERROR_TAG, "(no message)")})
