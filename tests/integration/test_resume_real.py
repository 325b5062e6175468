"""A run killed outright (SIGKILL: a lost Colab machine) resumes to the result an uninterrupted run gives.

Twenty ZsRE records (``shared/datasets/zsre``) are edited with FT-M in batches
of four (six steps each, to keep the test short) on the embedded model, twice:
once to the end, and once through the command line, killed with SIGKILL after
its fifth record (the second batch half recorded) and
continued with :func:`keditlab.resume_run` (what ``keditlab run --resume`` calls;
tests/unit/test_cli.py runs the command's own checks).
The two summaries agree in every mean and count (the seconds aside), the
records are the same, and the resumed process edited only what was missing.
A sequential run of the same stream with ``run.save_edits`` resumes from its
last checkpoint: the calls it had saved and measured are loaded, not made again.
(tests/unit/test_run_modes.py resumes each run mode, sequential included, on a
tiny model.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATASETS = Path(os.environ.get("KEDITLAB_DATASETS", ROOT.parent / "shared" / "datasets"))
ZSRE = DATASETS / "zsre" / "zsre_mend_eval_portability_gpt4.json"


def _spec(tmp_path: Path, mode: str = "batch") -> Path:
    spec = {"keditlab": 1, "name": "resume", "model": "smollm2-135m", "method": {"name": "ft-m", "steps": 6},
            "edits": {"dataset": "zsre", "path": str(ZSRE), "limit": 20},
            "evaluate": {"protocols": ["teacher_forced"], "metrics": ["reliability", "locality"]},
            "run": {"mode": mode, "batch_size": 4, **({"save_edits": True} if mode == "sequential" else {})}}
    path = tmp_path / "resume.yaml"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def _keditlab(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "keditlab", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if "seconds" not in k and k != "timings"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "cases.jsonl").read_text(encoding="utf-8").splitlines()]


def _killed_after_five_records(spec: Path, tmp_path: Path) -> tuple[Path, int]:
    """Run ``spec`` through the command line and SIGKILL it once five records are written: its folder and its records."""
    killed = _keditlab("run", str(spec), "--out", str(tmp_path / "killed"))
    deadline = time.time() + 600
    records = tmp_path / "killed"
    while time.time() < deadline and killed.poll() is None:
        found = list(records.glob("*/cases.jsonl"))
        if found and found[0].read_text(encoding="utf-8").count("\n") >= 5:
            break
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    (folder,) = records.iterdir()
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "running" and not (folder / "summary.json").exists()   # as SIGKILL leaves it
    from keditlab.runner.resume import read_records

    finished = len(read_records(folder / "cases.jsonl"))   # a last line the kill cut short is not a record
    assert 5 <= finished < 20
    return folder, finished


@pytest.mark.skipif(not ZSRE.is_file(), reason=f"{ZSRE} is not here (shared/datasets)")
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_summary(embedded, tmp_path):
    import keditlab

    spec = _spec(tmp_path)
    whole = keditlab.run(spec, tmp_path / "whole", loaded=embedded, log=lambda message: None)
    folder, finished = _killed_after_five_records(spec, tmp_path)

    messages: list[str] = []
    resumed = keditlab.resume_run(folder, loaded=embedded, log=messages.append)   # what `keditlab run --resume` calls
    done = finished // 4                                   # whole batches recorded; a half-recorded one is done again
    assert any(f"{done} of 5 batches done" in m for m in messages), messages
    edited = [int(n) for m in messages for n in re.findall(r"^\[ft-m\] batch (\d+):", m)]
    assert edited == list(range(done + 1, 6)), messages      # only what was missing was edited

    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    expected = json.loads((whole.path / "summary.json").read_text(encoding="utf-8"))
    assert _plain(summary) == _plain(expected) == _plain(json.loads(json.dumps(resumed.summary)))
    assert summary["methods"]["ft-m"]["metrics"]["reliability"]["teacher_forced"]["n"] == 20
    assert _plain(_records(folder)) == _plain(_records(whole.path))
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "complete" and manifest["resumed"][0]["kept_records"] == 4 * done


@pytest.mark.skipif(not ZSRE.is_file(), reason=f"{ZSRE} is not here (shared/datasets)")
def test_a_sequential_run_killed_with_sigkill_resumes_from_its_checkpoint(embedded, tmp_path):
    """The same stream, sequential with run.save_edits: the resumed run loads the calls it had measured and goes on."""
    import keditlab

    spec = _spec(tmp_path, "sequential")
    whole = keditlab.run(spec, tmp_path / "whole", loaded=embedded, log=lambda message: None)
    folder, finished = _killed_after_five_records(spec, tmp_path)

    messages: list[str] = []
    keditlab.resume_run(folder, loaded=embedded, log=messages.append)
    measured = finished // 4                               # calls whose measurement is complete: the checkpoint
    assert any(f"resumes after call {measured} of 5 (its checkpoint)" in m for m in messages), messages
    edited = [int(n) for m in messages for n in re.findall(r"^\[ft-m\] batch (\d+):", m)]
    assert edited == list(range(measured + 1, 6)), messages   # the calls before the checkpoint were loaded, not made
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    expected = json.loads((whole.path / "summary.json").read_text(encoding="utf-8"))
    assert _plain(summary) == _plain(expected)
    assert [p["edits_applied"] for p in summary["methods"]["ft-m"]["curve"]] == [4, 8, 12, 16, 20]
    assert _plain(_records(folder)) == _plain(_records(whole.path))
