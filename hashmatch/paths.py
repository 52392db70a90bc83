"""Turn the paths a user typed into the list of files to read."""
from __future__ import annotations

import os
from typing import Iterable

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
