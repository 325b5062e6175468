"""Every spec example in the docs validates: a page that teaches the spec language must not teach an error.

Each ```yaml block of docs/*.md and README.md is checked.  A whole spec (it has
``keditlab: 1``) is validated as written; a fragment (``method:``, ``run:``,
``edits:`` alone) is merged into a minimal spec first.  A ``path:`` is read from
the example's own folder, so the files it names are put there (copies of the
shared benchmark files); published files (``file:``) are found through
``$KEDITLAB_DATASETS`` as in every test, or only noted, never downloaded.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from keditlab.data.download import deferred_downloads
from keditlab.spec import validate_file

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
#: What a fragment is merged into: a method that can do every run mode, and one edit.
MINIMAL = {"keditlab": 1, "method": "memit",
           "edits": [{"prompt": "Toyota is a company from the country of", "subject": "Toyota", "target": "Germany"}]}


def _blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"```ya?ml\n(.*?)```", text, re.S):
            line = text[: match.start()].count("\n") + 2
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return found


BLOCKS = _blocks()


def test_the_docs_have_spec_examples():
    assert sum("keditlab: 1" in block for _, block in BLOCKS) >= 3  # spec.md, tracing.md, README.md


def _paths(value):
    """Every ``path:`` value in an example (edits files, stats.unrelated)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("path", "records") and isinstance(item, str):
                yield item
            else:
                yield from _paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from _paths(item)


@pytest.mark.parametrize(("where", "block"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_doc_example_validates(where, block, tmp_path):
    data = yaml.safe_load(block)
    assert isinstance(data, dict), f"{where}: not a YAML mapping"
    if "keditlab" not in data:
        data = {**MINIMAL, **data}
    folder = tmp_path / "examples"
    folder.mkdir()
    for written in _paths(data):  # the benchmark file an example names, put where it says
        target = (folder / written).resolve()
        shared = Path(os.environ.get("KEDITLAB_DATASETS", ROOT.parent / "shared" / "datasets"))
        copies = sorted(shared.rglob(Path(written).name)) if shared.is_dir() else []
        if not copies:
            pytest.skip(f"{where} names {written}, and no copy of it is in the shared benchmark files")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(copies[0], target)
    spec = folder / "example.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with deferred_downloads():
        errors = validate_file(spec)
    assert errors == [], f"{where}:\n" + "\n".join(map(str, errors))
