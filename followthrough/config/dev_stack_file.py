"""``<data_dir>/dev.json``: what a running ``followthrough dev`` chose (Temporal address, namespace, task queue,
no Temporal client profile, API host and port, codec mode, data folder), so that a command run in the same
folder finds that stack with no environment of its own (followthrough/config/settings.py reads it for the command line
only, never for `api` or `worker`). It holds no secret: the codec key already lives in the data folder.

A file in a working folder must not be able to redirect or loosen anything, so it is believed only when it
describes a live dev stack of this user on loopback: a regular file (not a link) owned by this user and writable
by no one else, found in the folder it names, whose pid is alive, whose Temporal address is a loopback one.
Only the names in FIELDS are ever taken from it: never anonymous access, codec keys or secrets.
"""

import json
import os
import stat
from pathlib import Path
from typing import Any

from followthrough.domain.principals import is_loopback

FILE_NAME = "dev.json"
# What a command takes from the file, each below the same setting named in the environment.
FIELDS = ("temporal_address", "temporal_namespace", "task_queue", "temporal_ui_url", "temporal_envconfig",
          "api_host", "api_port", "codec", "database_url")
# Settings that point a command at a Temporal or database of its own: one of them set otherwise than the
# file says, and the file is not that command's.
POINTERS = ("temporal_address", "database_url", "temporal_config_file", "temporal_profile")
CODECS = ("on", "local-key", "off")


def path_in(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def write(data_dir: Path, values: dict[str, Any]) -> Path:
    """Write the file for this process (mode 0600, replaced atomically); answers its path."""
    target = path_in(data_dir)
    scratch = target.with_name(f".{FILE_NAME}.{os.getpid()}")
    body = {"pid": os.getpid(), "data_dir": str(data_dir.resolve())} | values
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(body, out, indent=2)
        out.write("\n")
    os.replace(scratch, target)
    return target


def remove(data_dir: Path) -> None:
    """Remove the file if it is this process's own (a later `dev` in the folder may have replaced it)."""
    target = path_in(data_dir)
    found = _read(target)
    if found is not None and found.get("pid") == os.getpid():
        target.unlink(missing_ok=True)


def live(data_dir: Path) -> dict[str, Any] | None:
    """The file's contents when it describes a live dev stack of this user on loopback, else None."""
    target = path_in(data_dir)
    found = _read(target)
    if found is None:
        return None
    pid = found.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not _alive(pid):
        return None
    try:
        if Path(found.get("data_dir", "")).resolve() != data_dir.resolve():
            return None  # copied or moved from another folder: not this folder's stack
    except (OSError, TypeError):
        return None
    address = found.get("temporal_address")
    if not isinstance(address, str) or not is_loopback(address.rpartition(":")[0].strip("[]")):
        return None
    if found.get("codec") not in CODECS:
        return None
    values = {name: found[name] for name in FIELDS if name in found}
    if not is_loopback(str(values.get("api_host", "127.0.0.1"))):
        values.pop("api_host", None)
        values.pop("api_port", None)
    return values | {"pid": pid}


def _read(target: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # missing, unreadable, or a symbolic link
        return None
    with os.fdopen(fd) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return None
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            return None
        try:
            found = json.loads(handle.read(64 * 1024))
        except (ValueError, UnicodeDecodeError):
            return None
    return found if isinstance(found, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: not this user's dev stack
        return False
    except OSError:
        return False
    return True
