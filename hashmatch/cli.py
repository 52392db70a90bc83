"""The ``hashmatch`` command line: parse, call the Python API, print.

Exit codes follow grep: 0 = success / matches found, 1 = no match, 2 = error.
"""
from __future__ import annotations

import contextlib
import json
import os
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


# -- database commands ----------------------------------------------------------------------

def _db_option(f):
    return click.option(
        "--db", "db", default=None, metavar="PATH",
        help="The database file. Default: $HASHMATCH_DB, else hashmatch.hmdb in the current "
             "folder.")(f)


def _open_index(db, create: bool, algorithms=("pdq",)):
    from .errors import HashmatchError
    from .index import Index, default_db_path

    path = db or default_db_path()
    if not create and not os.path.exists(path):
        _fail(f"no database at {path}: run 'hashmatch index FOLDER' first, or pass --db")
    try:
        return Index.open(path, create=create, algorithms=algorithms)
    except HashmatchError as exc:
        _fail(str(exc))


@main.command("index")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_db_option
@click.option("-r", "--recursive", is_flag=True, help="Read the images inside folders.")
@click.option("--all-files", is_flag=True,
              help="With --recursive, try every file, not only files with image extensions.")
@click.option("-l", "--label", "labels", multiple=True,
              help="A label stored with every image (repeatable), e.g. --label fake-id.")
@click.option("-s", "--source", default=None,
              help='Where these images come from, e.g. "NCA referral 2024-05".')
@click.option("-a", "--algorithm", "algorithms", multiple=True, type=click.Choice(ALGORITHMS),
              help="Fingerprints to store (repeatable). Default: pdq.")
@click.option("--min-quality", type=click.IntRange(0, 100), default=None,
              help="Skip images whose PDQ quality is below this (flat or nearly empty images).")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes for hashing (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def index_command(paths, db, recursive, all_files, labels, source, algorithms, min_quality,
                  workers, quiet):
    """Add images to the database so that copies of them can be found later.

    Each file is fingerprinted and stored with its path, SHA-256, labels and source. A file
    already in the database (same SHA-256) is reported as a duplicate, not stored twice.
    Files that cannot be read are listed with the reason; the others are still added, and
    everything reported added is saved even if the run is interrupted.

    Exit code 0 if every file was added (or was a duplicate), 2 if any failed.
    """
    files = _files_from(paths, recursive, all_files)
    index = _open_index(db, create=True, algorithms=algorithms or ("pdq",))
    with index:
        with progress_bar(len(files), "indexing", quiet) as update:
            report = index.add_files(files, labels=list(labels), source=source, workers=workers,
                                     progress=update, min_quality=min_quality)
        total = len(index)
    counts = report.counts()
    for outcome in report.failed:
        click.echo(f"failed: {outcome.path}: {outcome.reason}", err=True)
    for outcome in report.skipped:
        click.echo(f"skipped: {outcome.path}: {outcome.reason}", err=True)
    click.echo(f"added {counts['added']}, duplicates {counts['duplicate']}, "
               f"skipped {counts['skipped']}, failed {counts['failed']} "
               f"-> {total} images in {index.path}")
    sys.exit(EXIT_ERROR if counts["failed"] else EXIT_OK)


@main.command("query")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_db_option
@click.option("-r", "--recursive", is_flag=True, help="Query every image inside folders.")
@click.option("-d", "--max-distance", type=click.IntRange(min=0), default=None,
              help="Largest Hamming distance that counts as a match (default: 31 for pdq, "
                   "10 for phash/dhash/ahash). Lower = stricter.")
@click.option("-k", "--top", "top_k", type=click.IntRange(min=1), default=None,
              help="Show at most this many matches per image.")
@click.option("--no-rotations", is_flag=True,
              help="Do not also look for rotated (90/180/270) and mirrored copies.")
@click.option("--min-quality", type=click.IntRange(0, 100), default=None,
              help="Ignore fingerprints (query or stored) with a PDQ quality below this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per query image.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: one row per match.")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes for hashing the queries (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def query_command(paths, db, recursive, max_distance, top_k, no_rotations, min_quality,
                  as_json, as_csv, workers, quiet):
    """Is this image a copy of one in the database? Lists the matches, closest first.

    The distance is the number of fingerprint bits that differ: 0 = same picture, up to
    about 31 (pdq) = same picture edited or re-compressed. Rotated and mirrored copies are
    found too (column HOW).

    Exit code 0 if any image matched, 1 if none did, 2 on error.
    """
    if as_json and as_csv:
        _fail("choose one of --json and --csv")
    files = _files_from(paths, recursive)
    index = _open_index(db, create=False)
    with index:
        with progress_bar(len(files), "querying", quiet) as update:
            results = index.query_many(files, max_distance=max_distance, top_k=top_k,
                                       dihedral=not no_rotations, min_quality=min_quality,
                                       workers=workers, progress=update)
    from .formats import write_query_results

    write_query_results(results, "json" if as_json else "csv" if as_csv else "table",
                        sys.stdout)
    errors = [r for r in results if r.error]
    for r in errors:
        click.echo(f"hashmatch: {r.path}: {r.error}", err=True)
    if errors:
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_OK if any(r.matches for r in results) else EXIT_NO_MATCH)


@main.command("info")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info_command(db, as_json):
    """Show what the database holds: images, fingerprints, size, last change."""
    index = _open_index(db, create=False)
    with index:
        stats = index.stats()
    if as_json:
        click.echo(json.dumps(stats, indent=2, default=str))
        return
    for key, value in stats.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k, v in value.items():
                click.echo(f"  {k}: {v}")
        else:
            click.echo(f"{key}: {value}")


@main.command("remove")
@click.argument("item_ids", nargs=-1, required=True, type=int)
@_db_option
def remove_command(item_ids, db):
    """Remove images from the database by item id (shown by 'query'). They never match again;
    the removal is kept in the audit log."""
    index = _open_index(db, create=False)
    with index:
        removed = index.remove(list(item_ids))
    click.echo(f"removed {removed} of {len(item_ids)}")
    sys.exit(EXIT_OK if removed == len(item_ids) else EXIT_ERROR)
