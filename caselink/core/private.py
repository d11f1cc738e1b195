"""Directories only their owner may use: the worker's data directory, the local broker's.

Why: the worker's data directory holds the linker's snapshot (the whole citizen index), and the
local broker's holds every topic's segments, personal data included. Created with the process's
umask they were 0755 with 0644 files, so any local user could read them around the broker's ACLs,
and a directory others may write lets them plant a file the process then reads.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)


class UnsafeDirectoryError(RuntimeError):
    """A directory that others may write, or that belongs to another user: not used."""


def ensure_private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) and leave it 0700.

    An existing directory of this user with group or other permission bits is tightened to 0700
    (and said so); one that others may write (world-writable), or that another user owns, is
    refused: something may already have been planted in it.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectoryError(f"{path} is not a directory")
    if info.st_uid != os.geteuid():
        raise UnsafeDirectoryError(f"{path} belongs to uid {info.st_uid}, not this user ({os.geteuid()}): not used")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o002:
        raise UnsafeDirectoryError(
            f"{path} is world-writable ({stat.filemode(info.st_mode)}): anyone could have planted files in it. "
            f"Check its contents, then `chmod 700 {path}`")
    if mode & 0o077:
        log.warning("%s was %s; made private (0700)", path, stat.filemode(info.st_mode))
        path.chmod(0o700)
    return path
