"""Benchmark files fetched on demand from their public source into keditlab's cache.

``cached_download(url, name)`` returns ``$KEDITLAB_CACHE/datasets/<name>``
(the cache folder of :func:`keditlab.models.cache_root`, ``~/.cache/keditlab``
by default), downloading it first when it is not there, with a progress bar
(tqdm).  The file is written beside its final name and renamed when complete,
so an interrupted download never leaves a half file that looks cached.
Without the network and without a cached copy, :class:`DatasetUnavailableError`
names the source URL and how to point the spec at a local copy instead.
Given a ``sha256`` (a pinned file, :data:`keditlab.data.datasets.PUBLISHED`),
the downloaded bytes must have it, or nothing is kept.

Validation reads a spec without downloading anything: inside
:func:`deferred_downloads` a file that would be downloaded is only noted (a
:class:`PendingDownload`, which ``keditlab validate`` prints) and its would-be
path returned, so a spec naming a published file validates quickly and offline.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path


class DatasetUnavailableError(OSError):
    """A benchmark file is neither cached nor downloadable (offline, or the source is gone)."""


@dataclass(frozen=True)
class PendingDownload:
    """A file a spec needs that is not here yet: it is downloaded the first time the spec runs."""

    name: str
    url: str
    dest: Path
    size: int | None = None

    def __str__(self) -> str:
        size = f"{human_size(self.size)} " if self.size else ""
        return f"{self.name} is not here yet; it will be downloaded on first run ({size}from {self.url}) into {self.dest.parent}"


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


def human_size(size: int) -> str:
    """``538 kB``, ``3.2 MB``: a byte count as people read it."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}" if size < 10 * scale else f"{size / scale:.0f} {unit}"
    return f"{size} B"


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes, as ``sha256sum`` prints it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def datasets_cache() -> Path:
    """``$KEDITLAB_CACHE/datasets`` (default ``~/.cache/keditlab/datasets``)."""
    env = os.environ.get("KEDITLAB_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "keditlab"
    return root / "datasets"


def fetch_url(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` with a tqdm progress bar (raises ``OSError`` when it cannot)."""
    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a fixed https source
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(dest, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                bar.update(len(chunk))


def cached_download(url: str, name: str, dataset: str, *, sha256: str | None = None, size: int | None = None) -> Path:
    """The cached copy of ``url`` as ``datasets/<name>``, downloaded first when missing.

    With ``sha256`` the download is checked against it (a pinned file); a
    mismatch keeps nothing and is a :class:`DatasetUnavailableError`.  Inside
    :func:`deferred_downloads` a missing file is only noted, and the path it
    would have is returned.
    """
    dest = datasets_cache() / name
    if dest.is_file():
        return dest
    pending = _PENDING.get()
    if pending is not None:
        pending.append(PendingDownload(name, url, dest, size))
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    try:
        fetch_url(url, Path(tmp))
        if sha256 is not None and (got := sha256_of(Path(tmp))) != sha256:
            raise DatasetUnavailableError(
                f"the file downloaded from {url} is not the one keditlab pins (sha256 {got[:12]}…, expected {sha256[:12]}…); "
                f"nothing was kept. Fix: retry (a download cut short), or download the file yourself and give its "
                f"location as `path:` in the spec's edits")
        os.replace(tmp, dest)
    except DatasetUnavailableError:
        raise
    except (OSError, urllib.error.URLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DatasetUnavailableError(
            f"dataset {dataset!r} is not cached ({dest}) and could not be downloaded from its source {url} ({reason}). "
            f"Fix: download that file yourself and give its location as `path:` in the spec's edits "
            f"(edits: {{dataset: {dataset}, path: /where/it/is.json}}), or put it at {dest}."
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
