"""Files on disk: the paths a user typed turned into the list of files to read, and the one
way this package replaces a file it writes (reports, codes caches, index segment files)."""
from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable, Iterable

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .gif .webp .bmp .dib .tif .tiff .ppm .pgm .pbm .pnm .ico "
    ".tga .avif .heic .heif".split()
)


class PathProblem(Exception):
    """A path the user gave cannot be used (missing, or a folder without --recursive)."""


def expand_paths(paths: Iterable[str], recursive: bool = False, all_files: bool = False) -> list[str]:
    """Files named directly are kept whatever their extension; folders (with ``recursive``)
    contribute their image files (every file with ``all_files``), sorted, hidden ones skipped.
    """
    out: list[str] = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            if not recursive:
                raise PathProblem(f"{path} is a folder: add --recursive to read the images in it")
            out.extend(_walk(path, all_files))
        elif os.path.exists(path) or os.path.islink(path):
            out.append(path)
        else:
            raise PathProblem(f"{path}: no such file or folder")
    return out


def _walk(root: str, all_files: bool) -> list[str]:
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            if all_files or os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(os.path.join(folder, name))
    return found


def write_atomically(path, content: bytes | Callable[[BinaryIO], object],
                     permissions: int | None = None) -> None:
    """Replace ``path`` with ``content`` (bytes, or a function writing to the open binary
    file) so that a crash, a full disk or an exception in the writer leaves either the old
    file or the new one, never a part: a temporary file in the same folder, flushed and
    fsynced, is renamed over ``path``, then the folder is fsynced so the rename survives a
    power loss too. ``permissions``: the new file's mode (else mkstemp's 0o600)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    # <name>.<random>.tmp: cli._is_database_file recognises a codes cache's temporary by it
    handle, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                                         dir=folder)
    try:
        with os.fdopen(handle, "wb") as out:
            if callable(content):
                content(out)
            else:
                out.write(content)
            out.flush()
            os.fsync(out.fileno())  # the data is on disk before the rename makes it visible
        if permissions is not None:
            os.chmod(temporary, permissions)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
