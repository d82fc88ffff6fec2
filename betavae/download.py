"""Downloads of published files (released models, datasets): the size stated first, a progress bar, a SHA-256
checksum verified before the file takes its name, and resumption of an interrupted download from its `.part` file
with an HTTP Range request. Every failure is one DataError sentence; nothing here runs at import time."""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

from betavae.errors import DataError

CHUNK = 1 << 16


@dataclass(frozen=True)
class Remote:
    """One published file: where it is, how long it is, its SHA-256 and the terms it is published under."""
    url: str
    size: int
    sha256: str
    licence: str


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fetch(remote: Remote, path: str, say=print, progress: bool = True) -> str:
    """Download `remote` to `path` (resuming `path`.part), verify its checksum and return `path`.

    A file already at `path` with the right checksum is kept as it is. A `.part` longer than the file, or one whose
    completed file fails the checksum, is removed, so that running the same command again starts afresh."""
    from tqdm import tqdm

    if os.path.isfile(path) and sha256_of(path) == remote.sha256:
        say(f"{path} is already here and verified (SHA-256 {remote.sha256[:12]}…)")
        return path
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise DataError(f"Cannot create {folder} ({error.strerror}); choose a writable folder.") from None
    partial = path + ".part"
    done = os.path.getsize(partial) if os.path.isfile(partial) else 0
    if done > remote.size:
        os.remove(partial)
        done = 0
    say(f"{remote.url}\n  {remote.size / 1e6:.1f} MB ({remote.licence}) → {path}"
        + (f", resuming at {done / 1e6:.1f} MB" if done else ""))
    request = urllib.request.Request(remote.url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if done and response.status != 206:  # the server ignored the range: start again
                done = 0
            with open(partial, "ab" if done else "wb") as file, \
                    tqdm(total=remote.size, initial=done, unit="B", unit_scale=True, disable=not progress) as bar:
                while block := response.read(CHUNK):
                    file.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or error
        raise DataError(f"The download of {remote.url} stopped ({reason}); run the same command again to resume "
                        f"from {partial}.") from None
    if os.path.getsize(partial) < remote.size:  # the connection closed early without an error
        raise DataError(f"The download of {remote.url} stopped at {os.path.getsize(partial) / 1e6:.1f} of "
                        f"{remote.size / 1e6:.1f} MB; run the same command again to resume from {partial}.")
    if os.path.getsize(partial) != remote.size or sha256_of(partial) != remote.sha256:
        got = os.path.getsize(partial)
        os.remove(partial)
        raise DataError(f"{remote.url} arrived as {got:,} bytes that fail the SHA-256 check (expected "
                        f"{remote.size:,} bytes, {remote.sha256[:12]}…); it was removed: run the same command "
                        f"again, or fetch the file by hand into {folder}.")
    os.replace(partial, path)
    return path
