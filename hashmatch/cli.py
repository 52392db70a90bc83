"""The ``hashmatch`` command line: parse, call the Python API, print.

Exit codes follow grep: 0 = success / matches found, 1 = no match, 2 = error.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import warnings

import click

from . import __version__
from .fingerprint import ALGORITHMS
from .paths import PathProblem, expand_paths
from .policy import MATCH_POLICY
from .text import csv_field, safe, storable

EXIT_OK, EXIT_NO_MATCH, EXIT_ERROR = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
STDIN = "-"
STDIN_NAME = "<standard input>"


def _say(message: str = "", err: bool = False) -> None:
    """Print one line; every string from outside must already be :func:`safe`."""
    click.echo(message, err=err)


def _fail(message: str) -> None:
    click.echo(f"hashmatch: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _interrupted(saved: str | None = None) -> None:
    click.echo("", err=True)
    click.echo("hashmatch: interrupted" + (f": {saved}" if saved else ""), err=True)
    sys.exit(EXIT_INTERRUPTED)


class _Group(click.Group):
    """Turns Ctrl-C into exit code 130 and any hashmatch error into one line and exit 2
    (instead of click's "Aborted!" with exit 1, which means "no match" here, or a
    traceback)."""

    def invoke(self, ctx):
        from .errors import HashmatchError

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise  # --help, --version, usage errors: click's own handling
        except KeyboardInterrupt:
            _interrupted()
        except HashmatchError as exc:
            _fail(safe(str(exc)))
        except BrokenPipeError:  # e.g. `hashmatch query ... | head`: the reader has gone
            with contextlib.suppress(Exception):
                sys.stdout = open(os.devnull, "w")
            sys.exit(EXIT_ERROR)
        except OSError as exc:  # disk full or read-only output, unreadable input ...
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            _fail(safe(f"{where}{exc.strerror or exc}"))
        except Exception as exc:  # noqa: BLE001 - a bug still ends as one line and exit 2
            if os.environ.get("HASHMATCH_DEBUG"):
                raise
            _fail(safe(f"internal error ({type(exc).__name__}: {exc}); run again with "
                       "HASHMATCH_DEBUG=1 for the details, and please report it"))


def _quiet_pillow() -> None:
    """Pillow's warnings about damaged metadata ("Corrupt EXIF data") are not ours to show:
    the file is still read, and a bad file is reported by hashmatch itself."""
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")


def _files_from(paths, recursive: bool, all_files: bool = False, db: str | None = None,
                allow_stdin: bool = False) -> list:
    """The files to read. ``-`` (with ``allow_stdin``): standard input, which is either an
    image (its bytes) or a list of paths, one a line. Database files (``db``, its -wal,
    -shm and cache files) are never read as images."""
    if allow_stdin and STDIN in paths:
        if list(paths) != [STDIN]:
            _fail("'-' (standard input) cannot be mixed with other paths")
        data = sys.stdin.buffer.read()
        if _looks_like_image(data):
            return [data]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = os.fsdecode(data)
        paths = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
        if not paths:
            _fail("standard input is empty: give an image, or a list of paths one a line")
    try:
        files = expand_paths(paths, recursive=recursive, all_files=all_files)
    except PathProblem as exc:
        _fail(safe(str(exc)))
    if db:
        files = [f for f in files if not _is_database_file(f, db)]
    if not files:
        _fail("no image files found in " + ", ".join(safe(p) for p in paths))
    return files


def _looks_like_image(data: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)):
            return True
    except Exception:  # noqa: BLE001 - anything Pillow cannot open is not an image
        return False


def _database_files(db: str) -> set[str]:
    from .store import is_database_url
    from .store.cache import cache_path_for

    if is_database_url(db):
        return set()
    real = os.path.realpath(db)
    return {real, real + "-wal", real + "-shm", real + "-journal",
            os.path.realpath(cache_path_for(db))}


def _is_database_file(path, db: str) -> bool:
    if not isinstance(path, str):
        return False
    real = os.path.realpath(path)
    wanted = _database_files(db)
    if real in wanted:
        return True
    base = os.path.basename(os.path.realpath(db)) + ".codes."
    return os.path.basename(real).startswith(base) and real.endswith(".tmp")


class Progress:
    """A progress bar on stderr, for long work only.

    Drawn only when stderr is a terminal, not --quiet, the job has at least ``min_items``
    items and is still running after ``delay`` seconds: short jobs print no bar. The ETA is
    the rate since the first item finished (starting the worker processes is not counted as
    work), shown once a few items and a second of steady work are behind it.
    """

    def __init__(self, total: int, label: str, quiet: bool = False, min_items: int = 20,
                 delay: float = 2.0, stream=None, clock=time.monotonic, force: bool = False):
        self.total, self.label, self.delay, self.clock = total, label, delay, clock
        self.stream = sys.stderr if stream is None else stream
        self.enabled = force or (not quiet and total >= min_items and self.stream.isatty())
        self.started = clock()
        self.first: tuple[float, int] | None = None
        self.shown = False
        self.done = 0

    def eta(self, done: int, now: float) -> float | None:
        """Seconds left, or None while there is too little to go on."""
        if self.first is None:
            return None
        first_at, first_done = self.first
        steady = now - first_at
        if done - first_done < 3 or steady < 1.0:
            return None
        return (self.total - done) * steady / (done - first_done)

    def __call__(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = self.clock()
        if self.first is None:
            self.first = (now, done)
        if not self.shown and now - self.started < self.delay:
            return
        self.shown = True
        self.stream.write("\r" + self.line(done, now))
        self.stream.flush()

    def line(self, done: int, now: float) -> str:
        share = done / self.total if self.total else 1.0
        bar = "#" * int(share * 24)
        eta = self.eta(done, now)
        left = "ETA --:--:--" if eta is None else "ETA " + _clock(eta)
        return (f"{self.label} [{bar:<24}] {done:,}/{self.total:,} {share:4.0%}  "
                f"{left}").ljust(78)

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 78 + "\r")
            self.stream.flush()
            self.shown = False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@contextlib.contextmanager
def progress_bar(total: int, label: str, quiet: bool):
    """Yields a callback taking the number of items done so far (see :class:`Progress`)."""
    bar = Progress(total, label, quiet)
    try:
        yield bar
    finally:
        bar.close()


@click.group(cls=_Group,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hashmatch")
def main():
    """Find copies of known images, even re-encoded, resized, rotated or mirrored.

    \b
    Typical use:
      hashmatch index ./known_adverts --recursive   # remember these images
      hashmatch query suspect.jpg                   # is this one of them?
      hashmatch hash photo.jpg                      # just print a fingerprint

    Every command has its own --help. Exit codes: 0 = done / matches found, 1 = no match,
    2 = error, 130 = interrupted (Ctrl-C; what was saved is kept and said).
    """
    _quiet_pillow()


HASH_FORMATS = ("csv", "json", "pytx", "hex")


@main.command("hash")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-a", "--algorithm", "algorithms", multiple=True, type=click.Choice(ALGORITHMS),
              help="Which fingerprint to compute (repeatable: -a pdq -a phash gives one line "
                   "per file and algorithm; needs --format json or pytx, whose lines say the "
                   "algorithm). Default pdq, the industry standard (256 bits, with a 0-100 "
                   "quality score); phash/dhash/ahash match the imagehash library; grid is "
                   "hashmatch's own gradient-grid hash (experimental, not PhotoDNA).")
@click.option("--exact", is_flag=True,
              help="Decode at full resolution so the hash is bit-identical to the reference "
                   "implementations (pdqhash, imagehash). Slower. The default fast mode "
                   "differs from it, measured on the 529 test images (99 % of files / "
                   "worst file): pdq 6 / 8 bits of 256; phash 2 / 2, dhash 2 / 2, ahash 1 / 5 "
                   "bits of 64 (see README).")
@click.option("-r", "--recursive", is_flag=True, help="Read the images inside folders.")
@click.option("--all-files", is_flag=True,
              help="With --recursive, try every file, not only files with image extensions.")
@click.option("-f", "--format", "fmt", type=click.Choice(HASH_FORMATS), default=None,
              help="csv (default): 'hash,quality,path' lines, as the PDQ reference tools "
                   "write; json: one JSON object a line (path, algorithm, hash, quality, "
                   "sha256); pytx: 'pdq <hex>' lines as python-threatexchange reads and "
                   "writes them; hex: the bare hash, one a line.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def hash_command(paths, algorithms, exact, recursive, all_files, fmt, as_json, workers, quiet):
    """Print the fingerprint of each image: one line "hash,quality,path".

    \b
    Give '-' to read standard input: an image, or a list of paths one a line.
    In the lines, a path is written so that it stays on one line and shows what its bytes
    are: a backslash as \\\\, a newline as \\n, other control characters and bytes that are
    not UTF-8 text as \\xNN, invisible direction-changing characters as \\uNNNN; a path
    holding a comma or a double quote is put in double quotes (quotes doubled), as in CSV.

    Files that cannot be read are reported on stderr with the reason; the others are still
    hashed. Exit code 0 if every file was hashed, 2 if any failed.
    """
    from .hashing import iter_hash_files

    if as_json:
        if fmt not in (None, "json"):
            _fail("--json is --format json: give only one of them")
        fmt = "json"
    fmt = fmt or "csv"
    algorithms = tuple(dict.fromkeys(algorithms)) or ("pdq",)
    if len(algorithms) > 1 and fmt in ("csv", "hex"):
        _fail(f"--format {fmt} lines do not say which algorithm a hash is: with several "
              "--algorithm, use --format json or --format pytx")
    files = _files_from(paths, recursive, all_files, allow_stdin=True)
    failures = 0
    with progress_bar(len(files), "hashing", quiet) as update:
        for result in iter_hash_files(files, algorithms, exact=exact, workers=workers,
                                      progress=update):
            name = STDIN_NAME if isinstance(result.path, str) and result.path == "<bytes>" \
                else result.path
            if not result.ok:
                failures += 1
                update.close()
                _say(f"hashmatch: {safe(name)}: {safe(result.error)}", err=True)
                continue
            for fp in result.fingerprints:
                _say(_hash_line(fmt, fp, name, result.sha256))
    if failures:
        _say(f"hashmatch: {failures} of {len(files)} files could not be hashed", err=True)
    sys.exit(EXIT_ERROR if failures else EXIT_OK)


def _hash_line(fmt: str, fp, path: str, sha256: str | None) -> str:
    if fmt == "json":
        return json.dumps({"path": storable(path), "algorithm": fp.algorithm, "hash": fp.hex(),
                           "quality": fp.quality, "sha256": sha256})
    if fmt == "pytx":
        return f"{fp.algorithm} {fp.hex()}"
    if fmt == "hex":
        return fp.hex()
    quality = "" if fp.quality is None else fp.quality
    return f"{fp.hex()},{quality},{csv_field(path)}"


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
        _fail(f"no database at {safe(path)}: run 'hashmatch index FOLDER' first, or pass --db")
    try:
        return Index.open(path, create=create, algorithms=algorithms)
    except HashmatchError as exc:
        _fail(safe(str(exc)))


def _db_path(db) -> str:
    from .index import default_db_path

    return db or default_db_path()


def _match_options(f):
    """The options that say what counts as a match (shared by query and report)."""
    f = click.option("--no-rotations", is_flag=True,
                     help="Do not also look for rotated (90/180/270) and mirrored copies.")(f)
    f = click.option("-k", "--top", "top_k", type=click.IntRange(min=1), default=None,
                     help="Show at most this many matches per image.")(f)
    f = click.option("--whole-images", is_flag=True,
                     help="Compare whole images only, as plain PDQ does: no borders cut off, "
                          "no pictures cut out of screenshots, posts or memes.")(f)
    f = click.option("--templates", "templates", is_flag=True,
                     help="Also list pictures made from the same template as a stored one (an "
                          "ID card of the same design with another name and photo, another "
                          "receipt of the same shop), marked 'same template, not a "
                          "copy': leads to look at, never copies. By default only pictures "
                          "checked to be the same picture are listed.")(f)
    return click.option(
        "-d", "--max-distance", type=click.IntRange(min=0), default=None,
        help=f"Largest distance that counts as a match (default: "
             f"{MATCH_POLICY.default_max_distance('pdq', regions=True)} for pdq, "
             f"{MATCH_POLICY.default_max_distance('pdq')} with --whole-images, "
             f"{_other_radius_defaults()}). Lower = stricter.")(f)


def _other_radius_defaults() -> str:
    """The policy's default radius of each algorithm but PDQ, in words: '10 for
    phash/dhash/ahash, 20 for grid'."""
    by_radius: dict[int, list[str]] = {}
    for algorithm in ALGORITHMS:
        if algorithm != "pdq":
            by_radius.setdefault(MATCH_POLICY.default_max_distance(algorithm), []).append(
                algorithm)
    return ", ".join(f"{radius} for {'/'.join(names)}" for radius, names in by_radius.items())


@main.command("index")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_db_option
@click.option("-r", "--recursive", is_flag=True, help="Read the images inside folders.")
@click.option("--all-files", is_flag=True,
              help="With --recursive, try every file, not only files with image extensions "
                   "(the database and its own files are always left out).")
@click.option("-l", "--label", "labels", multiple=True,
              help="A label stored with every image (repeatable), e.g. --label fake-id. "
                   "Images already in the database get it added.")
@click.option("-s", "--source", default=None,
              help='Where these images come from, e.g. "NCA referral 2024-05". Images '
                   "already in the database keep their first source and get this one added.")
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
    already in the database (same SHA-256) is reported as a duplicate, not stored twice; a
    file stored from the same path that has not changed since (same size, modification time
    and SHA-256) is not even decoded again, so running the same command again is quick.
    --label and --source are added to images already stored (kept in the audit log).

    Files that cannot be read are listed with the reason; the others are still added.
    Files are saved in batches of 64: if the run is interrupted (Ctrl-C) or fails (disk
    full), what was saved is said and stays saved; run the same command again to continue.

    Exit code 0 if every file was added (or was already there), 2 if any failed or on
    error, 130 if interrupted.
    """
    from .errors import HashmatchError

    files = _files_from(paths, recursive, all_files, db=_db_path(db))
    index = _open_index(db, create=True, algorithms=algorithms or ("pdq",))
    index.regions = not whole_images
    saved = _Saved()
    stats: dict = {}
    try:
        with index, contextlib.ExitStack() as stack:
            client = None
            if dask_address:
                from .distributed import connect

                try:
                    client = stack.enter_context(connect(dask_address))
                except HashmatchError as exc:
                    _fail(safe(str(exc)))
            stats.update(_file_stats(files))
            unchanged = _unchanged_files(index, files, stats)
            saved.unchanged = len(unchanged)
            if unchanged and (labels or source):
                saved.relabelled += _relabel(index, sorted(unchanged.values()), labels, source)
            todo = [f for f in files if f not in unchanged]

            def on_commit(outcomes):
                saved.count(outcomes)
                _after_commit(index, outcomes, stats, labels, source, saved)

            with progress_bar(len(todo), "indexing", quiet) as update:
                report = index.add_files(todo, labels=list(labels), source=source,
                                         workers=workers, progress=update,
                                         min_quality=min_quality, client=client,
                                         on_commit=on_commit) if todo else None
            total = len(index)
    except KeyboardInterrupt:
        _interrupted(f"{_saved_words(db, files, stats, saved)}; run the same command again "
                     "to continue")
    except HashmatchError as exc:
        _say(f"hashmatch: {safe(str(exc))}", err=True)
        _fail(f"stopped: {_saved_words(db, files, stats, saved)} before the error (they stay "
              "saved)")
    outcomes = report.outcomes if report else []
    for outcome in outcomes:
        if outcome.status == "failed":
            _say(f"failed: {safe(outcome.path)}: {safe(outcome.reason)}", err=True)
        elif outcome.status == "skipped":
            _say(f"skipped: {safe(outcome.path)}: {safe(outcome.reason)}", err=True)
    counts = report.counts() if report else {"added": 0, "duplicate": 0, "skipped": 0,
                                             "failed": 0}
    extra = f", unchanged {saved.unchanged} (not read again)" if saved.unchanged else ""
    relabelled = (f"; labels/source added to {saved.relabelled} stored images"
                  if saved.relabelled else "")
    _say(f"added {counts['added']}, duplicates {counts['duplicate']}, "
         f"skipped {counts['skipped']}, failed {counts['failed']}{extra} "
         f"-> {total} images in {safe(index.path)}{relabelled}")
    sys.exit(EXIT_ERROR if counts["failed"] else EXIT_OK)


class _Saved:
    """What an index run has committed so far (for the message on Ctrl-C or an error)."""

    def __init__(self):
        self.added = self.already = self.unchanged = self.relabelled = 0

    def count(self, outcomes) -> None:
        self.added += sum(o.status == "added" for o in outcomes)
        self.already += sum(o.status == "duplicate" for o in outcomes)

    def words(self) -> str:
        total = self.added + self.already + self.unchanged
        return (f"{total:,} images saved ({self.added:,} new, "
                f"{self.already + self.unchanged:,} already in the database)")


def _saved_words(db, files, stats, saved) -> str:
    """What an interrupted or failed index run left in the database, asked of the database
    itself: the interruption may fall between a batch's commit and its report. The files
    found there also get their modification times recorded, so the next run skips them."""
    from .store import open_store
    from .text import storable as _storable

    try:
        with open_store(_db_path(db)) as store:  # the store only: no codes loaded
            by_path = {_storable(stats[f][0]): f for f in files if f in stats}
            stored = store.find_by_paths(list(by_path))
            times = {item.id: stats[by_path[path]][2] for path, item in stored.items()
                     if item.size == stats[by_path[path]][1]
                     and item.meta.get("mtime_ns") != stats[by_path[path]][2]}
            store.set_file_times(times)
        count = max(len(stored), saved.added + saved.already + saved.unchanged)
        return f"{count:,} images saved"
    except BaseException:  # noqa: BLE001 - a second Ctrl-C, or the store is what failed
        return saved.words()


def _file_stats(files) -> dict:
    stats = {}
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        stats[f] = (os.path.abspath(f), st.st_size, st.st_mtime_ns)
    return stats


def _unchanged_files(index, files, stats) -> dict:
    """{file: item id} of files stored from the same path, with the same size and
    modification time, whose bytes still have the stored SHA-256: no need to decode them."""
    import hashlib

    from . import verify

    from .text import storable as _storable

    by_path = {}
    for f in files:
        if f in stats:
            by_path.setdefault(_storable(stats[f][0]), f)
    stored = index.store.find_by_paths(list(by_path))
    candidates = []
    for path, item in stored.items():
        f = by_path[path]
        _, size, mtime_ns = stats[f]
        if item.sha256 is not None and item.size == size \
                and item.meta.get("mtime_ns") == mtime_ns:
            candidates.append((f, item))
    if index.regions:
        # Items whose verification data is missing or from an older version are decoded
        # again, so that their matches can be checked (the store then keeps the new data).
        # Read a batch at a time: ~4 KB an item.
        current = set()
        for start in range(0, len(candidates), 1000):
            ids = [item.id for _, item in candidates[start:start + 1000]]
            current.update(item_id for item_id, blob in index.store.get_verification(ids).items()
                           if verify.is_current(blob))
        candidates = [(f, item) for f, item in candidates if item.id in current]
    unchanged = {}
    for f, item in candidates:
        digest = hashlib.sha256()
        try:
            with open(f, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            continue
        if digest.hexdigest() == item.sha256:
            unchanged[f] = item.id
    return unchanged


def _after_commit(index, outcomes, stats, labels, source, saved) -> None:
    """Remember the files' modification times (so the next run can skip them unread) and
    add this run's labels/source to images that were already stored."""
    from .text import storable as _storable

    by_name = {_storable(f): v for f, v in stats.items()}
    ids = [o.item_id for o in outcomes if o.item_id is not None
           and o.status in ("added", "duplicate")]
    items = index.store.get_items(ids) if ids else {}
    times = {}
    for o in outcomes:
        item = items.get(o.item_id)
        fact = by_name.get(o.path)
        if item is not None and fact is not None and item.path == _storable(fact[0]) \
                and item.size == fact[1]:
            times[o.item_id] = fact[2]
    index.store.set_file_times(times)
    duplicates = sorted({o.item_id for o in outcomes if o.status == "duplicate"})
    if duplicates and (labels or source):
        saved.relabelled += _relabel(index, duplicates, labels, source)


def _relabel(index, item_ids, labels, source) -> int:
    before = index.store.get_items(item_ids)
    after = index.store.relabel_items(item_ids, add=list(labels), source=source,
                                      action="index-relabel")
    return sum(1 for i, item in after.items()
               if (item.labels, item.source, item.meta.get("sources"))
               != (before[i].labels, before[i].source, before[i].meta.get("sources")))


def _hash_queries(index, hashes, algorithm, max_distance, top_k):
    """QueryResults for hex hashes given on the command line (no image needed)."""
    from .fingerprint import Fingerprint
    from .index import QueryResult

    results = []
    for text in hashes:
        text = text.strip().lower()
        if text.startswith(tuple(f"{a} " for a in ALGORITHMS)):  # 'pdq <hex>' as pytx writes
            algorithm_here, text = text.split(None, 1)
        else:
            algorithm_here = algorithm or ("pdq" if len(text) == 64 else "phash")
        name = f"{algorithm_here}:{text}"
        try:
            fp = Fingerprint.from_hex(text, algorithm_here)
        except Exception as exc:  # noqa: BLE001 - HashFormatError, ValueError
            results.append(QueryResult(name, error=f"not a {algorithm_here} hash ({exc})"))
            continue
        [matches] = index.query_hashes([fp], algorithm=algorithm_here,
                                       max_distance=max_distance, top_k=top_k)
        results.append(QueryResult(name, matches, fingerprints=[fp]))
    return results


@main.command("query")
@click.argument("paths", nargs=-1, type=click.Path())
@_db_option
@click.option("-r", "--recursive", is_flag=True, help="Query every image inside folders.")
@click.option("-H", "--hash", "hashes", multiple=True, metavar="HEX",
              help="Look up a hash instead of an image (repeatable): 64 hex digits = pdq, 16 "
                   "= phash unless --algorithm says otherwise; 'pdq <hex>' works too.")
@click.option("-a", "--algorithm", type=click.Choice(ALGORITHMS), default=None,
              help="With --hash: the hashes' algorithm.")
@_match_options
@click.option("--min-quality", type=click.IntRange(0, 100), default=None,
              help="Ignore fingerprints (query or stored) with a PDQ quality below this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per query image.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: one row per match.")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes for hashing the queries (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def query_command(paths, db, recursive, hashes, algorithm, max_distance, top_k, no_rotations,
                  whole_images, templates, min_quality, as_json, as_csv, workers, quiet):
    """Is this image a copy of one in the database? Lists the matches, closest first.

    \b
    Examples:
      hashmatch query suspect.jpg ./downloads -r
      hashmatch query --hash 3b19...4fc7            # a PDQ hash from a partner
      find . -name '*.jpg' | hashmatch query -      # paths on standard input
      curl -s https://... | hashmatch query -       # an image on standard input

    DIST is the number of fingerprint bits that differ: 0 = same picture, up to about 31
    (pdq) = same picture edited or re-compressed, more for a copy inside a screenshot, a
    post, a meme or with borders, or cropped. Rotated and mirrored copies are found too.
    VERDICT (when the database can check it) says in words how sure the match is; the line
    under each match says how it matched (e.g. "mirrored, picture cut out of its frame") and
    where the known image came from. Results are printed as each image is answered.

    Exit code 0 if any image matched, 1 if none did, 2 on error, 130 if interrupted.
    """
    from .formats import QueryWriter

    if as_json and as_csv:
        _fail("choose one of --json and --csv")
    if not paths and not hashes:
        _fail("give images to look up (or '-' for standard input), or --hash HEX")
    if algorithm and not hashes:
        _fail("--algorithm is for --hash lookups (images are hashed with what the database "
              "holds)")
    files = _files_from(paths, recursive, allow_stdin=True) if paths else []
    writer = QueryWriter("json" if as_json else "csv" if as_csv else "table", sys.stdout)
    matched = errors = 0
    index = _open_index(db, create=False)
    with index:
        answered = []
        if hashes:
            answered = _hash_queries(index, hashes, algorithm, max_distance, top_k)
        stream = index.iter_query_many(
            files, max_distance=max_distance, top_k=top_k, dihedral=not no_rotations,
            min_quality=min_quality, workers=workers, templates=templates,
            regions=False if whole_images else None) if files else iter(())
        with progress_bar(len(files), "querying", quiet) as bar:
            for done, result in enumerate(_chain(answered, stream), start=1):
                if isinstance(result.path, str) and result.path == "<bytes>":
                    result.path = STDIN_NAME
                bar.close()
                writer.write(result)
                if result.error:
                    errors += 1
                    _say(f"hashmatch: {safe(result.path)}: {safe(result.error)}", err=True)
                # A template lead is not a match (exit code 1 if that is all there is).
                matched += any(m.kind == "copy" for m in result.matches)
                if done > len(answered):
                    bar(done - len(answered))
    if errors:
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_OK if matched else EXIT_NO_MATCH)


def _chain(*iterables):
    for iterable in iterables:
        yield from iterable


@main.command("info")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON).")
def info_command(db, as_json):
    """Show what the database holds: images, fingerprints, size, last change."""
    index = _open_index(db, create=False)
    with index:
        stats = index.stats()
        last = index.store.audit_log(1)
    stats["last_change_at"] = last[0].at if last else None
    stats["last_action"] = last[0].action if last else None
    if as_json:
        _say(json.dumps(stats, indent=2, default=str))
        return
    fingerprints = stats.get("fingerprints") or {}
    lines = [
        ("Database", safe(stats.get("path"))),
        ("Images", f"{stats.get('items', 0):,}"
                   + (f" (and {stats['removed_items']:,} removed, kept for the record)"
                      if stats.get("removed_items") else "")),
        ("Fingerprints", ", ".join(f"{n:,} {k.replace('/', ' ')}-bit"
                                   for k, n in fingerprints.items()) or "none"),
        ("Checked", _verifiable_words(stats)),
        ("Size on disk", _bytes(stats.get("db_bytes"))),
        ("Last change", f"{stats['last_change_at'] or '-'} ({stats['last_action'] or '-'}; "
                        f"change number {stats.get('last_change_seq', 0)})"),
        ("Store id", f"{stats.get('uuid')} (schema version {stats.get('schema_version')})"),
    ]
    for key, value in lines:
        _say(f"{key + ':':<14} {value}")


def _verifiable_words(stats: dict) -> str:
    """How many images matches can be checked against (hashmatch.verify), in words."""
    items, verifiable = stats.get("items", 0), stats.get("verifiable_items", 0)
    if not items:
        return "-"
    words = f"{verifiable:,} of {items:,} images: matches are checked on a stored copy"
    if verifiable < items:
        words += (f"; the other {items - verifiable:,} (hash-list entries, or indexed before "
                  "0.2) match by whole-image PDQ only")
    return words


def _bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000


@main.command("remove")
@click.argument("item_ids", nargs=-1, required=True, type=int)
@_db_option
def remove_command(item_ids, db):
    """Remove images from the database by item id (shown by 'query' and 'list'). They never
    match again; the removal is kept in the audit log.

    Exit code 0 if every id was removed, 2 if any was unknown or already removed."""
    index = _open_index(db, create=False)
    with index:
        known = index.store.get_items(item_ids)
        removed = index.remove(list(item_ids))
    for item_id in dict.fromkeys(item_ids):
        item = known.get(item_id)
        if item is None:
            _say(f"hashmatch: no item {item_id} in {safe(index.path)}", err=True)
        elif item.removed:
            _say(f"hashmatch: item {item_id} was already removed ({item.removed_at})", err=True)
    _say(f"removed {removed} of {len(set(item_ids))}")
    sys.exit(EXIT_OK if removed == len(set(item_ids)) else EXIT_ERROR)


def _item_json(item) -> dict:
    return {"item_id": item.id, "path": item.path, "sha256": item.sha256, "size": item.size,
            "added_at": item.added_at, "labels": list(item.labels), "source": item.source,
            "sources": item.meta.get("sources") or ([item.source] if item.source else []),
            "meta": item.meta}


def _print_items(items) -> None:
    from .formats import table_columns
    from .text import ljust, rjust, shorten, width

    columns = table_columns()
    head = ("ID", "ADDED", "LABELS", "SOURCE", "PATH")
    rows = [(str(i.id), (i.added_at or "")[:10], safe(",".join(i.labels)) or "-",
             safe(", ".join(i.meta.get("sources") or [i.source or "-"])),
             safe(i.path) if i.path else "(hash only)") for i in items]
    widths = [max(width(r[k]) for r in [head] + rows) for k in range(5)]
    widths[2], widths[3] = min(widths[2], 20), min(widths[3], 24)
    widths[4] = max(16, columns - 2 - sum(widths[:4]) - 8)
    for row in [head] + rows:
        cells = [rjust(row[0], widths[0])] + [
            ljust(shorten(c, w, keep_end=(k == 3)), w)
            for k, (c, w) in enumerate(zip(row[1:], widths[1:]))]
        _say(("  " + "  ".join(cells)).rstrip())


@main.command("list")
@_db_option
@click.option("-l", "--label", "labels", multiple=True,
              help="Only images carrying this label (repeatable: all of them).")
@click.option("-s", "--source", default=None, help="Only images from this source.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object a line: item_id, path, sha256, size, added_at, labels, "
                   "source, sources, meta.")
def list_command(db, labels, source, as_json):
    """List the images in the database (id, date added, labels, source, path).

    Exit code 0 if any image is listed, 1 if none."""
    index = _open_index(db, create=False)
    with index:
        items = index.store.list_items(labels=labels, source=source)
    if as_json:
        for item in items:
            _say(json.dumps(_item_json(item), ensure_ascii=False, default=str))
    elif items:
        _print_items(items)
    if not as_json:
        _say(f"{len(items)} images", err=True)
    sys.exit(EXIT_OK if items else EXIT_NO_MATCH)


@main.command("label")
@click.argument("item_ids", nargs=-1, required=True, type=int)
@_db_option
@click.option("--add", "add", multiple=True, metavar="LABEL", help="Add this label (repeatable).")
@click.option("--remove", "remove", multiple=True, metavar="LABEL",
              help="Take this label off (repeatable).")
@click.option("-s", "--source", default=None,
              help="Add a source (an image keeps its first source; others are listed with it).")
def label_command(item_ids, db, add, remove, source):
    """Add or remove labels of stored images, by item id (as 'query' and 'list' show them).

    \b
    Example:
      hashmatch label 12 17 --add fake-id --remove unsorted

    Every change is kept in the database's audit log (who, when, what). Exit code 0 if every
    item was found, 2 if any was not."""
    if not (add or remove or source):
        _fail("say what to change: --add LABEL, --remove LABEL or --source SOURCE")
    index = _open_index(db, create=False)
    with index:
        items = index.store.relabel_items(item_ids, add=add, remove=remove, source=source)
    missing = [i for i in dict.fromkeys(item_ids) if i not in items]
    for item_id in missing:
        _say(f"hashmatch: no item {item_id} in {safe(index.path)} (or it was removed)",
             err=True)
    for item in items.values():
        sources = ", ".join(item.meta.get("sources") or [item.source or "-"])
        _say(f"item {item.id}: labels {safe(', '.join(item.labels)) or '-'}; "
             f"source {safe(sources)}")
    sys.exit(EXIT_ERROR if missing else EXIT_OK)


# -- investigations: near-duplicate groups, evidence reports, hash lists -----------------------

def _write_report_or_fail(document, thumbnails, html_path, json_path, protected):
    from .report import OutputPathError, write_report

    try:
        return write_report(document, thumbnails, html_path, json_path, protected)
    except (OutputPathError, OSError) as exc:
        _fail(safe(f"report not written: {exc}"))


@main.command("dedup")
@click.argument("paths", nargs=-1, type=click.Path())
@_db_option
@click.option("-d", "--max-distance", type=click.IntRange(min=0), default=None,
              help=f"Largest distance between two images of one group (default: "
                   f"{MATCH_POLICY.default_max_distance('pdq')} for pdq, "
                   f"{_other_radius_defaults()}). Lower = only very close copies.")
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
    Give folders or files (hashmatch dedup ./screenshots --recursive), or nothing (or --db
    alone) to group the images already in the database (the default one, as for query).
    Each group lists its best-quality image first (the representative), then the others
    with their distance to it (0 = same picture).

    Exit code 0 if any group was found, 1 if every image is unique, 2 on error (unreadable
    files are listed; the others are still grouped).
    """
    if paths and db:
        _fail("give either images/folders or --db (to group a database), not both")
    radius = MATCH_POLICY.default_max_distance(algorithm) if max_distance is None \
        else max_distance
    if not paths:  # the database: --db, else the default one (as query uses)
        db = _db_path(db)
        clusters_json, errors, database, files = _dedup_database(db, algorithm, radius)
    else:
        files = _files_from(paths, recursive, all_files)
        clusters_json, errors = _dedup_files(files, algorithm, radius, workers, quiet)
        database = None
    _print_clusters(clusters_json, as_json)
    for error in errors:
        _say(f"hashmatch: {safe(error['path'])}: {safe(error['error'])}", err=True)
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
            _say(f"  {safe(name)}  ({role}{quality})")
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
    _say(f"report: {safe(html_out)} (data: {safe(json_out)}, SHA-256 {digest})", err=True)


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
                   no_rotations, whole_images, templates, workers, quiet):
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
                templates=templates, regions=False if whole_images else None,
                progress=update)
        database_path = index.path
    html_out, json_out, digest = _write_report_or_fail(
        document, thumbnails, html_path, json_path, files + [database_path])
    queries = document["queries"]
    matched = sum(1 for q in queries if q["matches"])
    _say(f"report: {safe(html_out)}\ndata:   {safe(json_out)} (SHA-256 {digest})\n"
               f"{len(queries)} images, {matched} with matches")
    errors = [q for q in queries if q["error"]]
    for query in errors:
        _say(f"hashmatch: {safe(query['file']['path'])}: {safe(query['error'])}", err=True)
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

    The whole list is checked; every problem is reported as FILE:LINE: what is wrong
    (wrong length, not hex, unknown algorithm, bad quality, repeated line, not UTF-8 text).
    If anything is wrong, nothing is imported unless you pass --skip-invalid. Hashes already
    in the database (same hash, path and source) are not added twice. Lists of millions of
    lines are read a batch at a time (memory stays small), in one transaction.

    Exit code 0 if the list was imported, 2 if it had problems or could not be read.
    """
    from .hashlists import format_problems, import_hash_list
    from .store import is_database_url

    path = _db_path(db)
    created = not is_database_url(path) and not os.path.exists(path)
    try:
        with open(hash_list, "rb") as handle:  # the line count, for the progress bar
            lines = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    except OSError as exc:
        _fail(safe(f"{hash_list}: cannot read: {exc.strerror or exc}"))
    index = _open_index(db, create=True)
    with index, progress_bar(lines, "importing", False) as bar:
        try:
            report = import_hash_list(index, hash_list, fmt=fmt, algorithm=algorithm,
                                      labels=labels, source=source, skip_invalid=skip_invalid,
                                      progress=bar)
        except OSError as exc:
            _fail(safe(f"{hash_list}: cannot read: {exc.strerror or exc}"))
        total = len(index)
    if report.problems:
        _say("\n".join(safe(line) for line in format_problems(report.problems).split("\n")),
             err=True)
    if not report.imported:
        if created and total == 0:  # this command made the database: leave nothing behind
            for leftover in (path, path + "-wal", path + "-shm"):
                if os.path.exists(leftover):
                    os.remove(leftover)
        _fail(f"nothing imported: {len(report.problems)} problem(s) in {safe(hash_list)}; fix "
              "them, or pass --skip-invalid to import the valid lines")
    if report.columns:
        mapped = ", ".join(f"{safe(name)} -> {safe(column)}"
                           for name, column in report.columns.items())
        _say(f"columns: {mapped}", err=True)
    skipped = f", {len(report.problems)} invalid lines skipped" if report.problems else ""
    click.echo(f"imported {len(report.added)} items ({report.fingerprints} hashes) from "
               f"{safe(hash_list)} [{report.format}], {report.already_present} already in "
               f"the database{skipped} -> {total} items in {safe(index.path)}")
    sys.exit(EXIT_ERROR if report.problems else EXIT_OK)


@main.command("export")
@_db_option
@click.option("-f", "--format", "fmt",
              type=click.Choice(("te", "csv", "jsonl", "pytx", "hex")),
              default="jsonl", show_default=True,
              help="jsonl and csv keep everything (labels, source, paths, SHA-256, metadata), "
                   "so importing the export gives back the same items; te writes only "
                   "'hash,quality,path' lines of one algorithm, for tools that expect them; "
                   "pytx writes 'pdq <hex>' lines (a python-threatexchange local_file "
                   "collaboration), hex bare hashes ('threatexchange match -H photo -').")
@click.option("-a", "--algorithm", type=click.Choice(ALGORITHMS), default="pdq",
              show_default=True, help="With --format te, pytx or hex: which fingerprints to "
                                      "write.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write to this file instead of the screen (standard output).")
def export_command(db, fmt, algorithm, output):
    """Write the database's fingerprints as a hash list to share or to import elsewhere.

    \b
    Examples:
      hashmatch export --output our_list.jsonl        # everything, for another hashmatch
      hashmatch export --format csv --output list.csv  # opens in a spreadsheet
      hashmatch export --format te > pdq_hashes.txt    # hash,quality,path lines
      hashmatch export --format pytx > ours.txt       # python-threatexchange local_file
    """
    from .hashlists import PYTX_SIGNAL_TYPES, export_hash_list

    if fmt == "pytx" and algorithm not in PYTX_SIGNAL_TYPES:
        _fail(f"python-threatexchange has no signal type for {algorithm}: use --format hex")
    from .report import OutputPathError, check_output_path, write_output

    index = _open_index(db, create=False)
    with index:
        if output is None:
            count = export_hash_list(index, sys.stdout, fmt, algorithm)
        else:
            try:
                target = check_output_path(output, [index.path])
            except OutputPathError as exc:
                _fail(safe(f"export not written: {exc}"))
            buffer = io.StringIO()
            count = export_hash_list(index, buffer, fmt, algorithm)
            write_output(target, buffer.getvalue().encode("utf-8"))
    click.echo(f"exported {count} hashes" + (f" to {output}" if output else ""), err=True)


from .cli_serve import register as _register_serve  # noqa: E402 - hashmatch serve, token

_register_serve(main)
