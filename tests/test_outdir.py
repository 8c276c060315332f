"""Output folders: scrapbench replaces only what it wrote, never its own input, and never half-way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from scrapbench.cli.main import app
from scrapbench.storage.outdir import (
    MARKER,
    OutputError,
    clean_stale_staging,
    guard_output,
    guard_output_file,
    staged_output,
)


def _cli(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result, " ".join(result.output.split())


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("months of work")
    return path


def test_synth_never_empties_a_folder_it_did_not_write(tmp_path):
    folder = _user_folder(tmp_path / "mine")
    result, text = _cli("synth", "--out", folder, "--preset", "smoke")
    assert result.exit_code == 2 and "not written by scrapbench" in text and str(folder) in text
    assert (folder / "thesis.tex").read_text() == "months of work"
    assert "Traceback" not in result.output


def test_synth_replaces_its_own_output_and_marks_it(tmp_path):
    out = tmp_path / "synth"
    assert _cli("synth", "--out", out, "--preset", "smoke")[0].exit_code == 0
    assert json.loads((out / MARKER).read_text())["written_by"] == "scrapbench synth"
    (out / "train" / "images" / "stale.png").write_bytes(b"left from before")
    result, text = _cli("synth", "--out", out, "--preset", "smoke", "--seed", "1")
    assert result.exit_code == 0, text
    assert not (out / "train" / "images" / "stale.png").exists()  # replaced as a whole
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]  # no staging folder left beside it


def _raw_images(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "raw" / "images", tmp_path / "raw" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(images / f"cam{i}.png")
        mask = np.zeros((20, 20), np.uint8)
        mask[2:8, 2:8] = i % 2
        Image.fromarray(mask).save(masks / f"cam{i}.png")
    return images, masks


@pytest.mark.parametrize("where", ["equal", "inside", "containing", "containing_marked", "symlink"])
def test_prepare_out_may_not_overlap_its_source(tmp_path, where):
    images, masks = _raw_images(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = {"equal": images, "inside": images / "prepared", "containing": tmp_path / "raw",
           "containing_marked": tmp_path / "raw", "symlink": tmp_path / "link"}[where]
    if where == "containing_marked":  # even a folder scrapbench wrote is not replaced when it holds the input
        (out / MARKER).write_text("{}")
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    if where == "symlink":
        out.symlink_to(images)
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result, text = _cli("prepare", images, "--annotations", masks, "--classes", "motor", "--patch-size", "8",
                        "--test-fraction", "0.5", "--out", out)
    assert result.exit_code == 2 and "--out" in text and "input" in text, text
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing deleted or added


def test_prepare_annotations_are_an_input_too(tmp_path):
    images, masks = _raw_images(tmp_path)
    result, text = _cli("prepare", images, "--annotations", masks, "--classes", "motor", "--out", masks)
    assert result.exit_code == 2 and "is the input" in text
    assert len(list(masks.iterdir())) == 4


def test_predict_and_report_follow_the_same_rule(tmp_path):
    images, _ = _raw_images(tmp_path)
    mine = _user_folder(tmp_path / "mine")
    for out in (images, mine):
        result, text = _cli("predict", tmp_path / "no_model", images, "--out", out)
        assert result.exit_code == 2 and str(out) in text, text
    runs = tmp_path / "runs"
    runs.mkdir()
    for out in (runs, tmp_path, mine):
        result, text = _cli("report", runs, "--out", out)
        assert result.exit_code == 2 and "--out" in text, text
    assert (mine / "thesis.tex").exists() and len(list(images.iterdir())) == 4


def test_evaluate_out_is_a_new_file_or_its_own(tmp_path):
    maps, masks = tmp_path / "maps", tmp_path / "masks"
    maps.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(maps / f"{i}.npy", rng.random((8, 8)).astype(np.float32))
        mask = np.zeros((8, 8), np.uint8)
        mask[:3, :3] = 1
        Image.fromarray(mask).save(masks / f"{i}.png")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    for out in (notes, masks / "metrics.json", maps):
        result, text = _cli("evaluate", maps, masks, "--out", out)
        assert result.exit_code == 2 and "--out" in text, text
    assert notes.read_text() == '{"mine": true}'
    out = tmp_path / "metrics.json"
    assert _cli("evaluate", maps, masks, "--out", out)[0].exit_code == 0
    assert _cli("evaluate", maps, masks, "--out", out)[0].exit_code == 0  # its own file: replaced
    assert json.loads(out.read_text())["written_by"] == "scrapbench evaluate"


def test_staged_output_keeps_the_old_result_when_writing_fails(tmp_path):
    out = tmp_path / "out"
    with staged_output(out, "test") as staging:
        (staging / "result.txt").write_text("first")
    with pytest.raises(RuntimeError), staged_output(out, "test") as staging:
        (staging / "result.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert (out / "result.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_guards_refuse_clearly(tmp_path):
    src = _user_folder(tmp_path / "src")
    with pytest.raises(OutputError, match="not written by scrapbench"):
        guard_output(src)
    with pytest.raises(OutputError, match="lies inside the input"):
        guard_output(src / "sub", [src])
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        guard_output(tmp_path / "file")
    with pytest.raises(OutputError, match="is a folder"):
        guard_output_file(src, [], "evaluate")
    assert guard_output(tmp_path / "new", [src]) == (tmp_path / "new").resolve()
    (tmp_path / "empty").mkdir()
    assert guard_output(tmp_path / "empty", [src]) == (tmp_path / "empty").resolve()


_LEAVE_STAGING = """
import os, sys
from pathlib import Path
from scrapbench.storage.outdir import make_staging
staging = make_staging(Path(sys.argv[1]))
(staging / "half.png").write_bytes(b"x")
print(staging)
os._exit(0)  # like a process killed mid-way: nothing cleans up
"""


def test_stale_staging_of_a_dead_writer_is_removed_a_live_one_and_foreign_ones_are_kept(tmp_path):
    target = tmp_path / "data"
    dead = Path(subprocess.run([sys.executable, "-c", _LEAVE_STAGING, str(target)], capture_output=True, text=True,
                               check=True).stdout.strip())
    assert dead.is_dir()
    from scrapbench.storage.outdir import make_staging

    live = make_staging(target)  # ours, still running
    foreign = tmp_path / ".data.scrapbench-staging-1-abc"  # the name alone does not make it ours
    foreign.mkdir()
    removed = clean_stale_staging(tmp_path)
    assert removed == [dead] and not dead.exists()
    assert live.is_dir() and foreign.is_dir()


_LEAVE_EMPTY_RECORD = """
import os, sys
from pathlib import Path
from scrapbench.storage.outdir import make_staging
from scrapbench.storage.writers import WRITER_FILE
staging = make_staging(Path(sys.argv[1]))
(staging / WRITER_FILE).write_bytes(sys.argv[2].encode())  # as if it died (or the disk filled) writing its record
print(staging)
os._exit(0)
"""


@pytest.mark.parametrize("record", ["", '{"pid": 1'])
def test_an_empty_writer_record_is_stale_once_its_process_is_gone(tmp_path, record):
    from scrapbench.storage.outdir import make_staging
    from scrapbench.storage.writers import WRITER_FILE

    target = tmp_path / "data"
    dead = Path(subprocess.run([sys.executable, "-c", _LEAVE_EMPTY_RECORD, str(target), record], capture_output=True,
                               text=True, check=True).stdout.strip())
    live = make_staging(target)
    (live / WRITER_FILE).write_text(record)  # this process is alive: its folder stays
    assert clean_stale_staging(tmp_path) == [dead] and not dead.exists() and live.is_dir()


def test_a_full_disk_leaves_no_staging_folder_behind(tmp_path, full_disk):
    full_disk(lambda path: ".scrapbench-writer" in path.name)
    with pytest.raises(OutputError, match="could not be written: No space left on device") as caught, \
            staged_output(tmp_path / "out", "test"):
        pass
    assert ".scrapbench-staging-" in str(caught.value) and ".scrapbench-writer)" in str(caught.value)  # names the file
    assert list(tmp_path.iterdir()) == []


def test_killed_synthetic_generation_is_cleaned_from_the_cache(tmp_path):
    from scrapbench.core.presets import SYNTHETIC_PRESETS
    from scrapbench.datasets.synthetic import generator as synthetic
    from scrapbench.datasets.synthetic.generator import cache_key, synthetic_dataset

    config = SYNTHETIC_PRESETS["smoke"]
    entry = tmp_path / "synthetic" / cache_key(config, 0)
    env = dict(os.environ)
    subprocess.run([sys.executable, "-c", _LEAVE_STAGING, str(entry)], check=True, env=env, capture_output=True)
    assert len(list(entry.parent.iterdir())) == 1  # the killed writer's staging folder
    data = synthetic_dataset(config, seed=0, cache_dir=tmp_path)
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name] and data.root == entry
    assert synthetic.read_folder_dataset(entry).fingerprint == data.fingerprint


def test_a_report_that_fails_half_way_can_be_written_again(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    out = tmp_path / "report"
    first, text = _cli("report", runs, "--out", out)
    assert first.exit_code == 2 and "not written by scrapbench" not in text
    assert (out / MARKER).is_file()
    second, text = _cli("report", runs, "--out", out)
    assert second.exit_code == 2 and "not written by scrapbench" not in text


def test_a_command_replaces_only_what_it_wrote_unless_forced(tmp_path):
    dataset = tmp_path / "dataset"
    assert _cli("synth", "--out", dataset, "--preset", "smoke")[0].exit_code == 0
    before = sorted(p.relative_to(dataset) for p in dataset.rglob("*"))
    runs = tmp_path / "runs"
    runs.mkdir()
    for args in (("report", runs, "--out", dataset), ("prepare", tmp_path / "raw", "--out", dataset)):
        result, text = _cli(*args)
        assert result.exit_code == 2 and f"{dataset}: written by `scrapbench synth`, not by `scrapbench " in text, text
        assert "--force" in text and "Traceback" not in result.output
    assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before
    result, text = _cli("report", runs, "--out", dataset, "--force")
    assert "written by" not in text and json.loads((dataset / MARKER).read_text())["written_by"] == "scrapbench report"
    result, text = _cli("synth", "--out", dataset, "--preset", "smoke")
    assert result.exit_code == 2 and "written by `scrapbench report`" in text
    mine = _user_folder(tmp_path / "mine")  # a folder without the marker: never, not even with --force
    result, text = _cli("synth", "--out", mine, "--preset", "smoke", "--force")
    assert result.exit_code == 2 and "not written by scrapbench" in text and (mine / "thesis.tex").is_file()


def test_evaluate_out_written_by_another_command_needs_force(tmp_path):
    maps, masks = tmp_path / "maps", tmp_path / "masks"
    maps.mkdir()
    masks.mkdir()
    np.save(maps / "0.npy", np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8))
    mask = np.zeros((8, 8), np.uint8)
    mask[4:, 4:] = 1
    Image.fromarray(mask).save(masks / "0.png")
    out = tmp_path / "metrics.json"
    out.write_text(json.dumps({"written_by": "scrapbench predict"}))
    result, text = _cli("evaluate", maps, masks, "--out", out)
    assert result.exit_code == 2 and "written by `scrapbench predict`" in text and "--force" in text
    assert _cli("evaluate", maps, masks, "--out", out, "--force")[0].exit_code == 0
    assert json.loads(out.read_text())["written_by"] == "scrapbench evaluate"
