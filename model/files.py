"""Writing files so that a reader never sees half of one and a user never loses one.

:func:`atomic_write` is the one way spikeloom writes a file it may replace (model files, NIR graphs,
cache entries, reports, output markers): the bytes go to a temporary file beside the target, which
replaces the target only when complete, with the permissions a plain write would give (a new file:
``0666`` less the umask; a replaced file keeps its own).
"""

import os
import secrets
from pathlib import Path


def atomic_write(path, fill):
    """Write ``path`` through a temporary file beside it: ``fill(tmp_path)`` writes the file (or
    ``fill`` is the ``bytes``/``str`` to write), which replaces ``path`` only when complete; on any
    error the temporary file is removed and ``path`` is as it was. Missing folders are made.
    Returns ``path`` (a Path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:  # made like any new file (the umask's permissions, not mkstemp's 0600)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        if callable(fill):
            fill(tmp)
        else:
            tmp.write_bytes(fill.encode() if isinstance(fill, str) else fill)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
