"""Benchmark files fetched on demand from their public source into keditlab's cache.

``cached_download(url, name, dataset, sha256=..., size=...)`` returns
``$KEDITLAB_CACHE/datasets/<name>`` (the ``datasets`` folder of keditlab's
cache, :func:`keditlab.models.cache_root`: ``~/.cache/keditlab`` by default),
downloading it first when it is not there.  Two well-kept libraries do the
downloading:

* files on the Hugging Face Hub (``https://huggingface.co/datasets/<repo>/resolve/<revision>/<file>``)
  through ``huggingface_hub.hf_hub_download``, at the revision the URL names;
* every other URL through `pooch <https://www.fatiando.org/pooch/>`_.

Both show a progress bar.  Whatever the library, the file lands in a private
temporary folder beside the cache first; keditlab then checks its sha256
against the pinned one (``sha256``) and only then renames it to its final
name, so an interrupted or wrong download never leaves a file that looks
cached.  A mismatch keeps nothing and is a :class:`ChecksumMismatchError`.
A source without a pinned sha256 is downloaded all the same, but keditlab
says that it could not verify it (and the run manifest records it unverified:
:func:`keditlab.data.datasets.file_provenance`).

A cached copy is checked against the pin too, once per process (the hash is
remembered by path, size and modification time, :func:`sha256_of`): a copy
that is not the pinned file (cached by an older keditlab from a moving
branch, or put there by hand) is downloaded again.

Without the network and without a cached copy, :class:`DatasetUnavailableError`
names the source URL and how to point the spec at a local copy instead.

Validation reads a spec without downloading anything: inside
:func:`deferred_downloads` a file that would be downloaded is only noted (a
:class:`PendingDownload`, which ``keditlab validate`` prints) and its would-be
path returned, so a spec naming a published file validates quickly and offline.

``pooch`` and ``huggingface_hub`` are imported only when something is
downloaded, so importing :mod:`keditlab.data` stays light.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path


class DatasetUnavailableError(OSError):
    """A benchmark file is neither cached nor downloadable (offline, or the source is gone)."""


class ChecksumMismatchError(DatasetUnavailableError):
    """The bytes a source served are not the file keditlab pins (nothing was kept)."""


@dataclass(frozen=True)
class PendingDownload:
    """A file a spec needs that is not here yet: it is downloaded the first time the spec runs.

    ``sha256`` is the pinned checksum the download will be checked against
    (None: the source has none, and the download will be recorded unverified).
    """

    name: str
    url: str
    dest: Path
    size: int | None = None
    sha256: str | None = None

    def __str__(self) -> str:
        size = f"{human_size(self.size)} " if self.size else ""
        unverified = "; it has no pinned checksum, so it will be recorded as unverified" if self.sha256 is None else ""
        return (f"{self.name} is not here yet; it will be downloaded on first run ({size}from {self.url}) "
                f"into {self.dest.parent}{unverified}")


_PENDING: ContextVar[list[PendingDownload] | None] = ContextVar("keditlab_pending_downloads", default=None)


@contextmanager
def deferred_downloads() -> Iterator[list[PendingDownload]]:
    """Within this block nothing is downloaded: each file that would be is appended to the list yielded.

    ``keditlab validate`` checks specs inside it, so validation never touches
    the network and reports a missing published file as a note, not an error.
    """
    outer = _PENDING.get()
    if outer is not None:  # already deferring (the CLI around a validator): the outer block collects the notes
        yield outer
        return
    pending: list[PendingDownload] = []
    token = _PENDING.set(pending)
    try:
        yield pending
    finally:
        _PENDING.reset(token)


#: Inside :func:`failures_remembered`: URLs whose download failed, with the error said.
_FAILED: ContextVar[dict[str, str] | None] = ContextVar("keditlab_failed_downloads", default=None)


@contextmanager
def failures_remembered() -> Iterator[None]:
    """Within this block a download that failed fails again at once, with the same error, when asked for again.

    A sweep resolves its cells one by one, and every cell of a dataset reads
    the same published file: one wait on an unreachable server is enough.
    """
    if _FAILED.get() is not None:
        yield
        return
    token = _FAILED.set({})
    try:
        yield
    finally:
        _FAILED.reset(token)


def human_size(size: int) -> str:
    """``538 kB``, ``3.2 MB``: a byte count as people read it."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}" if size < 10 * scale else f"{size / scale:.0f} {unit}"
    return f"{size} B"


#: sha256 of the files already hashed in this process, by (path, size, modification time in ns).
_HASHED: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes, as ``sha256sum`` prints it.

    Remembered for the process by path, size and modification time, so the
    check of a cached file and the manifest's record of the same file hash it
    once; a file written again (another size or time) is hashed again.
    """
    stat = os.stat(path)
    key = (str(Path(path).absolute()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _HASHED[key] = digest.hexdigest()
    return _HASHED[key]


def datasets_cache() -> Path:
    """``$KEDITLAB_CACHE/datasets`` (default ``~/.cache/keditlab/datasets``).

    The same cache folder as :func:`keditlab.models.cache_root`, computed here
    because the data layer does not import the models layer.
    """
    env = os.environ.get("KEDITLAB_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "keditlab"
    return root / "datasets"


@dataclass(frozen=True)
class HubFile:
    """A file of a dataset repository on the Hugging Face Hub, at one revision (a commit, or a branch)."""

    repo_id: str
    filename: str
    revision: str


_HUB_URL = re.compile(r"https://huggingface\.co/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)")
_GITHUB_RAW_URL = re.compile(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/(?P<revision>[^/]+)/.+")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_file(url: str) -> HubFile | None:
    """The Hub file a ``huggingface.co/datasets/<repo>/resolve/<revision>/<file>`` URL names, else None."""
    match = _HUB_URL.fullmatch(url)
    return HubFile(match["repo"], match["filename"], match["revision"]) if match else None


def url_revision(url: str) -> str | None:
    """The revision a GitHub raw or Hub URL names (a commit, or a branch such as ``main``); None for other hosts."""
    match = _GITHUB_RAW_URL.fullmatch(url) or _HUB_URL.fullmatch(url)
    return match["revision"] if match else None


def pinned_commit(url: str) -> str | None:
    """The commit a GitHub raw or Hub URL is pinned to, or None (a branch, which moves, or a host without commits)."""
    revision = url_revision(url)
    return revision if revision and _COMMIT.fullmatch(revision) else None


def fetch_url(url: str, folder: Path, filename: str) -> Path:
    """Download ``url`` with pooch into ``folder/filename`` (a progress bar; ``OSError`` when it cannot)."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # keditlab says what it downloads; pooch's own lines would repeat it
    try:
        return Path(pooch.retrieve(url, known_hash=None, fname=filename, path=folder, progressbar=True))
    finally:
        logger.setLevel(level)


def fetch_hub(file: HubFile, folder: Path) -> Path:
    """Download a Hub dataset file with ``huggingface_hub`` into ``folder`` (a progress bar; ``OSError`` when it cannot).

    ``local_dir`` makes the library write into keditlab's temporary folder
    rather than its own cache, so a file that fails the checksum is not kept
    anywhere.
    """
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(file.repo_id, file.filename, repo_type="dataset", revision=file.revision,
                                local_dir=folder))


def cached_download(url: str, name: str, dataset: str, *, sha256: str | None = None, size: int | None = None) -> Path:
    """The cached copy of ``url`` as ``datasets/<name>``, downloaded (and checked against ``sha256``) first when missing.

    ``dataset`` names the dataset in error messages.  Inside
    :func:`deferred_downloads` a missing file is only noted, and the path it
    would have is returned.  Raises :class:`ChecksumMismatchError` when the
    download is not the pinned file, :class:`DatasetUnavailableError` when it
    cannot be downloaded; either way nothing is kept.
    """
    dest = datasets_cache() / name
    cached = dest.is_file()
    if cached and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    pending = _PENDING.get()
    if pending is not None:
        pending.append(PendingDownload(name, url, dest, size, sha256))
        return dest
    if cached and sha256 is not None:
        _say(f"the cached {dest} is not the file keditlab pins (sha256 {sha256_of(dest)[:12]}…, "
             f"expected {sha256[:12]}…); downloading the pinned one again")
    failed = _FAILED.get()
    if failed is not None and url in failed:   # the same file for another cell of a sweep: said once is enough
        raise DatasetUnavailableError(failed[url])
    dest.parent.mkdir(parents=True, exist_ok=True)
    _say(f"downloading {name} ({human_size(size) + ' ' if size else ''}from {url})")
    folder = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
    try:
        hub = hub_file(url)
        try:
            downloaded = fetch_hub(hub, folder) if hub else fetch_url(url, folder, dest.name)
        except (OSError, ValueError) as exc:
            message = (f"dataset {dataset!r} is not cached ({dest}) and could not be downloaded from its source {url} "
                       f"({_reason(exc)}). Fix: download that file yourself and give its location as `path:` in the "
                       f"spec's edits (edits: {{dataset: {dataset}, path: /where/it/is.json}}), or put it at {dest}.")
            if failed is not None:
                failed[url] = message
            raise DatasetUnavailableError(message) from None
        got = sha256_of(downloaded)
        if sha256 is not None and got != sha256:
            raise ChecksumMismatchError(
                f"the file downloaded from {url} is not the one keditlab pins (sha256 {got[:12]}…, expected "
                f"{sha256[:12]}…); nothing was kept. Fix: retry (a download cut short), or, if the source changed "
                f"its file, download the one you want yourself and give its location as `path:` in the spec's "
                f"edits (the run manifest then records its sha256)")
        os.replace(downloaded, dest)
        if sha256 is None:
            _say(f"{name} has no pinned checksum, so keditlab cannot check that {url} served the file its reader "
                 f"was written for; its sha256 is {got} (run manifests record it as unverified)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return dest


def _reason(exc: BaseException) -> str:
    """An exception as one short line: its type and the start of its message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 300:
        text = text[:300] + "…"
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def _say(message: str) -> None:
    """A line for the person running keditlab, on stderr (stdout may be a table or JSON)."""
    print(f"keditlab: {message}", file=sys.stderr, flush=True)
