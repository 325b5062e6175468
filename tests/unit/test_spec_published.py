"""Published benchmark files: specs name them, validation never downloads them, a run fetches them pinned.

The shipped specs must validate in a fresh clone with nothing beside it (no
``../shared``), offline and without downloading; the tests read the published
files from ``../shared/datasets`` through ``$KEDITLAB_DATASETS`` (tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest

from keditlab.cli import main
from keditlab.data import download
from keditlab.data.datasets import PUBLISHED, published_copy, published_file
from keditlab.data.download import DatasetUnavailableError, deferred_downloads
from keditlab.spec import SpecValidationError, spec_from_dict, validate_dict

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted([*(ROOT / "specs").glob("*.yaml"), *(ROOT / "specs" / "bench").glob("*.yaml")])


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """No local copies, an empty cache and home; returns the cache folder."""
    monkeypatch.delenv("KEDITLAB_DATASETS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "home").mkdir()
    return tmp_path / "cache"


@pytest.fixture
def nowhere(empty_cache, monkeypatch):
    """An empty cache and home, no local copies, and a network that fails the test if touched."""

    def no_network(*args, **kwargs):
        raise AssertionError(f"something tried to download: {args[:1]}")

    monkeypatch.setattr(download, "fetch_url", no_network)  # pooch, for plain URLs
    monkeypatch.setattr(download, "fetch_hub", no_network)  # huggingface_hub, for files on the Hub
    return empty_cache


@pytest.fixture
def served(monkeypatch, file_server):
    """Serve bytes in place of a published file's source: ``served(name, data)`` points its URL at a local server.

    The download itself is the real one (pooch, its progress bar, keditlab's
    check and rename); returns the list of paths the server was asked for.
    """
    folder, base, requested = file_server

    def serve(name: str, data: bytes) -> list[str]:
        (folder / "file.json").write_bytes(data)
        monkeypatch.setitem(PUBLISHED, name, dataclasses.replace(PUBLISHED[name], url=f"{base}/file.json"))
        return requested

    return serve


def test_every_shipped_spec_validates_in_a_fresh_clone_without_downloading(nowhere, tmp_path, capsys, monkeypatch):
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "specs", clone / "specs")
    assert not (clone.parent / "shared").exists() and not (clone.parent.parent / "shared").exists()
    monkeypatch.chdir(clone)
    files = [str(p.relative_to(ROOT)) for p in SHIPPED]
    assert main(["validate", *files]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert [line for line in out.out.splitlines() if line.endswith(": ok")] == [f"{f}: ok" for f in files]
    notes = [line for line in out.out.splitlines() if ": note: " in line]
    assert notes and all("will be downloaded on first run" in n for n in notes)
    assert any(n.startswith("specs/bench/mquake.yaml: note: mquake/akew/MQuAKE-CF.json") and "3.2 MB" in n for n in notes)
    assert not nowhere.exists() or not any(nowhere.rglob("*")), "validation wrote into the cache"


def test_shipped_specs_read_the_shared_copies_through_the_environment(monkeypatch, shared_datasets, capsys):
    monkeypatch.setenv("KEDITLAB_DATASETS", str(shared_datasets))
    assert main(["validate", *map(str, SHIPPED)]) == 0
    assert ": note: " not in capsys.readouterr().out  # every published file is found locally


def test_no_shipped_spec_points_outside_its_checkout():
    for spec in SHIPPED:
        assert "shared/datasets" not in spec.read_text(encoding="utf-8").replace("$KEDITLAB_DATASETS", ""), spec


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pins_match_the_shared_copies(shared_datasets):
    """Where the shared copy is the whole published file, its bytes are the pinned ones (up to CRLF line ends)."""
    subsets = {"counterfact/counterfact_500.json", "zsre/zsre_mend_eval_portability_gpt4.json",  # records kept: PROVENANCE.md
               *(f"knowedit/{name}" for name in ("zsre/ZsRE-test-all.json", "wiki_recent/recent_train.json",
                                                 "wiki_counterfact/train_cf.json", "wikibio/wikibio-test-all.json",
                                                 "wikibio/wikibio-train-all.json", "convsent/blender_test.json",
                                                 "sanitation/trivia_qa_test.json"))}
    crlf = {"zsre/zsre_mend_train-1k.json", "counterfact/easyedit/counterfact-val.json", "counterfact/easyedit/counterfact-edit.json"}
    for name, pinned in PUBLISHED.items():
        assert pinned.url.startswith("https://raw.githubusercontent.com/") and len(pinned.url.split("/")[5]) == 40, name
        if name in subsets:
            continue
        data = (shared_datasets / name).read_bytes()
        if name in crlf:  # the shared copy was written with CRLF; the blob at the pinned commit has LF
            data = data.replace(b"\r\n", b"\n")
        assert (len(data), hashlib.sha256(data).hexdigest()) == (pinned.size, pinned.sha256), name


def test_a_published_file_comes_from_the_local_folder_first(monkeypatch, tmp_path, shared_datasets):
    monkeypatch.setenv("KEDITLAB_DATASETS", str(shared_datasets))
    monkeypatch.setattr(download, "fetch_url", lambda *a, **k: pytest.fail("downloaded"))
    assert published_file("zsre/zsre_mend_train-1k.json") == shared_datasets / "zsre" / "zsre_mend_train-1k.json"


def test_a_published_file_is_downloaded_once_checked_and_cached(empty_cache, shared_datasets, served):
    name = "knowns/known_1000.json"
    requested = served(name, (shared_datasets / name).read_bytes())  # the shared copy is the pinned file
    with deferred_downloads() as pending:
        assert not published_file(name).exists()
    assert [p.name for p in pending] == [name] and requested == [] and published_copy(name) is None
    path = published_file(name)
    assert path == empty_cache / "datasets" / name and sha256(path) == PUBLISHED[name].sha256
    assert published_file(name) == path and requested == ["/file.json"]
    assert sorted(p.name for p in (empty_cache / "datasets").rglob("*")) == ["known_1000.json", "knowns"]


def test_a_download_with_other_bytes_is_not_kept(empty_cache, served):
    served("knowns/known_1000.json", b"[]")
    with pytest.raises(DatasetUnavailableError, match="not the one keditlab pins"):
        published_file("knowns/known_1000.json")
    assert [p.name for p in (empty_cache / "datasets").rglob("*")] == ["knowns"], "nothing kept, no half file"


def test_offline_run_names_the_source_and_the_fix(nowhere, monkeypatch):
    def offline(url, folder, filename):
        raise OSError("network unreachable")

    monkeypatch.setattr(download, "fetch_url", offline)
    with pytest.raises(SpecValidationError, match=r"edits.file: .*raw.githubusercontent.com/Jometeorie.*network unreachable.*path:"):
        spec_from_dict({"keditlab": 1, "edits": {"dataset": "zsre", "file": "zsre/zsre_mend_train-1k.json"}})


def test_file_reads_the_same_edits_as_path(shared_datasets):
    path = str(shared_datasets / "zsre" / "zsre_mend_train-1k.json")
    by_path = spec_from_dict({"keditlab": 1, "edits": {"dataset": "zsre", "path": path, "limit": 3}})
    by_name = spec_from_dict({"keditlab": 1, "edits": {"dataset": "zsre", "file": "zsre/zsre_mend_train-1k.json", "limit": 3}})
    assert by_name.edits == by_path.edits and len(by_name.edits) == 3


def test_trace_file_is_the_shared_copy(shared_datasets):
    spec = spec_from_dict({"keditlab": 1, "trace": {"file": "knowns/known_1000.json", "limit": 2}})
    assert spec.trace.records == str(shared_datasets / "knowns" / "known_1000.json")


@pytest.mark.parametrize(("edits", "expected"), [
    ({"dataset": "zsre", "file": "zsre/zsre_mend_train-1k.jsn"}, "did you mean 'zsre/zsre_mend_train-1k.json'?"),
    ({"dataset": "mquake", "file": "zsre/zsre_mend_train-1k.json"}, "is a zsre file, but edits.dataset is mquake. Fix: write `dataset: zsre`"),
    ({"file": "mquake/akew/MQuAKE-CF.json"}, "need `dataset`. Fix: add `dataset: mquake`"),
    ({"dataset": "zsre", "file": "zsre/zsre_mend_train-1k.json", "path": "x.json"}, "has both `path` and `file`"),
])
def test_a_bad_published_file_is_reported(edits, expected):
    found = [str(e) for e in validate_dict({"keditlab": 1, "edits": edits})]
    assert any(expected in e for e in found), found


def test_trace_with_records_and_file_is_reported():
    found = [str(e) for e in validate_dict({"keditlab": 1, "trace": {"records": "a.json", "file": "knowns/known_1000.json"}})]
    assert any("trace has both `records` and `file`" in e for e in found), found


def test_the_python_validators_download_nothing_either(nowhere):
    """``validate_file``/``validate_dict`` in a notebook behave like ``keditlab validate``: no network, no error."""
    from keditlab.spec import validate_file

    for spec in SHIPPED:
        assert validate_file(spec) == [], spec
    assert validate_dict({"keditlab": 1, "name": "z", "method": "memit",
                          "edits": {"dataset": "zsre", "file": "zsre/zsre_mend_train-1k.json", "limit": 2}}) == []
    assert not nowhere.exists() or not any(nowhere.rglob("*.json"))
