"""The ``keditlab`` command as a user meets it: readable errors, exit codes, no tracebacks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

GOOD_EDIT = """\
edits:
  - prompt: "The Eiffel Tower is located in the city of"
    subject: Eiffel Tower
    target: Rome
"""


def keditlab(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "keditlab", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "text, line, expected",
    [
        ("keditlab: 1\nmethod: rom\n" + GOOD_EDIT, 2, "did you mean 'rome'"),
        ("keditlab: 1\nmetod: rome\n" + GOOD_EDIT, 2, "did you mean 'method'"),
        ("keditlab: 1\nmethod: rome\n" + GOOD_EDIT.replace("subject: Eiffel Tower", "subject: Big Ben"), 5, "does not occur in the prompt"),
    ],
    ids=["unknown-method", "typo-key", "subject-missing"],
)
def test_run_with_a_bad_spec_fails_with_one_readable_message(tmp_path, text, line, expected):
    spec = write(tmp_path, text)
    result = keditlab("run", str(spec), "--out", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert expected in result.stderr
    assert f"spec.yaml:{line}:" in result.stderr
    assert result.stderr.count("Fix:") == 1
    assert not (tmp_path / "runs").exists(), "nothing is written for a spec that does not validate"


def test_validate_every_shipped_spec():
    specs = sorted(str(p) for p in (ROOT / "specs").glob("*.yaml"))
    assert specs
    result = keditlab("validate", *specs)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok") == len(specs)


def test_validate_reports_errors_of_every_file(tmp_path):
    bad = write(tmp_path, "keditlab: 1\nedits: []\nrun: {seed: zero}\n")
    good = ROOT / "specs" / "quickstart.yaml"
    result = keditlab("validate", str(good), str(bad))
    assert result.returncode == 2
    assert "quickstart.yaml: ok" in result.stdout
    assert "spec.yaml:3:" in result.stderr and "run.seed" in result.stderr
    assert "Traceback" not in result.stderr


def test_layer_outside_the_embedded_model(tmp_path):
    spec = write(tmp_path, "keditlab: 1\nmethod: {name: rome, layer: 40}\n" + GOOD_EDIT)
    result = keditlab("validate", str(spec))
    assert result.returncode == 2
    assert "spec.yaml:2:" in result.stderr and "40" in result.stderr


def test_show_on_a_folder_that_is_not_a_run(tmp_path):
    result = keditlab("show", str(tmp_path))
    assert result.returncode == 1
    assert "not a complete keditlab run folder" in result.stderr
    assert "Traceback" not in result.stderr


def _saved_run(folder: Path) -> Path:
    """A small run folder written by hand, as a run writes it: one method, two edits, metric variants, warnings."""
    from keditlab.runner.summary import MethodTally, build_summary

    tally = MethodTally("rome", {"layer": 5})
    for said in (True, False):
        pre = {("reliability", "teacher_forced"): 0.0, ("reliability", "generation"): 0.0,
               ("reliability_contains", "generation"): 0.0, ("generalization", "teacher_forced"): 0.0,
               ("locality", "teacher_forced"): 1.0, ("fluency", "generation"): 3.5}
        post = {**pre, ("reliability", "teacher_forced"): 1.0, ("reliability_contains", "generation"): 1.0,
                ("generalization", "teacher_forced"): 0.5}
        tally.add(pre, post, 2.0, 1.0, warnings=[] if said else ["target_not_said"])
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps(build_summary("saved", "smollm2-135m", 2, {"rome": tally})))
    (folder / "cases.jsonl").write_text("")
    (folder / "manifest.json").write_text(json.dumps({"format": "keditlab.manifest/2", "status": "complete"}))
    return folder


def test_show_prints_a_saved_run_grouped_by_metric_without_importing_torch(tmp_path):
    folder = _saved_run(tmp_path / "saved-run")
    code = ("import sys\n"
            "from keditlab.cli import main\n"
            f"assert main(['show', {str(folder)!r}]) == 0\n"
            "assert 'torch' not in sys.modules, 'keditlab show imported torch'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line.split("  ")[0] for line in result.stdout.splitlines()]
    table = rows[rows.index("metric (protocol)") + 2:]
    assert table[:5] == ["reliability (tf)", "reliability (gen)", "reliability_contains (gen)", "generalization (tf)",
                         "locality (tf)"], table
    assert table[5] == "fluency (gen)"
    assert re.search(r"target not said \(edits\) +1/2", result.stdout)
    assert "| rome | spec | reliability_contains |" in result.stdout  # table.md's rows in the same order


def test_methods_lists_settings():
    result = keditlab("methods")
    assert result.returncode == 0
    assert "rome:" in result.stdout and "v_steps" in result.stdout and "ft-m:" in result.stdout


def test_version():
    import keditlab as package

    result = keditlab("--version")
    assert result.returncode == 0
    assert result.stdout == f"keditlab {package.__version__}\n"


def test_methods_output_is_the_registry():
    """`keditlab methods` reads the generated schema; it must say exactly what the registry's classes say (capabilities, settings)."""
    import dataclasses

    from keditlab.methods import get_method, method_names
    from keditlab.spec.schema import describe_capabilities

    expected = []
    for name in method_names():
        method = get_method(name)
        expected.append(f"{name}: {method.summary}")
        expected.append(f"    {describe_capabilities(method.capabilities.to_dict())}")
        expected.append(f"    family: {method.family}; paper: {method.paper}")
        for f in dataclasses.fields(method.config_class):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            expected.append(f"    {f.name} = {default!r}: {f.metadata.get('help', '')}")
    result = keditlab("methods")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected


def test_methods_and_version_do_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from keditlab.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['methods']) == 0\n"
        "assert 'rome:' in out.getvalue()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers') or m.startswith('keditlab.methods'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args", [["methods"], ["--version"], ["show", "no-such-folder"]])
def test_a_closed_pipe_ends_quietly(args):
    """`keditlab methods | head` must not print a BrokenPipeError traceback when head stops reading."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before keditlab writes anything: every write fails
    try:
        result = subprocess.run([sys.executable, "-m", "keditlab", *args], cwd=ROOT, stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
    if args == ["methods"]:
        assert result.stderr == "" and result.returncode == 141


def test_every_method_names_its_family_and_paper():
    """The README's method table and `keditlab methods` show them; an empty cell would be a method nobody can place."""
    from keditlab.methods import get_method, method_names

    for name in method_names():
        method = get_method(name)
        assert method.family and "arXiv:" in method.paper, name


def test_methods_piped_into_head():
    result = subprocess.run(f"{sys.executable} -m keditlab methods | head -n 1", shell=True, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("adalora: ") and result.stdout.count("\n") == 1
    assert result.stderr == ""


def test_a_run_stopped_by_sigterm_says_interrupted_and_keeps_what_it_measured(tmp_path, tokenizer):
    """``kill PID`` on ``keditlab run`` (a tiny local model, six FT-M edits) once the first edit is recorded."""
    import json
    import signal
    import time

    from tests.conftest import make_tiny_model

    model_dir = tmp_path / "tiny"
    make_tiny_model("llama", vocab_size=49152).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    edits = "".join(f"  - {{prompt: 'The city number {i} is in', subject: 'city number {i}', target: Rome}}\n" for i in range(6))
    spec = tmp_path / "stop.yaml"
    spec.write_text(f"keditlab: 1\nname: stop\nmodel: {model_dir}\nmethod: {{name: ft-m, steps: 40}}\n"
                    f"evaluate: {{metrics: [reliability], protocols: [teacher_forced]}}\nedits:\n{edits}", encoding="utf-8")
    runs = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-m", "keditlab", "run", str(spec), "--out", str(runs)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any(p.stat().st_size for p in runs.glob("*/cases.jsonl")):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    (folder,) = runs.iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "interrupted", manifest.get("status")
    shown = keditlab("show", str(folder))
    assert shown.returncode == 0 and shown.stdout.startswith("PARTIAL RUN (interrupted"), shown.stdout + shown.stderr


def test_resume_and_export_say_what_is_wrong_without_a_traceback(tmp_path):
    """`run` needs a spec or --resume (not both); a folder that cannot be resumed or exported is named with the fix."""
    spec = write(tmp_path, "keditlab: 1\n" + GOOD_EDIT)
    for args in ([], [str(spec), "--resume", str(tmp_path)], ["--resume", str(tmp_path), "--out", str(tmp_path)]):
        result = keditlab("run", *args)
        assert result.returncode == 2 and "give a spec" in result.stderr and "Traceback" not in result.stderr, args
    folder = tmp_path / "done"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"status": "complete", "spec": {}}), encoding="utf-8")
    result = keditlab("run", "--resume", str(folder))
    assert result.returncode == 1 and "is complete: there is nothing to resume" in result.stderr
    result = keditlab("run", "--resume", str(tmp_path / "nowhere"))
    assert result.returncode == 1 and "not a run folder" in result.stderr and "Traceback" not in result.stderr
    result = keditlab("export", str(folder), "--method", "rome", "--out", str(tmp_path / "model"))
    assert result.returncode == 1 and "saved no edits of method 'rome'" in result.stderr and "save_edits: true" in result.stderr
    result = keditlab("export", str(folder), "--method", "rome", "--out", str(folder))
    assert result.returncode == 1 and "never overwrites" in result.stderr
