"""Downloads of published files (released models, datasets): the size stated first, a progress bar, the checksum
verified before the file takes its name, and resumption of an interrupted download from its `.part` file with an
HTTP Range request. Every failure is one DataError sentence; nothing here runs at import time."""
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
    """One published file: where it is, its length in bytes (0: as the server says), its checksum ("sha256:…" or
    "md5:…", or a bare SHA-256, as its publisher or a public mirror states it; "" where none is published) and the
    terms it is published under."""
    url: str
    size: int
    checksum: str
    licence: str
    name: str = ""                 # the file name to save under (default: the URL's last part)

    @property
    def filename(self) -> str:
        return self.name or self.url.rsplit("/", 1)[-1].split("?")[0]

    @property
    def digest(self) -> tuple[str, str]:
        """(hashlib algorithm, expected hex digest)."""
        kind, _, value = self.checksum.rpartition(":")
        return kind or "sha256", value


def digest_of(path: str, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verified(remote: Remote, path: str) -> bool:
    """The file has the published size and checksum (never true without a published checksum)."""
    algorithm, expected = remote.digest
    return (not remote.size or os.path.getsize(path) == remote.size) and digest_of(path, algorithm) == expected


def fetch(remote: Remote, path: str, say=print, progress: bool = True) -> str:
    """Download `remote` to `path` (resuming `path`.part), verify its checksum and return `path`.

    A file already at `path` with the right checksum is kept as it is. A `.part` longer than the file, or one whose
    completed file fails the checksum, is removed, so that running the same command again starts afresh."""
    from tqdm import tqdm

    if os.path.isfile(path) and (not remote.checksum or verified(remote, path)):
        say(f"{path} is already here and " + (f"verified ({remote.digest[0]} {remote.digest[1][:12]}…)"
                                              if remote.checksum else "unverified (no checksum is published)"))
        return path
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise DataError(f"Cannot create {folder} ({error.strerror}); choose a writable folder.") from None
    partial = path + ".part"
    done = os.path.getsize(partial) if os.path.isfile(partial) else 0
    if remote.size and done > remote.size:
        os.remove(partial)
        done = 0
    request = urllib.request.Request(remote.url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if done and response.status != 206:  # the server ignored the range: start again
                done = 0
            size = remote.size or done + int(response.headers.get("Content-Length") or 0)
            say(f"{remote.url}\n  {size / 1e6:.1f} MB ({remote.licence}) → {path}"
                + (f", resuming at {done / 1e6:.1f} MB" if done else ""))
            with open(partial, "ab" if done else "wb") as file, \
                    tqdm(total=size or None, initial=done, unit="B", unit_scale=True, disable=not progress) as bar:
                while block := response.read(CHUNK):
                    file.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or error
        raise DataError(f"The download of {remote.url} stopped ({reason}); run the same command again to resume "
                        f"from {partial}.") from None
    got = os.path.getsize(partial)
    if size and got < size:  # the connection closed early without an error
        raise DataError(f"The download of {remote.url} stopped at {got / 1e6:.1f} of {size / 1e6:.1f} MB; run the "
                        f"same command again to resume from {partial}.")
    if remote.checksum and not verified(remote, partial):
        os.remove(partial)
        algorithm, expected = remote.digest
        raise DataError(f"{remote.url} arrived as {got:,} bytes that fail the {algorithm} check (expected "
                        f"{remote.size or size:,} bytes, {expected[:12]}…); it was removed: run the same command "
                        f"again, or fetch the file by hand into {folder}.")
    os.replace(partial, path)
    if not remote.checksum:  # nothing published to check against: say what arrived, for the record
        say(f"{path}: {got:,} bytes, SHA-256 {digest_of(path)} (no checksum is published to verify it against)")
    return path
