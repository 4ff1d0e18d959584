"""Listing the files of an inbox or export folder: regular files only, never followed.

A folder that other people (or a mail rule, or an attacker with write access to a
share) drop files into may hold a symlink to `/etc/shadow` or a customer database, a
FIFO that blocks the reader for ever, or a device. None of them is a message: each is
refused with the reason (it appears in the Quarantine sheet) and never opened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from bots.models import Quarantined

_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def special_kind(path: Path) -> str | None:
    """What a non-regular file is ("a symbolic link"...), None for a regular file or folder."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return None  # gone: the reader reports it as unreadable
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def folder_files(folder: Path, keep: Callable[[Path], bool], channel: str
                 ) -> Iterator[Path | Quarantined]:
    """The regular files of `folder` that `keep` wants, by name; special files refused."""
    for path in sorted(Path(folder).iterdir()):
        if not keep(path):
            continue
        if kind := special_kind(path):
            yield refused(channel, path, kind)
        elif path.is_file():
            yield path


def refused(channel: str, path: Path, kind: str) -> Quarantined:
    return Quarantined(channel, f"refused:{path}",
                       f"{path.name} is {kind}, not a file: refused and never read (only "
                       f"regular files in an intake folder are read)", source_ref=str(path))


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, opened without following a link or blocking on a FIFO.

    Raises OSError (ELOOP for a link swapped in since the listing, or ValueError-free
    EINVAL-like errors) when `path` is not a regular file any more.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit + 1)
    finally:
        os.close(fd)
