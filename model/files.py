"""Writing files so that a reader never sees half of one and a user never loses one.

:func:`atomic_write` is the one way spikeloom writes a file it may replace (model files, NIR graphs):
the bytes go to a temporary file beside the target, which replaces the target only when complete,
with the permissions a plain write would give (the existing file's, else ``0666`` less the umask).
"""

import os
import tempfile
from pathlib import Path


def _mode(path):
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path, write):
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move it onto ``path``; on any
    error the temporary file is removed and ``path`` is as it was. Returns ``path`` (a Path)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _mode(path))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
