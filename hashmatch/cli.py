"""The ``hashmatch`` command line: parse, call the Python API, print.

Exit codes follow grep: 0 = success / matches found, 1 = no match, 2 = error.
"""
from __future__ import annotations

import contextlib
import json
import sys

import click

from . import __version__
from .fingerprint import ALGORITHMS
from .paths import PathProblem, expand_paths

EXIT_OK, EXIT_NO_MATCH, EXIT_ERROR = 0, 1, 2


def _fail(message: str) -> None:
    click.echo(f"hashmatch: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _files_from(paths, recursive: bool, all_files: bool = False) -> list[str]:
    try:
        files = expand_paths(paths, recursive=recursive, all_files=all_files)
    except PathProblem as exc:
        _fail(str(exc))
    if not files:
        _fail("no image files found in " + ", ".join(paths))
    return files


@contextlib.contextmanager
def progress_bar(total: int, label: str, quiet: bool):
    """A progress bar on stderr, only when stderr is a terminal and not --quiet.

    Yields a callback taking the number of items done so far.
    """
    if quiet or total < 2 or not sys.stderr.isatty():
        yield lambda done: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True,
                           show_eta=True) as bar:
        state = {"done": 0}

        def update(done: int) -> None:
            bar.update(done - state["done"])
            state["done"] = done

        yield update


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hashmatch")
def main():
    """Find copies of known images, even re-encoded, resized, cropped or mirrored.

    \b
    Typical use:
      hashmatch index ./known_adverts --recursive   # remember these images
      hashmatch query suspect.jpg                   # is this one of them?
      hashmatch hash photo.jpg                      # just print a fingerprint

    Every command has its own --help.
    """


@main.command("hash")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-a", "--algorithm", type=click.Choice(ALGORITHMS), default="pdq", show_default=True,
              help="Which fingerprint to compute. pdq is the industry standard (256 bits, with a "
                   "0-100 quality score); phash/dhash/ahash match the imagehash library.")
@click.option("--exact", is_flag=True,
              help="Decode at full resolution so the hash is bit-identical to the reference "
                   "implementations (pdqhash, imagehash). Slower; the default fast mode differs "
                   "by a few bits at most.")
@click.option("-r", "--recursive", is_flag=True, help="Read the images inside folders.")
@click.option("--all-files", is_flag=True,
              help="With --recursive, try every file, not only files with image extensions.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line: path, algorithm, hash, quality, sha256.")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def hash_command(paths, algorithm, exact, recursive, all_files, as_json, workers, quiet):
    """Print the fingerprint of each image: one line "hash,quality,path".

    The line format is the one of the PDQ reference tools, so the output can be shared as a
    hash list. Files that cannot be read are reported on stderr with the reason; the others
    are still hashed. Exit code 0 if every file was hashed, 2 if any failed.
    """
    from .hashing import iter_hash_files

    files = _files_from(paths, recursive, all_files)
    failures = 0
    with progress_bar(len(files), "hashing", quiet) as update:
        for result in iter_hash_files(files, (algorithm,), exact=exact, workers=workers,
                                      progress=update):
            if not result.ok:
                failures += 1
                click.echo(f"hashmatch: {result.path}: {result.error}", err=True)
                continue
            fp = result.fingerprint
            if as_json:
                click.echo(json.dumps({
                    "path": result.path, "algorithm": fp.algorithm, "hash": fp.hex(),
                    "quality": fp.quality, "sha256": result.sha256,
                }))
            else:
                quality = "" if fp.quality is None else fp.quality
                click.echo(f"{fp.hex()},{quality},{result.path}")
    if failures:
        click.echo(f"hashmatch: {failures} of {len(files)} files could not be hashed", err=True)
    sys.exit(EXIT_ERROR if failures else EXIT_OK)
