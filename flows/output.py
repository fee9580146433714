"""Output folders and files that never cost a user a file, even when a run is interrupted.

``spikeloom generate -o DIR`` and ``spikeloom export -o DIR`` build their files in a fresh staging
folder and only then move them into ``DIR`` (:func:`staged`). ``DIR`` gets a marker,
:data:`MARKER`, that lists the files spikeloom wrote there and the command that wrote them:

- a folder that does not exist yet appears whole, in one rename, or not at all;
- an existing folder that is not empty and has no marker is refused, unless ``--force``;
- into a folder with a marker (or with ``--force``) spikeloom replaces the files its marker lists
  and removes those of them that the new output no longer has; no other file is touched: an
  output whose file names include one that exists but is not listed is refused, ``--force`` or not.

:func:`check_out_dir` refuses, before any work, an output path that is a file, lies under a file
or cannot be written; :func:`atomic_write` writes one file through a temporary file beside it
(the training cache and the report use it).
"""

import json
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from spikeloom.model.errors import ConfigError
from spikeloom.model.files import atomic_write  # the one atomic writer, re-exported for the flows

__all__ = ["MARKER", "check_out_dir", "check_out_file", "check_replaceable", "check_claimable", "claim_folder", "staged", "atomic_write",
           "read_marker"]

#: The marker file in every folder that ``generate`` or ``export`` wrote.
MARKER = ".spikeloom-output.json"
#: Prefix of the staging folders (beside a new output folder, or inside an existing one).
STAGE_PREFIX = ".spikeloom-stage-"


def _nearest(path):
    """The deepest existing ancestor of ``path`` (``path`` itself when it exists)."""
    p = Path(os.path.abspath(path))
    while not os.path.lexists(p):
        p = p.parent
    return p


def check_out_dir(path, option="-o"):
    """Refuse, before any work, an output folder ``path`` that is a file, lies under a file, or
    whose nearest existing folder cannot be written (one line naming ``option`` and the path)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file, not a folder")
    base = _nearest(path)
    if not base.is_dir():
        raise ConfigError(f"{option} {path}: {base} is a file, so no folder can be made under it")
    _probe(base, option, path)


def check_out_file(path, option="-o", inputs=(), ours=None, what="a file"):
    """Refuse, before any work, an output file ``path`` that is a folder, lies under a file, or
    whose nearest existing folder cannot be written (its missing folders are made when written);
    and an existing file that the output would cost the user: one of the command's ``inputs``
    (``(option, path)`` pairs), or one that ``ours(path)`` does not recognise as ``what`` spikeloom
    writes (``ours`` None: any file may be replaced)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give the file's path")
    if path.exists():
        for opt, src in inputs:
            if src is not None and Path(src).exists() and os.path.samefile(src, path):
                raise ConfigError(f"{option} {path}: is the input {opt}; the output would replace it "
                                  "(give another path)")
        if ours is not None and not ours(path):
            raise ConfigError(f"{option} {path}: exists and is not {what} spikeloom wrote; a file spikeloom "
                              "did not write is never replaced (remove it or give another path)")
    base = _nearest(path.parent)
    if not base.is_dir():
        raise ConfigError(f"{option} {path}: {base} is a file, not a folder")
    _probe(base, option, path)


def _probe(base, option, path):
    """Whether a file can be made in the existing folder ``base`` (creating and removing one)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=STAGE_PREFIX, suffix=".probe", dir=base)
    except OSError as e:
        raise ConfigError(f"{option} {path}: cannot write in {base} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def read_marker(folder):
    """The marker of ``folder``: ``{"command", "files"}``, or ``None`` when it has none. A marker
    that is not one raises :class:`ConfigError`."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
        files = meta["files"]
        if not (isinstance(files, list) and all(isinstance(f, str) and _safe(f) for f in files)):
            raise ValueError("'files' is not a list of relative paths inside the folder")
        return {"command": meta.get("command"), "files": files}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise ConfigError(f"{path}: not a spikeloom output marker ({e}); remove it, or choose another "
                          "folder") from None


def _safe(rel):
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel and rel != MARKER


def _owned(folder, force, option):
    """The files of ``folder`` that spikeloom may replace or remove (its marker's list), after
    refusing a non-empty folder without a marker unless ``force``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    try:
        marker = read_marker(folder)
    except ConfigError:
        if not force:
            raise
        marker = None
    if marker is not None:
        return marker["files"]
    if not force and any(not e.name.startswith(STAGE_PREFIX) for e in folder.iterdir()):
        raise ConfigError(f"{option} {folder}: the folder is not empty and spikeloom did not write it (no {MARKER}); "
                          f"choose an empty or new folder, or add --force to add spikeloom's files to it (a file "
                          "spikeloom did not write is never replaced or removed)")
    return []


def check_replaceable(path, force=False, option="-o"):
    """:func:`check_out_dir`, then refuse a non-empty ``path`` without a marker unless ``force``."""
    check_out_dir(path, option)
    _owned(path, force, option)


def check_claimable(folder, option="--build"):
    """Refuse, before any work, a work folder (:func:`claim_folder`) that is not empty and that
    spikeloom did not write."""
    check_out_dir(folder, option)
    folder = Path(folder)
    if folder.is_dir() and read_marker(folder) is None and any(folder.iterdir()):
        raise ConfigError(f"{option} {folder}: the folder is not empty and spikeloom did not write it (no {MARKER}); "
                          "choose an empty or new folder")


def claim_folder(folder, command, option="--build"):
    """A work folder that a command fills step by step (``spikeloom cosim --build``): refused, before
    any work, when it is not empty and spikeloom did not write it (no :data:`MARKER`); else made, and
    marked as spikeloom's (a marker listing no files: nothing in it is a user's to keep)."""
    check_claimable(folder, option)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if read_marker(folder) is None:
            atomic_write(folder / MARKER, _marker_text(command, []))
    except OSError as e:
        raise ConfigError(f"{option} {folder}: cannot write ({e.strerror or e})") from None


def _files(stage):
    return sorted(p.relative_to(stage).as_posix() for p in Path(stage).rglob("*") if p.is_file())


def _marker_text(command, files):
    return json.dumps({"written_by": "spikeloom", "command": command, "files": sorted(files)}, indent=1) + "\n"


def _install(stage, out, command, force, option):
    """Move the files of ``stage`` (inside ``out``) into ``out``; see the module docstring."""
    new = _files(stage)
    owned = set(_owned(out, force, option))
    taken = []
    for rel in new:
        dest = out / rel
        for parent in reversed(PurePosixPath(rel).parents[:-1]):
            if (out / parent).exists() and not (out / parent).is_dir():
                raise ConfigError(f"{option} {out}: {out / parent} is a file where spikeloom writes a folder; "
                                  "move it away, or choose another folder")
        if dest.is_dir() and not dest.is_symlink():
            raise ConfigError(f"{option} {out}: {dest} is a folder where spikeloom writes a file; move it away, "
                              "or choose another folder")
        if os.path.lexists(dest) and rel not in owned:
            taken.append(rel)
    if taken:
        more = f" and {len(taken) - 3} more" if len(taken) > 3 else ""
        raise ConfigError(f"{option} {out}: {', '.join(taken[:3])}{more} would be overwritten but spikeloom did not "
                          f"write {'them' if len(taken) > 1 else 'it'} (not in {MARKER}; spikeloom never replaces "
                          "a file it did not write, --force or not): move them away, or choose another folder")
    # the marker first lists both lists, so that an interruption leaves every file spikeloom wrote listed
    atomic_write(out / MARKER, _marker_text(command, owned | set(new)))
    for rel in new:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / rel, out / rel)
    for rel in sorted(owned - set(new)):
        dest = out / rel
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        for parent in PurePosixPath(rel).parents[:-1]:
            try:
                (out / parent).rmdir()  # only a folder that is now empty
            except OSError:
                break
    atomic_write(out / MARKER, _marker_text(command, new))
    return [out / rel for rel in new]


def _new_stage(parent):
    """A new empty folder in ``parent`` (made with the user's umask, unlike ``mkdtemp``: a new
    output folder is this folder renamed)."""
    while True:
        stage = Path(parent) / f"{STAGE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            stage.mkdir()
            return stage
        except FileExistsError:
            continue


@contextmanager
def staged(out, command, force=False, option="-o"):
    """Build an output folder: yields an empty staging folder to write into; when the block ends
    without an error its files move into ``out`` (see the module docstring) and the list of their
    final paths is in ``result.files``. On an error nothing in ``out`` has changed and the staging
    folder (and any parent folder made for it) is removed.

    ``command``: what the marker records as the command that wrote the folder.
    """
    out = Path(out)
    check_replaceable(out, force, option)
    made = []
    if not out.is_dir():
        for p in reversed(Path(os.path.abspath(out)).parents):
            if not p.exists():
                p.mkdir()
                made.append(p)
    stage = _new_stage(out if out.is_dir() else out.parent)
    result = _Result()
    try:
        yield stage, result
        if stage.parent == out:
            result.files = _install(stage, out, command, force, option)
        else:
            files = _files(stage)
            (stage / MARKER).write_text(_marker_text(command, files))
            try:  # the new folder appears whole, in one rename
                os.rename(stage, out)
            except OSError as e:
                raise ConfigError(f"{option} {out}: cannot move the output into place ({e.strerror or e}); "
                                  "was the folder made by another program meanwhile?") from None
            result.files = [out / rel for rel in files]
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        if result.files is None:
            for p in reversed(made):
                try:
                    p.rmdir()
                except OSError:
                    break


class _Result:
    files = None
