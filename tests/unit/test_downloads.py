"""Benchmark downloads: pinned sources, checked bytes, atomic cache, offline errors, and what a manifest records.

No test here reaches the internet.  Plain URLs go through the real pooch
download against a local ``http.server`` in a temporary folder; Hub files go
through ``huggingface_hub.hf_hub_download`` replaced by a stand-in that writes
the bytes where the library would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import socket
from pathlib import Path

import pytest

from keditlab.data import download
from keditlab.data.datasets import DATASETS, PUBLISHED, dataset_cases, file_provenance
from keditlab.data.download import (ChecksumMismatchError, DatasetUnavailableError, cached_download,
                                    deferred_downloads, hub_file, pinned_commit)
from keditlab.runner.manifest import edits_record
from keditlab.spec import spec_from_dict

#: Default sources that could not be pinned all the way (reported in docs/reliability.md), and what they lack.
NOT_FULLY_PINNED = {
    "knowedit": "commit",      # the Hub revision commit of zjunlp/KnowEdit could not be established: pinned by sha256
    "rippleedits": "sha256",   # no record of popular.json's sha256 was found: pinned by commit, downloaded unverified
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """An empty keditlab cache; returns its ``datasets`` folder."""
    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KEDITLAB_DATASETS", raising=False)
    return tmp_path / "cache" / "datasets"


@pytest.fixture
def server(file_server):
    """tests/conftest.py's local HTTP server: ``(folder, base_url, requested_paths)``."""
    return file_server


def leftovers(folder: Path) -> list[Path]:
    """Everything under ``folder``: what a failed download must not leave."""
    return sorted(folder.rglob("*")) if folder.exists() else []


# ---- every default source is pinned -------------------------------------------------------------------------------

def test_every_default_source_is_pinned_to_a_commit_and_a_checksum():
    for name, dataset in DATASETS.items():
        if dataset.url is None:  # easyedit: no public file, a path is needed
            continue
        versioned = dataset.url.startswith(("https://raw.githubusercontent.com/", "https://huggingface.co/"))
        if versioned and NOT_FULLY_PINNED.get(name) != "commit":
            assert pinned_commit(dataset.url), f"{name}: {dataset.url} follows a branch, not a commit"
        if not versioned:  # a host without versions (rome.baulab.info): the checksum is the whole pin
            assert dataset.url.startswith("https://rome.baulab.info/") and dataset.sha256 and dataset.size, name
        if NOT_FULLY_PINNED.get(name) != "sha256":
            assert re.fullmatch(r"[0-9a-f]{64}", dataset.sha256 or ""), f"{name}: no pinned sha256"
    for name, lacks in NOT_FULLY_PINNED.items():  # an exception that is no longer one must leave this list
        dataset = DATASETS[name]
        assert (pinned_commit(dataset.url) is None) if lacks == "commit" else (dataset.sha256 is None), name
    for pinned in PUBLISHED.values():
        assert pinned_commit(pinned.url) and re.fullmatch(r"[0-9a-f]{64}", pinned.sha256), pinned.name


def test_hub_urls_are_read_as_repository_file_and_revision():
    assert hub_file(DATASETS["knowedit"].url) == download.HubFile(
        "zjunlp/KnowEdit", "benchmark/wiki_recent/recent_test.json", "main")
    assert hub_file(DATASETS["mquake"].url) is None
    assert pinned_commit(DATASETS["mquake"].url) == "fb43dadc2d8cd19d08ce81c63d957b59deb3f3cd"


# ---- plain URLs, through pooch ------------------------------------------------------------------------------------

def test_a_pinned_download_lands_in_the_cache_with_its_checksum(cache, server):
    folder, base, requested = server
    data = b'[{"a": 1}]\n'
    (folder / "file.json").write_bytes(data)
    with deferred_downloads() as pending:  # validating: nothing is downloaded, the file is only noted
        noted = cached_download(f"{base}/file.json", "bench/file.json", "bench", sha256=sha256(data), size=len(data))
    assert not noted.exists() and requested == [] and [p.name for p in pending] == ["bench/file.json"]
    assert "will be downloaded on first run (11 B from http://127.0.0.1" in str(pending[0])
    path = cached_download(f"{base}/file.json", "bench/file.json", "bench", sha256=sha256(data), size=len(data))
    assert path == cache / "bench" / "file.json" and path.read_bytes() == data
    assert cached_download(f"{base}/file.json", "bench/file.json", "bench", sha256=sha256(data)) == path
    assert requested == ["/file.json"], "the cached copy is used the second time"
    assert leftovers(cache) == [cache / "bench", path], "no temporary file is left beside it"


def test_a_download_with_other_bytes_is_refused_and_nothing_is_kept(cache, server):
    folder, base, _ = server
    (folder / "file.json").write_bytes(b"[]")
    expected = sha256(b"the pinned bytes")
    with pytest.raises(ChecksumMismatchError, match=rf"downloaded from {base}/file.json is not the one keditlab pins "
                                                    rf"\(sha256 {sha256(b'[]')[:12]}…, expected {expected[:12]}…\); "
                                                    r"nothing was kept\. Fix: .*`path:`"):
        cached_download(f"{base}/file.json", "bench/file.json", "bench", sha256=expected)
    assert leftovers(cache) == [cache / "bench"]


def test_offline_names_the_url_and_the_fix_and_keeps_nothing(cache):
    with socket.socket() as s:  # a port nothing listens on: the connection is refused, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/file.json"
    with pytest.raises(DatasetUnavailableError, match=rf"dataset 'bench' is not cached \(.*\) and could not be "
                                                      rf"downloaded from its source {re.escape(url)} \(.*\)\. Fix: "
                                                      r"download that file yourself and give its location as `path:`"):
        cached_download(url, "bench/file.json", "bench", sha256=sha256(b"x"))
    assert leftovers(cache) == [cache / "bench"]


def test_a_cached_copy_that_is_not_the_pinned_file_is_downloaded_again(cache, server, capsys):
    folder, base, requested = server
    data = b'["pinned"]'
    (folder / "file.json").write_bytes(data)
    (cache / "bench").mkdir(parents=True)
    (cache / "bench" / "file.json").write_bytes(b'["cached from a moving branch"]')
    path = cached_download(f"{base}/file.json", "bench/file.json", "bench", sha256=sha256(data))
    assert path.read_bytes() == data and requested == ["/file.json"]
    assert "is not the file keditlab pins" in capsys.readouterr().err


def test_a_source_without_a_pinned_checksum_is_downloaded_and_said_to_be_unverified(cache, server, capsys):
    folder, base, _ = server
    (folder / "file.json").write_bytes(b"[1, 2]")
    with deferred_downloads() as pending:
        cached_download(f"{base}/file.json", "bench/file.json", "bench")
    assert "no pinned checksum, so it will be recorded as unverified" in str(pending[0])
    path = cached_download(f"{base}/file.json", "bench/file.json", "bench")
    assert path.read_bytes() == b"[1, 2]"
    assert f"has no pinned checksum, so keditlab cannot check that {base}/file.json" in capsys.readouterr().err


# ---- files on the Hub, through huggingface_hub -------------------------------------------------------------------

@pytest.fixture
def hub(monkeypatch):
    """``hf_hub_download`` replaced: it writes ``hub.data`` where the library would; ``hub.calls`` lists its calls."""
    import huggingface_hub

    class Hub:
        data = b"[]"
        calls: list[dict] = []
        error: Exception | None = None

        @staticmethod
        def download(repo_id, filename, **kwargs):
            Hub.calls.append({"repo_id": repo_id, "filename": filename, **kwargs})
            if Hub.error is not None:
                raise Hub.error
            path = Path(kwargs["local_dir"]) / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(Hub.data)
            return str(path)

    Hub.calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", Hub.download)
    return Hub


def test_a_hub_file_is_downloaded_at_its_revision_and_checked(cache, hub):
    hub.data = b'[{"x": 1}]'
    url = "https://huggingface.co/datasets/owner/bench/resolve/0123456789abcdef0123456789abcdef01234567/data/test.json"
    path = cached_download(url, "bench/test.json", "bench", sha256=sha256(hub.data))
    assert path == cache / "bench" / "test.json" and path.read_bytes() == hub.data
    (call,) = hub.calls
    assert (call["repo_id"], call["filename"], call["repo_type"], call["revision"]) == (
        "owner/bench", "data/test.json", "dataset", "0123456789abcdef0123456789abcdef01234567")
    assert leftovers(cache) == [cache / "bench", path], "the library's folder is removed"
    hub.data = b"other bytes"
    with pytest.raises(ChecksumMismatchError, match="is not the one keditlab pins"):
        cached_download(url, "bench/other.json", "bench", sha256=sha256(b'[{"x": 1}]'))
    assert not (cache / "bench" / "other.json").exists() and leftovers(cache) == [cache / "bench", path]


def test_the_hub_offline_names_the_url_and_the_fix(cache, hub):
    from huggingface_hub.errors import LocalEntryNotFoundError

    hub.error = LocalEntryNotFoundError("cannot reach the Hub and the file is not in the local cache")
    url = DATASETS["knowedit"].url
    with pytest.raises(DatasetUnavailableError, match=rf"could not be downloaded from its source {re.escape(url)} "
                                                      r"\(.*cannot reach the Hub.*\)\. Fix: .*`path:`"):
        dataset_cases("knowedit", limit=1)
    assert hub.calls[0]["revision"] == "main" and leftovers(cache) == [cache / "knowedit"]


# ---- what a run manifest records ---------------------------------------------------------------------------------

def test_the_manifest_records_a_downloaded_files_source_and_checksum(cache, server, shared_datasets, monkeypatch):
    folder, base, _ = server
    data = (shared_datasets / "mquake" / "MQuAKE-hard.json").read_bytes()  # stands in for the pinned file
    (folder / "MQuAKE-CF-3k-v2.json").write_bytes(data)
    url = f"{base}/MQuAKE-CF-3k-v2.json"
    monkeypatch.setitem(DATASETS, "mquake", dataclasses.replace(DATASETS["mquake"], url=url, sha256=sha256(data)))
    record = edits_record(spec_from_dict({"keditlab": 1, "edits": {"dataset": "mquake", "limit": 2}}))
    assert record["records"] == str(cache / "mquake" / "MQuAKE-CF-3k-v2.json") and record["count"] == 2
    assert (record["sha256"], record["bytes"]) == (sha256(data), len(data))
    assert record["source"] == {"name": "mquake/MQuAKE-CF-3k-v2.json", "url": url, "revision": None,
                                "pinned_sha256": sha256(data), "verified": True}  # a local URL names no revision


def test_the_manifest_records_a_local_files_checksum(tmp_path, shared_datasets, monkeypatch):
    monkeypatch.setenv("KEDITLAB_DATASETS", str(shared_datasets))
    name = "zsre/zsre_mend_train-1k.json"
    copy = tmp_path / "mine.json"
    copy.write_bytes((shared_datasets / name).read_bytes())
    record = edits_record(spec_from_dict({"keditlab": 1, "edits": {"dataset": "zsre", "path": str(copy), "limit": 2}}))
    assert record["sha256"] == sha256(copy.read_bytes()) and record["bytes"] == copy.stat().st_size
    assert record["source"] is None, "a local file keditlab knows no source of"
    # The same bytes in $KEDITLAB_DATASETS under a published name: a copy of that file, but not its pinned bytes
    # (this copy has CRLF line ends), so not verified.
    shared = file_provenance(shared_datasets / name)
    assert shared["source"]["name"] == name and shared["source"]["url"] == PUBLISHED[name].url
    assert shared["source"]["revision"] == pinned_commit(PUBLISHED[name].url) and shared["source"]["verified"] is False
    # A file with the pinned bytes is that file wherever it lies.
    known = tmp_path / "anywhere.json"
    known.write_bytes((shared_datasets / "knowns" / "known_1000.json").read_bytes())
    assert file_provenance(known)["source"]["verified"] is True
    assert edits_record(spec_from_dict({"keditlab": 1, "edits": [
        {"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "target": "Rome"}]})) == {"from": "spec", "count": 1}
