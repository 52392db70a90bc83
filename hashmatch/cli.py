"""The ``hashmatch`` command line: parse, call the Python API, print.

Exit codes follow grep: 0 = success / matches found, 1 = no match, 2 = error.
"""
from __future__ import annotations

import contextlib
import io
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
    """Find copies of known images, even re-encoded, resized, rotated or mirrored.

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
                   "0-100 quality score); phash/dhash/ahash match the imagehash library; grid "
                   "is hashmatch's own gradient-grid hash (experimental, not PhotoDNA).")
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
        "--db", "db", default=None, metavar="PATH|URL",
        help="The database: a file, or a postgresql:// URL for a shared server. Default: "
             "$HASHMATCH_DB, else hashmatch.hmdb in the current folder.")(f)


def _open_index(db, create: bool, algorithms=("pdq",)):
    from .errors import HashmatchError
    from .index import Index, default_db_path
    from .store import is_database_url

    path = db or default_db_path()
    if not create and not is_database_url(path) and not os.path.exists(path):
        _fail(f"no database at {path}: run 'hashmatch index FOLDER' first, or pass --db")
    try:
        return Index.open(path, create=create, algorithms=algorithms)
    except HashmatchError as exc:
        _fail(str(exc))


def _match_options(f):
    """The options that say what counts as a match (shared by query and report)."""
    f = click.option("--no-rotations", is_flag=True,
                     help="Do not also look for rotated (90/180/270) and mirrored copies.")(f)
    f = click.option("-k", "--top", "top_k", type=click.IntRange(min=1), default=None,
                     help="Show at most this many matches per image.")(f)
    f = click.option("--whole-images", is_flag=True,
                     help="Compare whole images only, as plain PDQ does: no borders cut off, "
                          "no pictures cut out of screenshots, posts or memes.")(f)
    f = click.option("--all-candidates", is_flag=True,
                     help="List every stored image within --max-distance. By default, beyond "
                          "distance 16 only a clear best match is listed (one that is much "
                          "closer than any other stored image), which keeps look-alikes made "
                          "from one template out of the results.")(f)
    return click.option(
        "-d", "--max-distance", type=click.IntRange(min=0), default=None,
        help="Largest distance that counts as a match (default: 76 for pdq, 31 with "
             "--whole-images, 10 for phash/dhash/ahash). Lower = stricter.")(f)


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
@click.option("--whole-images", is_flag=True,
              help="Store whole-image fingerprints only (as plain PDQ), not those of the "
                   "regions that find copies inside screenshots, posts, memes and borders.")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes for hashing (default: all cores).")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS|local",
              help="Hash on a Dask cluster: a scheduler address (tcp://host:8786; the workers "
                   "must see the files at the same paths) or 'local' for a LocalCluster on "
                   "this machine. Needs pip install 'hashmatch[dask]'.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def index_command(paths, db, recursive, all_files, labels, source, algorithms, min_quality,
                  whole_images, workers, dask_address, quiet):
    """Add images to the database so that copies of them can be found later.

    Each file is fingerprinted and stored with its path, SHA-256, labels and source. A file
    already in the database (same SHA-256) is reported as a duplicate, not stored twice.
    Files that cannot be read are listed with the reason; the others are still added, and
    everything reported added is saved even if the run is interrupted.

    Exit code 0 if every file was added (or was a duplicate), 2 if any failed.
    """
    files = _files_from(paths, recursive, all_files)
    index = _open_index(db, create=True, algorithms=algorithms or ("pdq",))
    index.regions = not whole_images
    with index, contextlib.ExitStack() as stack:
        client = None
        if dask_address:
            from .distributed import connect
            from .errors import HashmatchError

            try:
                client = stack.enter_context(connect(dask_address))
            except HashmatchError as exc:
                _fail(str(exc))
        with progress_bar(len(files), "indexing", quiet) as update:
            report = index.add_files(files, labels=list(labels), source=source, workers=workers,
                                     progress=update, min_quality=min_quality, client=client)
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
@_match_options
@click.option("--min-quality", type=click.IntRange(0, 100), default=None,
              help="Ignore fingerprints (query or stored) with a PDQ quality below this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per query image.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: one row per match.")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes for hashing the queries (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def query_command(paths, db, recursive, max_distance, top_k, no_rotations, whole_images,
                  all_candidates, min_quality, as_json, as_csv, workers, quiet):
    """Is this image a copy of one in the database? Lists the matches, closest first.

    The distance is the number of fingerprint bits that differ: 0 = same picture, up to
    about 31 (pdq) = same picture edited or re-compressed, more for a copy inside a
    screenshot, a post, a meme or with borders, or cropped. Rotated and mirrored copies are
    found too. Column HOW says how it matched (e.g. "mirrored, picture cut out of its
    frame").

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
                                       workers=workers, progress=update,
                                       margin=0 if all_candidates else None,
                                       regions=False if whole_images else None)
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


# -- investigations: near-duplicate groups, evidence reports, hash lists -----------------------

def _write_report_or_fail(document, thumbnails, html_path, json_path, protected):
    from .report import OutputPathError, write_report

    try:
        return write_report(document, thumbnails, html_path, json_path, protected)
    except (OutputPathError, OSError) as exc:
        _fail(f"report not written: {exc}")


@main.command("dedup")
@click.argument("paths", nargs=-1, type=click.Path())
@_db_option
@click.option("-d", "--max-distance", type=click.IntRange(min=0), default=None,
              help="Largest distance between two images of one group (default: 31 for pdq, 10 "
                   "for phash/dhash/ahash). Lower = only very close copies.")
@click.option("-a", "--algorithm", type=click.Choice(ALGORITHMS), default="pdq",
              show_default=True, help="Which fingerprint to compare.")
@click.option("-r", "--recursive", is_flag=True, help="Read the images inside folders.")
@click.option("--all-files", is_flag=True,
              help="With --recursive, try every file, not only files with image extensions.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per group (JSON lines) instead of the readable list.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Also write an HTML page with the groups' thumbnails (and its JSON twin "
                   "beside it, same name with .json).")
@click.option("--sanitized", is_flag=True, help="With --html: no images in the page.")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes for hashing (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def dedup_command(paths, db, max_distance, algorithm, recursive, all_files, as_json, html_path,
                  sanitized, workers, quiet):
    """Find groups of near-identical images: the same picture re-posted, edited or re-encoded.

    \b
    Give folders or files (hashmatch dedup ./screenshots --recursive), or --db alone to group
    the images already in a database. Each group lists its best-quality image first (the
    representative), then the others with their distance to it (0 = same picture).

    Exit code 0 if any group was found, 1 if every image is unique, 2 on error (unreadable
    files are listed; the others are still grouped).
    """
    from .index import DEFAULT_MAX_DISTANCE

    if paths and db:
        _fail("give either images/folders or --db (to group a database), not both")
    if not paths and not db:
        _fail("give the images or folders to group, or --db DATABASE")
    radius = DEFAULT_MAX_DISTANCE[algorithm] if max_distance is None else max_distance
    if db:
        clusters_json, errors, database, files = _dedup_database(db, algorithm, radius)
    else:
        files = _files_from(paths, recursive, all_files)
        clusters_json, errors = _dedup_files(files, algorithm, radius, workers, quiet)
        database = None
    _print_clusters(clusters_json, as_json)
    for error in errors:
        click.echo(f"hashmatch: {error['path']}: {error['error']}", err=True)
    if html_path:
        _write_cluster_report(clusters_json, errors, database, algorithm, radius, sanitized,
                              html_path, files, db)
    if errors:
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_OK if clusters_json else EXIT_NO_MATCH)


def _dedup_files(files, algorithm, radius, workers, quiet):
    from .cluster import cluster
    from .hashing import iter_hash_files
    from .report import clusters_json_for_files

    hashed, errors = [], []
    with progress_bar(len(files), "hashing", quiet) as update:
        for result in iter_hash_files(files, (algorithm,), workers=workers, progress=update):
            if result.ok:
                hashed.append(result)
            else:
                errors.append({"path": result.path, "error": result.error})
    clusters = cluster([r.fingerprint for r in hashed], radius, algorithm=algorithm)
    return clusters_json_for_files(clusters, hashed, algorithm, radius), errors


def _dedup_database(db, algorithm, radius):
    from .cluster import cluster
    from .report import clusters_json_for_items

    with _open_index(db, create=False) as index:
        clusters = cluster(index, radius, algorithm=algorithm)
        clusters_json = clusters_json_for_items(clusters, index, algorithm, radius)
        database = {"path": os.path.abspath(index.path), "items": len(index)}
    return clusters_json, [], database, []


def _print_clusters(clusters_json, as_json):
    if as_json:
        for group in clusters_json:
            click.echo(json.dumps(group, ensure_ascii=False, default=str))
        return
    if not clusters_json:
        click.echo("no near-duplicates: every image is unique")
        return
    for group in clusters_json:
        click.echo(f"group {group['cluster']}: {group['size']} images")
        for position, member in enumerate(group["members"]):
            name = member.get("path") or f"item {member.get('item_id')} (hash only)"
            role = "representative" if position == 0 else f"distance {member['distance']}"
            quality = "" if member.get("quality") is None else f", quality {member['quality']}"
            click.echo(f"  {name}  ({role}{quality})")
    click.echo(f"{len(clusters_json)} groups, "
               f"{sum(g['size'] for g in clusters_json)} images in groups")


def _write_cluster_report(clusters_json, errors, database, algorithm, radius, sanitized,
                          html_path, inputs, db):
    from .report import cluster_document, cluster_thumbnails, report_header

    header = report_header("near-duplicate groups", sanitized, database=database,
                           algorithms=[algorithm], thresholds={algorithm: radius})
    document = cluster_document(clusters_json, header, errors)
    thumbnails = cluster_thumbnails(clusters_json, sanitized)
    html_out, json_out, digest = _write_report_or_fail(
        document, thumbnails, html_path, None, list(inputs) + ([db] if db else []))
    click.echo(f"report: {html_out} (data: {json_out}, SHA-256 {digest})", err=True)


@main.command("report")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_db_option
@click.option("--html", "html_path", required=True, type=click.Path(dir_okay=False),
              help="The HTML report to write (one file, images embedded).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Where to write the JSON twin (default: beside the HTML, same name, .json).")
@click.option("--sanitized", is_flag=True,
              help="Leave every image out: hashes, file facts and distances only (for reports "
                   "that must not carry the pictures).")
@click.option("-r", "--recursive", is_flag=True, help="Report on every image inside folders.")
@_match_options
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes for hashing (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def report_command(paths, db, html_path, json_path, sanitized, recursive, max_distance, top_k,
                   no_rotations, whole_images, all_candidates, workers, quiet):
    """Write an evidence report: each image beside the known images it matches.

    \b
    Example:
      hashmatch report suspect.jpg ./downloads -r --db case.hmdb --html report.html

    \b
    The HTML file is self-contained (thumbnails embedded) and runs no scripts. For every
    file it shows the path, size, SHA-256, image size and format; for every match the
    distance, how it matched (as is, mirrored, rotated...), qualities, labels and source.
    The header names the tool version, algorithms and thresholds, database and time (UTC),
    and the SHA-256 of the JSON twin written beside it, which holds the same facts.

    Exit code 0 if any image matched, 1 if none did, 2 on error.
    """
    from .report import build_query_report

    files = _files_from(paths, recursive)
    index = _open_index(db, create=False)
    with index:
        with progress_bar(len(files), "querying", quiet) as update:
            document, thumbnails = build_query_report(
                index, files, max_distance=max_distance, top_k=top_k,
                dihedral=not no_rotations, sanitized=sanitized, workers=workers,
                margin=0 if all_candidates else None, regions=False if whole_images else None,
                progress=update)
        database_path = index.path
    html_out, json_out, digest = _write_report_or_fail(
        document, thumbnails, html_path, json_path, files + [database_path])
    queries = document["queries"]
    matched = sum(1 for q in queries if q["matches"])
    click.echo(f"report: {html_out}\ndata:   {json_out} (SHA-256 {digest})\n"
               f"{len(queries)} images, {matched} with matches")
    errors = [q for q in queries if q["error"]]
    for query in errors:
        click.echo(f"hashmatch: {query['file']['path']}: {query['error']}", err=True)
    if errors:
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_OK if matched else EXIT_NO_MATCH)


@main.command("import")
@click.argument("hash_list", type=click.Path(dir_okay=False))
@_db_option
@click.option("-f", "--format", "fmt", type=click.Choice(("auto", "te", "csv", "jsonl")),
              default="auto", show_default=True,
              help="te: one hash a line ('pdq <hex>', bare hex, or 'hash,quality,...' as the "
                   "PDQ tools and 'hashmatch hash' write); csv: with a header row naming a "
                   "'hash' column; jsonl: one JSON object a line. auto: guess from the file.")
@click.option("-l", "--label", "labels", multiple=True,
              help="A label added to every imported hash (repeatable), e.g. --label fake-id.")
@click.option("-s", "--source", default=None,
              help='Where the list comes from, e.g. "Partner X list 2024-06" (used for lines '
                   "that do not name their own source).")
@click.option("-a", "--algorithm", type=click.Choice(ALGORITHMS), default="pdq",
              show_default=True,
              help="The algorithm of lines that do not say (bare hex lines; imagehash lists "
                   "are phash, dhash or ahash).")
@click.option("--skip-invalid", is_flag=True,
              help="Import the valid lines even if some are invalid (they are still listed).")
def import_command(hash_list, db, fmt, labels, source, algorithm, skip_invalid):
    """Add a hash list (hashes shared by partners, no images needed) to the database.

    \b
    Examples:
      hashmatch import partner_list.txt --label fake-id --source "Partner X 2024-06"
      hashmatch import phash_list.txt --algorithm phash

    The whole list is checked first; every problem is reported as FILE:LINE: what is wrong
    (wrong length, not hex, unknown algorithm, bad quality, repeated line, not UTF-8 text).
    If anything is wrong, nothing is imported unless you pass --skip-invalid. Hashes already
    in the database (same hash, path and source) are not added twice.

    Exit code 0 if the list was imported, 2 if it had problems or could not be read.
    """
    from .hashlists import format_problems, import_hash_list, read_hash_list

    try:
        parsed = read_hash_list(hash_list, fmt, algorithm)
    except OSError as exc:
        _fail(f"{hash_list}: cannot read: {exc.strerror or exc}")
    if parsed.problems:
        click.echo(format_problems(parsed.problems), err=True)
        if not skip_invalid:
            _fail(f"nothing imported: {len(parsed.problems)} problem(s) in {hash_list}; fix "
                  "them, or pass --skip-invalid to import the valid lines")
    index = _open_index(db, create=True)
    with index:
        report = import_hash_list(index, parsed, labels=labels, source=source,
                                  skip_invalid=skip_invalid)
        total = len(index)
    skipped = f", {len(report.problems)} invalid lines skipped" if report.problems else ""
    click.echo(f"imported {len(report.added)} items ({report.fingerprints} hashes) from "
               f"{hash_list} [{report.format}], {report.already_present} already in the "
               f"database{skipped} -> {total} items in {index.path}")
    sys.exit(EXIT_ERROR if report.problems else EXIT_OK)


@main.command("export")
@_db_option
@click.option("-f", "--format", "fmt", type=click.Choice(("te", "csv", "jsonl")),
              default="jsonl", show_default=True,
              help="jsonl and csv keep everything (labels, source, paths, SHA-256, metadata), "
                   "so importing the export gives back the same items; te writes only "
                   "'hash,quality,path' lines of one algorithm, for tools that expect them.")
@click.option("-a", "--algorithm", type=click.Choice(ALGORITHMS), default="pdq",
              show_default=True, help="With --format te: which fingerprints to write.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write to this file instead of the screen (standard output).")
def export_command(db, fmt, algorithm, output):
    """Write the database's fingerprints as a hash list to share or to import elsewhere.

    \b
    Examples:
      hashmatch export --output our_list.jsonl        # everything, for another hashmatch
      hashmatch export --format csv --output list.csv  # opens in a spreadsheet
      hashmatch export --format te > pdq_hashes.txt    # hash,quality,path lines
    """
    from .hashlists import export_hash_list
    from .report import OutputPathError, check_output_path, write_atomically

    index = _open_index(db, create=False)
    with index:
        if output is None:
            count = export_hash_list(index, sys.stdout, fmt, algorithm)
        else:
            try:
                target = check_output_path(output, [index.path])
            except OutputPathError as exc:
                _fail(f"export not written: {exc}")
            buffer = io.StringIO()
            count = export_hash_list(index, buffer, fmt, algorithm)
            write_atomically(target, buffer.getvalue().encode("utf-8"))
    click.echo(f"exported {count} hashes" + (f" to {output}" if output else ""), err=True)


from .cli_serve import register as _register_serve  # noqa: E402 - hashmatch serve, token

_register_serve(main)
