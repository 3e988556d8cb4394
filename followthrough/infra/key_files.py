"""Keys generated once and kept in a file under the data folder, so a one-machine setup needs no configuration."""

import os
import secrets
from pathlib import Path


def generated_key(path: Path, size: int = 32) -> bytes:
    """The key in ``path`` (hex), created with ``size`` random bytes and mode 0600 on first use;
    concurrent first callers all end up with the same key."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(size) + "\n")
        try:
            os.link(scratch, path)  # atomic and refuses to overwrite: the first writer's key wins
        except FileExistsError:
            pass
    finally:
        scratch.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())
