"""The Index: a persistent store of known images' fingerprints with exact in-memory search.

``Index`` joins the stages: files are fingerprinted (:mod:`hashmatch.hashing`, in worker
processes), written to the store (:mod:`hashmatch.store`, committed in batches) and added to
the in-memory code index (:mod:`hashmatch.codeindex`, one per algorithm and bit length).
Queries expand the query into its variants (PDQ's 8 rotations/flips from one DCT), search
every stored fingerprint within the radius, and aggregate per item. Searches are exact,
except in the region-aware PDQ query, where crop-window and region rows pass a 64-bit
low-frequency prefilter first (PREFILTER_THRESHOLD; full frames stay exact).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from . import decode as decoding
from .codeindex import BucketPrefilter, CodeIndex
from .errors import HashFormatError, HashmatchError, ImageError
from .fingerprint import DEFAULT_BITS, Fingerprint
from .hashers import check_algorithm, decode_needs, merge_needs
from .hashers.pdq import PIL_TRANSPOSE, VARIANT_NAMES
from .hashing import FileFingerprints, iter_hash_files
from .regions import DEFAULT_REGION_CONFIG, RegionConfig, RegionName, stored_role
from .store import is_database_url, open_store

# Industry defaults: PDQ matches at distance <= 31 of 256 (ThreatExchange, HMA); for the
# 64-bit imagehash family, 10 is the usual "same picture" cut-off.
# grid: the same picture re-encoded/resized stays within ~20 of 240 informative bits,
# unrelated pictures sit at 100-120 (benchmarks/RESULTS.md, robustness section).
DEFAULT_MAX_DISTANCE = {"pdq": 31, "phash": 10, "dhash": 10, "ahash": 10, "grid": 20}

# The eight rotations/flips, in the order PDQ's dihedral hashes come in.
DIHEDRAL_VARIANTS = VARIANT_NAMES
FULL_REGION = "full"
# Candidates verified per query (closest first): a copy is nearly always the closest item or
# among the few closest (alignment already moved its pair); each costs ~1-3 ms.
VERIFY_CANDIDATES = 6
BATCH_SIZE = 64  # files per store transaction: what add_files reports committed is durable


def default_db_path() -> str:
    """$HASHMATCH_DB, else hashmatch.hmdb in the working directory."""
    return os.environ.get("HASHMATCH_DB") or os.path.join(os.getcwd(), "hashmatch.hmdb")


@dataclass
class Match:
    """One stored item that matched a query, with the evidence of why."""

    item_id: int
    distance: int  # Hamming distance of the fingerprint pair that decided the match (the best)
    algorithm: str
    path: str | None
    source: str | None
    labels: list[str]
    meta: dict
    sha256: str | None
    query_region: str
    query_variant: str  # which rotation/flip of the query matched ("original" = as is)
    stored_region: str
    stored_variant: str
    query_quality: int | None
    stored_quality: int | None
    # What max_distance is compared with: distance plus the penalty for pairs that involve a
    # loosely cut region (hashmatch.regions.REGION_PENALTY); equal to distance otherwise.
    score: int | None = None
    # How strong the match is, decided by the verification stage (hashmatch.verify):
    # kind "copy" = the same picture (perhaps edited); "template" = a picture made from the
    # same template with other content (a lead, never a copy; only listed when asked for).
    kind: str = "copy"
    # True: the stored picture's own pixels confirmed it; False: the pixels disagree (only
    # template leads carry False); None: not verified (an item from a hash list, no pixels:
    # the plain-PDQ rule decided it).
    verified: bool | None = None
    # Plain words for an investigator, e.g. "same picture", "same picture, edited",
    # "same template, not a copy", "whole-image hash match (not verified: ...)".
    verdict: str = ""
    # The numbers behind the verdict (e.g. share of the picture that agrees, matched tiles).
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["evidence"] = dict(self.evidence)
        return out


@dataclass
class QueryResult:
    """The matches of one query file (or the reason it could not be read)."""

    path: str
    matches: list[Match] = field(default_factory=list)
    error: str | None = None
    sha256: str | None = None
    fingerprints: list[Fingerprint] = field(default_factory=list)


@dataclass
class AddOutcome:
    """One file of :meth:`Index.add_files`: added, duplicate, skipped or failed (with why)."""

    path: str
    status: str  # "added" | "duplicate" | "skipped" | "failed"
    item_id: int | None = None
    reason: str | None = None
    quality: int | None = None


@dataclass
class AddReport:
    """Per-file outcomes of :meth:`Index.add_files`, in input order."""

    outcomes: list[AddOutcome] = field(default_factory=list)

    def _with(self, status):
        return [o for o in self.outcomes if o.status == status]

    @property
    def added(self):
        return self._with("added")

    @property
    def duplicates(self):
        return self._with("duplicate")

    @property
    def skipped(self):
        return self._with("skipped")

    @property
    def failed(self):
        return self._with("failed")

    def counts(self) -> dict:
        return {s: len(self._with(s)) for s in ("added", "duplicate", "skipped", "failed")}


# The region-aware query (wide radius: 88 by default) reads crop windows (regions.stored_role
# "crop": 18 of an item's ~21 rows) and regions in two stages (codeindex.BucketPrefilter): the
# 64 signs of the 8x8 lowest-frequency DCT coefficients (hashers.pdq.low_frequency_codes) of
# the stored rows against the needles' own, then the exact 256-bit distances of the rows that
# pass. Each sealed segment keeps those 64-bit codes sorted into 65,536 buckets by the 16
# signs of the 4x4 lowest coefficients (hashers.pdq.low_frequency_keys), and a crop or region
# pass reads only the buckets within PREFILTER_KEY_RADIUS bits of a needle's key (~4 % of the
# rows of random codes at radius 4): crop windows are most of the stored rows, and scanning
# every one of their 64-bit codes was most of a query's time. A pair counts only when its
# low-frequency distance is <= PREFILTER_THRESHOLD and its key distance <= the key radius:
# approximations, measured on the benchmark (RESULTS.md, "Query cost at 1M, session 4" and
# "session 5"): of the crop queries whose true window is within 88 bits, 0.994 also have it
# within 15 low-frequency bits, and of those 0.992 within 4 key bits.
# Full frames are searched exactly: a prefilter there lost overlay recall (0.923 -> 0.864).
# Plain-PDQ searches (whole images, query_hashes: radius 31) are exact on every role.
PREFILTER_THRESHOLD = {"crop": 15, "region": 15}
PREFILTER_KEY_RADIUS = {"crop": 4, "region": 4}  # 16 would read every bucket


def _pdq_prefilter():
    from .hashers.pdq import low_frequency_codes, low_frequency_keys

    return BucketPrefilter(low_frequency_codes, low_frequency_keys, key_bits=16)


class _RoleCodes:
    """One CodeIndex per stored role (full frames, regions, crop windows: see
    :func:`hashmatch.regions.stored_role`), searched per role so a needle scans only the
    rows it may pair with. Ids are fingerprint ids, unique across roles. ``prefilter_roles``
    (PDQ's crop windows and regions, PREFILTER_THRESHOLD) also keep each row's bucketed
    low-frequency code (CodeIndex.prefiltered_hits)."""

    def __init__(self, nbits: int, prefilter_roles=()):
        self.nbits = nbits
        self.parts: dict[str, CodeIndex] = {}
        self.prefilter_roles = tuple(prefilter_roles)

    def add(self, codes: np.ndarray, ids: np.ndarray, roles: np.ndarray) -> None:
        for role in np.unique(roles):
            mask = roles == role
            role = str(role)
            if role not in self.parts:
                # Crop windows (18 of an item's ~21 rows) are only ever met by a wide-radius
                # search; MIH tables for them would cost memory (~90 B a row) and build time
                # and never be read.
                method = "scan" if role == "crop" else "auto"
                prefilter = _pdq_prefilter() if role in self.prefilter_roles else None
                self.parts[role] = CodeIndex(self.nbits, method=method, prefilter=prefilter)
            self.parts[role].add(np.ascontiguousarray(codes[mask]), ids[mask])

    def remove(self, ids) -> None:
        for part in self.parts.values():
            part.remove(ids)

    def codes_of(self, ids, roles: np.ndarray) -> np.ndarray | None:
        out = np.zeros((len(ids), self.nbits // 8), np.uint8)
        for role in np.unique(roles):
            mask = roles == role
            codes = self.parts[str(role)].codes_of(np.asarray(ids)[mask])
            if codes is None:
                return None
            out[mask] = codes
        return out

    @property
    def nbytes(self) -> int:
        return sum(part.nbytes for part in self.parts.values())


class _Shard:
    """The codes of one (algorithm, nbits) in memory, with per-row metadata.

    Rows are kept in fingerprint-id order in arrays that grow geometrically (appending a
    batch is amortised O(batch), not O(index)). Removed rows stay as tombstones -- the code
    index never returns them -- and are compacted away once a quarter of the rows are dead,
    so a sync with removes costs O(changes), not O(index).
    """

    _COLUMNS = ("fp_ids", "item_ids", "region_codes", "variant_codes", "qualities", "live")

    def __init__(self, algorithm: str, nbits: int):
        self.algorithm, self.nbits = algorithm, nbits
        self.codes = _RoleCodes(nbits, tuple(PREFILTER_THRESHOLD)
                                if algorithm == "pdq" and nbits == 256 else ())
        self.n = 0  # rows in use, live or dead
        self.n_dead = 0
        self.fp_ids = np.empty(0, np.int64)
        self.item_ids = np.empty(0, np.int64)
        self.region_codes = np.empty(0, np.int16)  # indexes into self.names
        self.variant_codes = np.empty(0, np.int16)
        self.qualities = np.empty(0, np.int16)  # -1 = unknown
        self.live = np.empty(0, bool)
        self.names: list[str] = []
        self._name_code: dict[str, int] = {}
        self._items_sorted = True  # item ids ascending too (the usual case): fast removes
        self._item_order = None  # argsort of item_ids when they are not ascending

    def append(self, fp_ids, item_ids, codes, regions, variants, qualities) -> None:
        if len(fp_ids) == 0:
            return
        fp_ids = np.asarray(fp_ids, np.int64)
        order = np.argsort(fp_ids, kind="stable")
        fp_ids = fp_ids[order]
        item_ids = np.asarray(item_ids, np.int64)[order]
        region_names = np.asarray(regions, object)[order]
        self.codes.add(np.asarray(codes, np.uint8)[order], fp_ids,
                       np.array([stored_role(str(name)) for name in region_names]))
        new = {
            "fp_ids": fp_ids, "item_ids": item_ids,
            "region_codes": self._encode(region_names),
            "variant_codes": self._encode(np.asarray(variants, object)[order]),
            "qualities": np.asarray(qualities, np.int16)[order],
            "live": np.ones(len(fp_ids), bool),
        }
        self._item_order = None
        in_order = self.n == 0 or fp_ids[0] > self.fp_ids[self.n - 1]
        if self.n and item_ids[0] < self.item_ids[self.n - 1] or np.any(np.diff(item_ids) < 0):
            self._items_sorted = False
        self._grow(self.n + len(fp_ids))
        for name, values in new.items():
            getattr(self, name)[self.n:self.n + len(fp_ids)] = values
        self.n += len(fp_ids)
        if not in_order:
            self._compact(resort=True)

    def append_codes(self, rows) -> None:
        """Append a store ``Codes`` set (one algorithm and bit length)."""
        self.append(rows.fingerprint_ids, rows.item_ids, rows.codes, rows.regions,
                    rows.variants, rows.qualities)

    def _encode(self, names) -> np.ndarray:
        out = np.empty(len(names), np.int16)
        for i, name in enumerate(names):
            code = self._name_code.get(name)
            if code is None:
                code = self._name_code[name] = len(self.names)
                self.names.append(str(name))
            out[i] = code
        return out

    def _grow(self, need: int) -> None:
        if need <= len(self.fp_ids):
            return
        capacity = max(need, 2 * len(self.fp_ids), 1024)
        for name in self._COLUMNS:
            old = getattr(self, name)
            grown = np.empty(capacity, old.dtype)
            grown[:self.n] = old[:self.n]
            setattr(self, name, grown)

    def _compact(self, resort: bool = False) -> None:
        keep = self.live[:self.n]
        columns = {name: getattr(self, name)[:self.n][keep] for name in self._COLUMNS}
        if resort:
            order = np.argsort(columns["fp_ids"], kind="stable")
            columns = {name: values[order] for name, values in columns.items()}
        for name, values in columns.items():
            setattr(self, name, values)
        self.n, self.n_dead = len(columns["fp_ids"]), 0
        self._item_order = None
        self._items_sorted = bool(np.all(np.diff(self.item_ids) >= 0))

    def remove_items(self, item_ids) -> None:
        targets = np.unique(np.asarray(list(item_ids), np.int64))
        if len(targets) == 0 or self.n == 0:
            return
        items = self.item_ids[:self.n]
        if self._items_sorted:
            lo = np.searchsorted(items, targets, "left")
            hi = np.searchsorted(items, targets, "right")
            rows = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi) if b > a] or
                                  [np.empty(0, np.int64)])
        else:
            rows = np.nonzero(np.isin(items, targets))[0]
        rows = rows[self.live[rows]]
        if len(rows) == 0:
            return
        self.codes.remove(self.fp_ids[rows])
        self.live[rows] = False
        self.n_dead += len(rows)
        if self.n_dead * 4 > self.n:
            self._compact()

    def rows_of(self, fp_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.fp_ids[:self.n], fp_ids)

    def role_numbers_of(self, rows: np.ndarray) -> np.ndarray:
        """Index into regions.ROLES of each row's role."""
        from .regions import ROLES

        numbers = np.array([ROLES.index(stored_role(name)) for name in self.names] or [0])
        return numbers[self.region_codes[rows]]

    def roles_of(self, rows: np.ndarray) -> np.ndarray:
        from .regions import ROLES

        return np.array(ROLES)[self.role_numbers_of(rows)]

    def penalties_of(self, rows: np.ndarray) -> np.ndarray:
        from .regions import region_penalty

        penalties = np.array([region_penalty(name) for name in self.names] or [0])
        return penalties[self.region_codes[rows]]

    def codes_of(self, rows: np.ndarray) -> np.ndarray | None:
        return self.codes.codes_of(self.fp_ids[rows], self.roles_of(rows))

    def rows_of_items(self, item_ids) -> tuple[np.ndarray, np.ndarray]:
        """Every live row of each item: (rows, position in ``item_ids`` of each row's item)."""
        item_ids = np.asarray(item_ids, np.int64)
        if self._items_sorted:
            order, items = None, self.item_ids[:self.n]
        else:  # rows of an item are scattered: one sort per state of the shard, then lookups
            if self._item_order is None or len(self._item_order) != self.n:
                self._item_order = np.argsort(self.item_ids[:self.n], kind="stable")
            order = self._item_order
            items = self.item_ids[:self.n][order]
        lo = np.searchsorted(items, item_ids, "left")
        counts = np.searchsorted(items, item_ids, "right") - lo
        owner = np.repeat(np.arange(len(item_ids)), counts)
        positions = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        rows = positions if order is None else order[positions]
        live = self.live[rows]
        return rows[live], owner[live]

    def full_rows_of(self, item_ids, fallback_rows) -> np.ndarray:
        """Each item's live full-frame row (``fallback_rows`` where it has none)."""
        out = np.asarray(fallback_rows, np.int64).copy()
        rows, owner = self.rows_of_items(item_ids)
        full = self.region_codes[rows] == self._name_code.get(FULL_REGION, -1)
        owners, first = np.unique(owner[full], return_index=True)
        out[owners] = rows[full][first]
        return out

    def __len__(self) -> int:
        return self.n - self.n_dead


class Index:
    """A persistent image-fingerprint index. Use :meth:`open`; close it (or use ``with``)."""

    batch_size = BATCH_SIZE

    def __init__(self, store, path: str, algorithms: Sequence[str],
                 sync_interval: float | None = None, regions: bool = True,
                 region_config: RegionConfig | None = None):
        self.store = store
        self.path = path
        self.algorithms = tuple(check_algorithm(a) for a in algorithms)
        # Store and search PDQ fingerprints of image regions too (borders trimmed, the
        # picture inside a screenshot/post/meme): hashmatch.regions.
        self.regions = regions
        # Which steps of the region pipeline run, here and in worker processes.
        self.region_config = region_config or DEFAULT_REGION_CONFIG
        self._shards: dict[tuple[str, int], _Shard] = {}
        self._seq = 0
        # Queries sync() first when this many seconds have passed since the last sync
        # (None: only explicit sync() and this index's own writes do).
        self.sync_interval = sync_interval
        self._last_sync = time.monotonic()
        self._load()

    # -- lifecycle ------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | None = None, create: bool = False,
             algorithms: Sequence[str] = ("pdq",), sync_interval: float | None = None,
             regions: bool = True, region_config: RegionConfig | None = None) -> "Index":
        """Open (or with ``create=True`` create) the index at ``path`` (default: see
        :func:`default_db_path`); a ``postgresql://`` URL opens the shared PostgreSQL store.
        ``algorithms``: what :meth:`add_files` computes. ``sync_interval``: seconds after
        which a query first applies other writers' changes (:meth:`sync`); None = never
        automatically. ``regions``: :meth:`add_files` also stores PDQ fingerprints of the
        image's regions and queries search with them (re-posts in borders, memes,
        screenshots); False = full frames only, as plain PDQ does. ``region_config``: which
        steps of the region pipeline run (:class:`hashmatch.regions.RegionConfig`; default:
        all, as measured)."""
        path = os.fspath(path) if path is not None else default_db_path()
        store = open_store(path, create=create)
        if is_database_url(path):
            path = store.path  # without the password
        return cls(store, path, algorithms, sync_interval=sync_interval, regions=regions,
                   region_config=region_config)

    def close(self) -> None:
        if self.store is not None:
            self._save_cache()
            self.store.close()
            self.store = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self) -> int:
        return self.store.count_items()

    # -- loading and syncing --------------------------------------------------------------
    def _load(self) -> None:
        from .codeindex import segment_files
        from .store.cache import load_index_cache, segment_folder_of

        # One snapshot: with other writers at work, the codes must be those of exactly _seq.
        # Large sealed segments are mapped from files beside the codes cache (shared by every
        # process that opens this store: codeindex.segment_files).
        with self.store.snapshot(), segment_files(segment_folder_of(self.store)):
            self._seq = self.store.last_change_seq()
            cached = load_index_cache(self.store, self._seq)
            for algorithm, nbits in self.store.algorithms():
                rows = cached.get((algorithm, nbits)) if cached else None
                if rows is None:
                    rows = self.store.load_codes(algorithm, nbits)
                self._shard(algorithm, nbits).append_codes(rows)
        self._cache_dirty = cached is None

    def _save_cache(self) -> None:
        from .store.cache import save_index_cache

        if not self._cache_dirty:
            return
        try:
            save_index_cache(self.store, self._seq, self._shards)
        except OSError:
            pass  # a cache is an optimisation; the store stays the truth
        self._cache_dirty = False

    def sync(self) -> int:
        """Apply the store's adds and removes made since this index last looked (by this
        process or another). Returns the number of changes applied. Incremental: only the
        changed items' fingerprints are read."""
        self._last_sync = time.monotonic()
        changes = self.store.changes_since(self._seq)
        if not changes:
            return 0
        removed = {item for _, item, op in changes if op == "remove"}
        added = [item for _, item, op in changes if op == "add" and item not in removed]
        for shard in self._shards.values():
            shard.remove_items(removed)
        if added:
            for (algorithm, nbits), rows in self.store.load_codes_for_items(added).items():
                self._shard(algorithm, nbits).append_codes(rows)
        self._seq = changes[-1][0]
        self._cache_dirty = True
        return len(changes)

    def _shard(self, algorithm: str, nbits: int) -> _Shard:
        key = (algorithm, nbits)
        if key not in self._shards:
            self._shards[key] = _Shard(algorithm, nbits)
        return self._shards[key]

    # -- adding ---------------------------------------------------------------------------
    def add_files(self, paths: Iterable, labels: Sequence[str] | None = None,
                  source: str | None = None, meta: dict | None = None, workers: int | None = None,
                  progress: Callable[[int], None] | None = None, exact: bool = False,
                  min_quality: int | None = None,
                  on_commit: Callable[[list[AddOutcome]], None] | None = None,
                  client=None) -> AddReport:
        """Fingerprint and store image files. Never raises for one bad file.

        Returns an :class:`AddReport` with, per file: added (new item id), duplicate (same
        SHA-256 as a stored item), skipped (PDQ quality below ``min_quality``) or failed
        (reason). Files are committed in batches of BATCH_SIZE; ``on_commit`` is called with
        each batch's outcomes once that batch is durable on disk. ``client``: hash on a Dask
        cluster instead of local worker processes (see :mod:`hashmatch.distributed`).
        """
        paths = [os.fspath(p) for p in paths]
        report = AddReport()
        batch: list[FileFingerprints] = []
        for result in iter_hash_files(paths, self.algorithms, exact=exact, workers=workers,
                                      progress=progress, client=client, regions=self.regions,
                                      region_config=self.region_config):
            batch.append(result)
            if len(batch) >= self.batch_size:
                report.outcomes.extend(self._commit_files(batch, labels, source, meta, min_quality,
                                                          on_commit))
                batch = []
        if batch:
            report.outcomes.extend(self._commit_files(batch, labels, source, meta, min_quality,
                                                      on_commit))
        self.store.audit("index-summary", {"files": len(paths), **report.counts(),
                                           "source": source, "labels": list(labels or [])})
        return report

    def _commit_files(self, batch, labels, source, meta, min_quality, on_commit
                      ) -> list[AddOutcome]:
        outcomes: list[AddOutcome | None] = []
        records = []
        for result in batch:
            quality = _pdq_quality(result.fingerprints)
            if not result.ok:
                outcomes.append(AddOutcome(result.path, "failed", reason=result.error))
            elif min_quality is not None and quality is not None and quality < min_quality:
                outcomes.append(AddOutcome(result.path, "skipped", quality=quality,
                                           reason=f"low quality ({quality} < {min_quality})"))
            else:
                outcomes.append(None)
                records.append(self._record_for(result, labels, source, meta))
        stored = self.store.add_items(records, action="index") if records else []
        stored_iter = iter(stored)
        final = []
        for result, outcome in zip(batch, outcomes):
            if outcome is None:
                added = next(stored_iter)
                outcome = AddOutcome(result.path, added.status, added.item_id,
                                     quality=_pdq_quality(result.fingerprints))
            final.append(outcome)
        self.sync()  # brings this batch (and any other writer's changes) into memory
        if on_commit is not None:
            on_commit(final)
        return final

    def _record_for(self, result: FileFingerprints, labels, source, meta):
        from .store import ItemRecord

        item_meta = dict(meta or {})
        item_meta.update({"format": result.format, "width": result.width,
                          "height": result.height})
        return ItemRecord(
            path=os.path.abspath(result.path), sha256=result.sha256, size=result.file_size,
            labels=list(labels or []), source=source, meta=item_meta,
            fingerprints=[(fp.algorithm, fp.nbits, FULL_REGION, "original", fp.bits.tobytes(),
                           fp.quality) for fp in result.fingerprints]
            + [(fp.algorithm, fp.nbits, name, "original", fp.bits.tobytes(), fp.quality)
               for name, fp in result.regions],
            verification=result.verification)

    def add_hashes(self, hashes, algorithm: str = "pdq", qualities=None,
                   labels: Sequence[str] | None = None, source: str | None = None,
                   meta: dict | Sequence[dict] | None = None) -> list[int]:
        """Store hashes without images (hash lists from partners). Returns item ids.

        ``hashes``: hex strings, Fingerprints, or a uint8 array (n, nbits/8) of packed codes.
        ``qualities`` and a list ``meta``: one per hash. Validated as ``hashmatch import``
        validates a list line (hashlists.validate_item_fields): quality 0-100, labels a
        list of strings (one string is one label), meta a JSON object; anything else raises
        HashFormatError and nothing is stored.
        """
        from .hashlists import validate_item_fields
        from .store import ItemRecord

        fingerprints = _as_fingerprints(hashes, algorithm, None)
        n = len(fingerprints)
        if qualities is not None:
            qualities = list(qualities)
            if len(qualities) != n:
                raise HashFormatError(f"{len(qualities)} qualities for {n} hashes: give one "
                                      "per hash (None where unknown)")
        else:
            qualities = [fp.quality for fp in fingerprints]
        if isinstance(meta, (list, tuple)):
            if len(meta) != n:
                raise HashFormatError(f"{len(meta)} meta objects for {n} hashes: give one per "
                                      "hash, or one dict for all")
            metas = list(meta)
        else:
            metas = [meta] * n
        records = []
        for fp, quality, item_meta in zip(fingerprints, qualities, metas):
            quality, item_labels, item_source, item_meta = validate_item_fields(
                algorithm, fp.quality if quality is None else quality, labels, source,
                item_meta)
            records.append(ItemRecord(
                path=None, sha256=None, size=None, labels=item_labels, source=item_source,
                meta=dict(item_meta),
                fingerprints=[(fp.algorithm, fp.nbits, FULL_REGION, "original",
                               fp.bits.tobytes(), quality)]))
        stored = self.store.add_items(
            records, action="import", detail={"algorithm": algorithm, "source": source}
        ) if records else []
        self.sync()
        return [s.item_id for s in stored]

    def remove(self, item_ids) -> int:
        """Remove items (an id or ids); they never match again. Returns how many existed."""
        ids = [int(item_ids)] if np.isscalar(item_ids) else [int(i) for i in item_ids]
        removed = self.store.remove_items(ids)
        self.sync()
        return removed

    # -- querying -------------------------------------------------------------------------
    def query(self, image, max_distance: int | None = None, top_k: int | None = None,
              exact: bool = False, dihedral: bool = True, min_quality: int | None = None,
              margin: int | None = None, regions: bool | None = None,
              templates: bool = False) -> list[Match]:
        """Stored items that are the same picture as an image (path, bytes, PIL image or
        array), best first.

        PDQ (the default): the query's full frame in its 8 rotations/flips and its regions
        (content without borders, the picture inside a screenshot/post/meme, as is and
        mirrored) are searched; every stored item whose best pair (distance plus a penalty
        for embedded regions) is within ``max_distance`` (default 76 of 256 with regions,
        regions.PDQ_MAX_DISTANCE; 31 without) is a candidate, and the closest
        (VERIFY_CANDIDATES) are **verified** on the stored item's own pixels
        (:mod:`hashmatch.verify`): only the same picture, perhaps edited, is a match
        (``Match.verified`` True, ``Match.verdict`` in words, ``Match.evidence`` the
        figures). A picture made from the same template with other content (an ID card of
        one design with another name and photo) is not a match; ``templates=True`` lists
        it as a lead (``Match.kind == "template"``). Items without stored pixels (hash-list
        entries) match by the plain PDQ rule (whole image, any rotation/flip, <= 31;
        ``verified`` None). ``margin`` > 0: also require the best candidate to be that many
        bits closer than any other (the rule before verification; default 0).
        ``min_quality``: ignore PDQ fingerprints of lower quality (default 50 with regions:
        flat and near-empty regions match nothing). ``regions=False``: whole images only.
        Other algorithms: every item within ``max_distance``, not verified.

        Raises :class:`hashmatch.ImageError` if the image cannot be read.
        """
        use_regions = self._use_regions(regions)
        fingerprints, _, aligner = _query_needles(image, self._query_algorithms(), exact,
                                                  dihedral, use_regions, self.region_config)
        self._maybe_sync()
        return self._search(fingerprints, max_distance, top_k, min_quality, margin, use_regions,
                            aligner, templates)

    def query_many(self, sources: Iterable, max_distance: int | None = None,
                   top_k: int | None = None, exact: bool = False, dihedral: bool = True,
                   min_quality: int | None = None, workers: int | None = None,
                   progress: Callable[[int], None] | None = None,
                   margin: int | None = None, regions: bool | None = None,
                   templates: bool = False) -> list[QueryResult]:
        """Query many files (as :meth:`query`); hashing runs in worker processes. Per-file
        errors are returned. ``list(iter_query_many(...))``."""
        return list(self.iter_query_many(sources, max_distance=max_distance, top_k=top_k,
                                         exact=exact, dihedral=dihedral,
                                         min_quality=min_quality, workers=workers,
                                         progress=progress, margin=margin, regions=regions,
                                         templates=templates))

    def iter_query_many(self, sources: Iterable, max_distance: int | None = None,
                        top_k: int | None = None, exact: bool = False, dihedral: bool = True,
                        min_quality: int | None = None, workers: int | None = None,
                        progress: Callable[[int], None] | None = None,
                        margin: int | None = None, regions: bool | None = None,
                        templates: bool = False):
        """Like :meth:`query_many`, but yields each QueryResult (in input order) as soon as
        it is answered, so a caller can print or save results while the rest are hashed."""
        from .parallel import ordered_map

        sources = [os.fspath(s) if isinstance(s, os.PathLike) else s for s in sources]
        self._maybe_sync()  # the whole batch is answered from one state of the store
        use_regions = self._use_regions(regions)
        job = _QueryFingerprintJob(self._query_algorithms(), exact, dihedral, use_regions,
                                   self.region_config)
        for done, (name, fingerprints, sha256, aligner, error) in enumerate(
                ordered_map(job, sources, workers=workers), start=1):
            if error:
                result = QueryResult(name, error=error)
            else:
                try:
                    matches = self._search(fingerprints, max_distance, top_k, min_quality,
                                           margin, use_regions, aligner, templates)
                except HashmatchError:
                    raise  # the store failed: every later query would too
                except Exception as exc:  # noqa: BLE001 - one bad query must not cost the batch
                    reason = f"internal error ({type(exc).__name__}: {exc})"
                    result = QueryResult(name, error=reason, sha256=sha256)
                else:
                    result = QueryResult(name, matches, sha256=sha256,
                                         fingerprints=[fp for fp, region, variant in fingerprints
                                                       if region == FULL_REGION
                                                       and variant == "original"])
            if progress:
                progress(done)
            yield result

    def query_hashes(self, hashes, algorithm: str = "pdq", max_distance: int | None = None,
                     top_k: int | None = None, dihedral: bool = False) -> list[list[Match]]:
        """Match hashes (hex strings, Fingerprints or packed array) without images: every
        item with a fingerprint within ``max_distance`` (default: 31 for PDQ), best first.

        PDQ: no pixels to verify, so PDQ's own rule decides (as :meth:`_verify` does for
        items without pixels): an item matches when its best pair over its stored rows (full
        frames, regions, crop windows) is whole image against whole image within 31 bits;
        Match.verified is None. ``dihedral=True`` (PDQ only) also searches
        each hash's 8 rotations/flips derived from its bits
        (:func:`hashmatch.hashers.pdq.dihedral_from_hash`: a few bits from what the turned
        image would hash to, so use the usual radius or slightly more), against stored full
        frames. A thin layer over the array search (:meth:`_code_hits`, as
        :meth:`search_codes`): one search for the whole batch, then one metadata look-up
        for the items that were hit.
        """
        if (algorithm == "pdq" and isinstance(hashes, np.ndarray) and hashes.ndim == 2
                and hashes.dtype == np.uint8 and hashes.shape[1] == 32):
            # packed PDQ codes (the hash-list hot path): no Fingerprint object per hash
            self._maybe_sync()
            return self._query_codes(np.ascontiguousarray(hashes), [None] * len(hashes),
                                     algorithm, max_distance, top_k, dihedral)
        fingerprints = _as_fingerprints(hashes, algorithm, None)
        self._maybe_sync()  # once: the whole batch is answered from one state of the store
        out = [[] for _ in fingerprints]
        for length in sorted({fp.nbits for fp in fingerprints}):  # one batch per length
            at = [k for k, fp in enumerate(fingerprints) if fp.nbits == length]
            found = self._query_codes(np.stack([fingerprints[k].bits for k in at]),
                                      [fingerprints[k].quality for k in at], algorithm,
                                      max_distance, top_k, dihedral)
            for k, matches in zip(at, found):
                out[k] = matches
        return out

    def _query_codes(self, codes, qualities, algorithm, max_distance, top_k, dihedral):
        """query_hashes of (Q, nbytes) packed codes of one length (``qualities``: the
        queries' own, for Match.query_quality)."""
        nbits = codes.shape[1] * 8
        if max_distance is None:
            max_distance = DEFAULT_MAX_DISTANCE[algorithm]
        radius = max(0, min(int(max_distance), nbits))
        needles = codes[:, None, :]
        variants = ["original"]
        if dihedral and algorithm == "pdq":
            from .hashers.pdq import dihedral_from_hash

            variants = list(DIHEDRAL_VARIANTS)
            needles = np.ascontiguousarray(dihedral_from_hash(codes), np.uint8)
        lims, item_ids, distances, rows, variant = self._code_hits(
            needles, radius, algorithm, nbits, roles=("full", "region", "crop"))
        shard = self._shards.get((algorithm, nbits))
        counts = lims[1:] - lims[:-1]
        if algorithm == "pdq" and len(item_ids):
            # No pixels to verify against (Index._verify without a query image): PDQ's own
            # rule decides -- the item's best pair is whole image vs whole image, <= 31.
            full = shard._name_code.get(FULL_REGION, -1)
            keep = (shard.region_codes[rows] == full) & (distances <= DEFAULT_MAX_DISTANCE["pdq"])
            query = np.repeat(np.arange(len(counts)), counts)[keep]
            item_ids, distances, rows, variant = (
                item_ids[keep], distances[keep], rows[keep], variant[keep])
            counts = np.bincount(query, minlength=len(counts))
            lims = np.zeros(len(counts) + 1, np.int64)
            np.cumsum(counts, out=lims[1:])
        if algorithm == "pdq":
            from . import verify

            kind_words, facts = verify.PLAIN_WORDS, {"rule": verify.PLAIN_RULE}
        else:
            kind_words, facts = ("similar hash (not verified)",
                                 {"rule": f"{algorithm} distance <= radius"})
        if top_k is not None:  # each query's hits are best first: keep the first top_k
            keep = np.arange(len(item_ids)) - np.repeat(lims[:-1], counts) < int(top_k)
            item_ids, distances, rows, variant = (
                item_ids[keep], distances[keep], rows[keep], variant[keep])
            counts = np.minimum(counts, int(top_k))
        items = self.store.get_items(sorted(set(item_ids.tolist()))) if len(item_ids) else {}
        out, at = [], 0
        for quality, count in zip(qualities, counts.tolist()):
            matches = []
            for j in range(at, at + count):
                item = items[int(item_ids[j])]
                row, distance = int(rows[j]), int(distances[j])
                sq = int(shard.qualities[row])
                matches.append(Match(
                    item_id=int(item_ids[j]), distance=distance, algorithm=algorithm,
                    path=item.path, source=item.source, labels=list(item.labels),
                    meta=dict(item.meta), sha256=item.sha256, query_region=FULL_REGION,
                    query_variant=variants[int(variant[j])],
                    stored_region=str(shard.names[shard.region_codes[row]]),
                    stored_variant=str(shard.names[shard.variant_codes[row]]),
                    query_quality=quality, stored_quality=None if sq < 0 else sq,
                    score=distance, kind="copy", verified=None, verdict=kind_words,
                    evidence=dict(facts)))
            out.append(matches)
            at += count
        return out

    def search_codes(self, codes, max_distance: int, algorithm: str = "pdq"):
        """Exact range search of packed codes, arrays in and out (FAISS ``range_search``
        style): ``codes`` (Q, nbytes) uint8 -> (lims int64 (Q + 1,), item_ids int64,
        distances int32); query ``q``'s hits are ``item_ids[lims[q]:lims[q + 1]]``.

        Every live item with a stored *full-frame* fingerprint of ``algorithm`` within
        ``max_distance`` bits of the query is returned once (one entry per item, not per
        fingerprint row), with its smallest distance; within a query, hits are sorted by
        (distance, item id). No per-hit Python object and no store look-up: for hash-list
        matching at volume (:meth:`query_hashes` adds the items' metadata).

        ``codes`` may also be (Q, m, nbytes): m needles per query (e.g. its 8 dihedral
        variants, up to 8 per pass); an item is hit when one of them is within the radius,
        at the smallest distance over them."""
        codes = np.asarray(codes, np.uint8)
        if codes.ndim == 2:
            codes = codes[:, None, :]
        if codes.ndim != 3:
            raise ValueError(f"codes must be (Q, nbytes) or (Q, m, nbytes), got {codes.shape}")
        check_algorithm(algorithm)
        self._maybe_sync()
        nbits = codes.shape[2] * 8
        radius = max(0, min(int(max_distance), nbits))
        lims, item_ids, distances, _, _ = self._code_hits(codes, radius, algorithm, nbits,
                                                          roles=("full",))
        return lims, item_ids, distances

    def _code_hits(self, needles, radius: int, algorithm: str, nbits: int, roles):
        """(lims, item_ids, distances int32, shard rows, needle) of (Q, m, nbytes) needles:
        per query, every item with a live row of ``roles`` within ``radius`` of one of its
        needles, once, at its best pair (lowest distance, then needle, role, row), sorted by
        (distance, item id). Needle 0 meets every role of ``roles``; the others (rotations)
        meet full frames only, as :func:`hashmatch.regions.search_roles` says."""
        from .regions import ROLES

        nq = len(needles)
        shard = self._shards.get((algorithm, nbits))
        parts = []  # (query, fingerprint ids, distances, needle, role number)
        if shard is not None and len(shard):
            for role in roles:
                part = shard.codes.parts.get(role)
                if part is None or len(part) == 0:
                    continue
                these = needles if role == "full" else needles[:, :1]
                offsets, ids, dist, var = part.range_search_multi(these, radius)
                query = np.repeat(np.arange(nq, dtype=np.int64), offsets[1:] - offsets[:-1])
                parts.append((query, ids, dist, var, np.full(len(ids), ROLES.index(role))))
        if not parts:
            return (np.zeros(nq + 1, np.int64), np.empty(0, np.int64), np.empty(0, np.int32),
                    np.empty(0, np.int64), np.empty(0, np.int8))
        query, fp_ids, dist, var, role_number = (np.concatenate(c) for c in zip(*parts))
        rows = shard.rows_of(fp_ids)
        items = shard.item_ids[rows]
        # best pair per (query, item), then (distance, item) order within each query
        order = np.lexsort((rows, role_number, var, dist, items, query))
        query, items, dist, rows, var = (query[order], items[order], dist[order],
                                         rows[order], var[order])
        first = np.ones(len(items), bool)
        first[1:] = (items[1:] != items[:-1]) | (query[1:] != query[:-1])
        order = np.nonzero(first)[0]
        order = order[np.lexsort((items[order], dist[order], query[order]))]
        query, items, dist, rows, var = (query[order], items[order], dist[order],
                                         rows[order], var[order])
        lims = np.zeros(nq + 1, np.int64)
        np.cumsum(np.bincount(query, minlength=nq), out=lims[1:])
        return lims, items, dist.astype(np.int32, copy=False), rows, var

    @staticmethod
    def _hash_variants(fp: Fingerprint, dihedral: bool):
        """(m, nbytes) needles of one hash: itself, or (PDQ, ``dihedral``) its 8
        rotations/flips derived from its bits, in DIHEDRAL_VARIANTS order."""
        if not dihedral or fp.algorithm != "pdq":
            return fp.bits[None, :]
        from .hashers.pdq import dihedral_from_hash

        return np.ascontiguousarray(dihedral_from_hash(fp.bits)[0], np.uint8)

    def _query_algorithms(self) -> tuple[str, ...]:
        stored = {a for a, _ in self._shards}
        return tuple(a for a in self.algorithms if a in stored) or self.algorithms

    def default_max_distance(self, algorithm: str, regions: bool | None = None) -> int:
        """What ``max_distance=None`` means for ``algorithm`` in a query."""
        from . import regions as rg

        if algorithm == "pdq" and self._use_regions(regions):
            return rg.PDQ_MAX_DISTANCE
        return DEFAULT_MAX_DISTANCE.get(algorithm, 10)

    def uses_regions(self, regions: bool | None = None) -> bool:
        """Whether a query given ``regions`` (None: this index's setting) searches the region
        fingerprints; they are PDQ only, so never when PDQ is not queried."""
        return self._use_regions(regions)

    def _use_regions(self, regions: bool | None = None) -> bool:
        wanted = self.regions if regions is None else regions
        return bool(wanted) and "pdq" in self._query_algorithms()

    def _maybe_sync(self) -> None:
        # Once per public query call, never per searched hash: a batch (query_hashes,
        # query_many) must be answered from one state of the store, or it could see half of
        # another writer's transaction.
        if self.sync_interval is not None and \
                time.monotonic() - self._last_sync >= self.sync_interval:
            self.sync()

    def _search(self, fingerprints, max_distance, top_k, min_quality, margin=None,
                use_regions: bool | None = None, aligner=None, templates: bool = False
                ) -> list[Match]:
        """The query's stages: candidate search of every (fingerprint, region, variant)
        needle (exact range search, per-item aggregation, alignment of the closest items'
        pairs: :func:`search_shard`), then verification of the closest candidates on their
        stored pixels (:mod:`hashmatch.verify`; ``aligner`` carries the query's pixels), then
        the decision: a verified copy is a match; a same-template picture is a lead, listed
        only with ``templates``; an item without stored pixels (a hash-list entry) matches by
        the plain PDQ rule (whole image, any rotation/flip, distance <= 31)."""
        from .regions import PDQ_MARGIN

        use_regions = self._use_regions() if use_regions is None else use_regions
        verifying = aligner is not None
        by_algorithm: dict[tuple[str, int], list] = {}
        for needle in fingerprints:
            by_algorithm.setdefault((needle[0].algorithm, needle[0].nbits), []).append(needle)
        evidence: dict[int, tuple] = {}  # item -> (key, algorithm, distance, ...)
        boxes: dict[int, tuple] = {}
        for (algorithm, nbits), group in by_algorithm.items():
            shard = self._shards.get((algorithm, nbits))
            if shard is None or len(shard) == 0:
                continue
            pdq_verified = verifying and algorithm == "pdq"
            shard_margin = margin if margin is not None or not pdq_verified else 0
            shard_boxes: dict[int, tuple] = {}
            found = search_shard(shard, algorithm, group, max_distance, min_quality,
                                 shard_margin, use_regions and algorithm == "pdq", aligner,
                                 boxes=shard_boxes if pdq_verified else None,
                                 slack=PDQ_MARGIN if pdq_verified and use_regions else 0,
                                 region_config=self.region_config)
            for item, value in found.items():
                if item not in evidence or value[0] < evidence[item][0]:
                    evidence[item] = value
                    if item in shard_boxes:
                        boxes[item] = shard_boxes[item]
        ranked = sorted(evidence.items(), key=lambda kv: (kv[1][0], kv[0]))
        judged = self._verify(ranked, boxes, aligner, templates)
        if top_k is not None:
            judged = judged[: int(top_k)]
        items = self.store.get_items([item for item, _, _ in judged])
        matches = []
        for item_id, (key, algorithm, distance, qregion, qvariant, sregion, svariant, qq, sq), \
                (kind, verified, words, facts) in judged:
            item = items[item_id]
            matches.append(Match(
                item_id=item_id, distance=distance, algorithm=algorithm, path=item.path,
                source=item.source, labels=list(item.labels), meta=dict(item.meta),
                sha256=item.sha256, query_region=qregion, query_variant=qvariant,
                stored_region=str(sregion), stored_variant=str(svariant), query_quality=qq,
                stored_quality=None if sq < 0 else sq, score=key[0], kind=kind,
                verified=verified, verdict=words, evidence=facts))
        return matches

    def _verify(self, ranked, boxes, aligner, templates: bool) -> list:
        """(item, evidence tuple, (kind, verified, verdict words, facts)) of what the
        decision keeps, best first: the VERIFY_CANDIDATES closest PDQ candidates that have
        stored pixels are verified, further ones with pixels are dropped unchecked; items
        without pixels keep the plain PDQ rule."""
        from . import verify

        pdq_items = [item for item, value in ranked if value[1] == "pdq"]
        wanted = [item for item in pdq_items if boxes.get(item)][:VERIFY_CANDIDATES]
        stored = self.store.get_verification(wanted) if aligner is not None and wanted else {}
        # The plain rule is for items without pixels (hash lists). A candidate with pixels
        # that was not among the verified few is unchecked, not a match: in a database of
        # many same-template cards, the siblings beyond the first few would otherwise all
        # pass as "whole-image hash matches".
        unchecked = set()
        if aligner is not None:
            unchecked = self.store.verifiable_items(
                [item for item, value in ranked if value[1] == "pdq" and item not in wanted
                 and _plain_pdq_match(value[3], value[5], value[2])])
        copies, leads, plain = [], [], []
        for item, value in ranked:
            key, algorithm, distance, qregion, qvariant, sregion = value[:6]
            if algorithm != "pdq":
                plain.append((item, value, ("copy", None, "similar hash (not verified)",
                                            {"rule": f"{algorithm} distance <= radius"})))
                continue
            if item in unchecked:
                continue
            blob = stored.get(item) if item in wanted else None
            if blob is None:  # no pixels stored (a hash-list entry)
                if _plain_pdq_match(qregion, sregion, distance):
                    plain.append((item, value, ("copy", None, verify.PLAIN_WORDS,
                                                {"rule": verify.PLAIN_RULE})))
                continue
            try:
                data = verify.decode(blob)
            except verify.VerificationDataError as exc:
                if _plain_pdq_match(qregion, sregion, distance):
                    plain.append((item, value, ("copy", None, verify.PLAIN_WORDS,
                                                {"rule": verify.PLAIN_RULE,
                                                 "unreadable_verification_data": str(exc)})))
                continue
            grey_index, box = boxes[item]
            verdict = verify.verify_pair(aligner.greys[grey_index], box, qvariant, data,
                                         str(sregion))
            if verdict.kind == "copy":
                copies.append((item, value, ("copy", True, verify.copy_words(
                    distance, qvariant, qregion, str(sregion), verdict.evidence),
                    verdict.evidence)))
            elif verdict.kind == "template" and templates:
                leads.append((item, value, ("template", False, verify.TEMPLATE_WORDS,
                                            verdict.evidence)))
        # Verified copies first, then plain-rule matches, then template leads; each by score.
        return copies + plain + leads

    # -- information ----------------------------------------------------------------------
    def stats(self) -> dict:
        stats = dict(self.store.stats())
        stats["path"] = self.path
        stats["in_memory"] = {
            f"{a}/{n}": {"fingerprints": len(s), "bytes": int(s.codes.nbytes)}
            for (a, n), s in self._shards.items()
        }
        return stats

    # -- hash-list export / clustering support --
    def fingerprint_rows(self, algorithm: str = "pdq", nbits: int | None = None):
        """Every live fingerprint of ``algorithm`` as parallel arrays (a ``store.Codes``:
        item_ids, codes, regions, variants, qualities), read from the store."""
        from .store import Codes

        stored = [n for a, n in self.store.algorithms() if a == algorithm]
        nbits = nbits or (DEFAULT_BITS[algorithm] if DEFAULT_BITS[algorithm] in stored
                          else (stored[0] if stored else DEFAULT_BITS[algorithm]))
        if nbits in stored:
            return self.store.load_codes(algorithm, nbits)
        return Codes(algorithm, nbits, self.store.last_change_seq(), np.empty(0, np.int64),
                     np.empty(0, np.int64), np.empty((0, nbits // 8), np.uint8),
                     np.empty(0, object), np.empty(0, object), np.empty(0, np.int16))

    def add_item_records(self, records, detail: dict | None = None) -> list:
        """Store ready-made ``store.ItemRecord``s (hash-list import) in one transaction:
        all or nothing. Returns the store's per-record outcomes ('added'/'duplicate')."""
        stored = self.store.add_items(records, action="import", detail=detail) if records else []
        self.sync()
        return stored


def query_fingerprints(image, algorithms: Sequence[str], exact: bool, dihedral: bool,
                       regions: bool = False, region_config: RegionConfig = DEFAULT_REGION_CONFIG):
    """The (Fingerprint, region, variant) needles to search for one query image, and the
    decoded image."""
    needles, decoded, _ = _query_needles(image, algorithms, exact, dihedral, regions,
                                         region_config)
    return needles, decoded


def _query_needles(image, algorithms: Sequence[str], exact: bool, dihedral: bool,
                   regions: bool = False, region_config: RegionConfig = DEFAULT_REGION_CONFIG):
    """(needles, decoded image, :class:`hashmatch.regions.Aligner` or None)."""
    needs = merge_needs([decode_needs(a, exact) for a in algorithms])
    decoded = decoding.decode(image, mode=needs.mode, draft_min_side=needs.draft_min_side)
    needles, aligner = [], None
    for algorithm in algorithms:
        if regions and algorithm == "pdq":
            from .regions import query_needles as region_needles

            full = [fp for fp, _ in _variants(decoded.image, algorithm, exact, True,
                                              decoded.full_size)]
            found, aligner = region_needles(decoded.image, full, config=region_config)
            # Without rotations the full frame is searched as is only; regions stay.
            needles.extend(found if dihedral else found[:1] + found[len(full):])
        else:
            needles.extend((fp, FULL_REGION, variant)
                           for fp, variant in _variants(decoded.image, algorithm, exact, dihedral,
                                                        decoded.full_size))
    if aligner is None and "pdq" in algorithms:
        # Whole images only: verification still needs the query's pixels.
        from .regions import Aligner, Region

        image = decoded.image
        aligner = Aligner.of(image, [Region(FULL_REGION, (0, 0, image.width, image.height),
                                            image)])
    return needles, decoded, aligner


def search_shard(shard, algorithm, needles, max_distance, min_quality, margin,
                 use_regions: bool, aligner=None, _pairs_only: bool = False, boxes=None,
                 needle_boxes=None, slack: int = 0,
                 region_config: RegionConfig = DEFAULT_REGION_CONFIG):
    """Matching items of one shard (the codes of one algorithm): item -> (sort key,
    evidence...). ``aligner`` (a :class:`hashmatch.regions.Aligner`, regions only): the
    closest items' pairs are aligned before the decision. ``boxes``: a dict filled with
    item -> the query box of its deciding pair on the aligner's grey copies (what
    verification compares); ``needle_boxes``: that box per needle where it is not the
    aligner's own box of the needle's region. ``slack``: pairs this far beyond the radius
    are collected too (alignment may bring them within it). ``region_config.align``: whether
    pairs are aligned. Module-level so benchmarks can time the
    search alone."""
    from . import regions as rg

    if max_distance is None:
        max_distance = rg.PDQ_MAX_DISTANCE if use_regions else DEFAULT_MAX_DISTANCE[algorithm]
    max_distance = max(0, min(int(max_distance), shard.nbits))
    if margin is None:
        margin = rg.PDQ_MARGIN if use_regions else 0
    if min_quality is None and use_regions:
        min_quality = rg.MIN_QUALITY
    # Runner-ups up to ``margin`` beyond the radius count against the best item.
    radius = min(shard.nbits, max_distance + max(0, margin, slack))
    needles = [n for n in needles
               if min_quality is None or n[0].quality is None or n[0].quality >= min_quality]
    if not needles:
        return None if _pairs_only else {}
    # One pass per stored role with every needle that may meet it (search_roles), each row
    # read once; the scan hands back the hit rows' distances to all those needles. In the
    # region-aware query, roles with a low-frequency prefilter (PREFILTER_THRESHOLD) are
    # scanned through it instead.
    codes = np.stack([fp.bits for fp, _, _ in needles])
    needle_roles = [rg.search_roles(region, variant) for _, region, variant in needles]
    # Tie order among needles: by role set, in order of first appearance (the whole picture
    # as it stands first, then rotations, then cut-out regions), then as given.
    first_seen = {}
    for roles in needle_roles:
        first_seen.setdefault(roles, len(first_seen))
    rank = np.argsort([first_seen[roles] for roles in needle_roles], kind="stable")
    rank_of = np.empty(len(needles), np.int64)
    rank_of[rank] = np.arange(len(needles))
    query_penalty = np.array([rg.region_penalty(region) if use_regions else 0
                              for _, region, _ in needles], np.int64)
    found = []  # per pass: (rows, needle, score, distance) of each hit row's best pair
    for role_number, role in enumerate(rg.ROLES):
        part = shard.codes.parts.get(role)
        members = np.array([k for k, roles in enumerate(needle_roles) if role in roles],
                           np.int64)
        if part is None or len(members) == 0:
            continue
        if use_regions and part.prefilter is not None and role in PREFILTER_THRESHOLD:
            ids, distances = part.prefiltered_hits(codes[members], radius,
                                                   PREFILTER_THRESHOLD[role],
                                                   PREFILTER_KEY_RADIUS[role])
        else:
            ids, distances = part.range_search_hits(codes[members],
                                                    np.full(len(members), radius, np.int64))
        if len(ids) == 0:
            continue
        rows = shard.rows_of(ids)
        ok = _quality_ok(shard, rows, min_quality)
        rows, distances = rows[ok], distances[ok]
        found.append(_best_pairs(shard, rows, members, distances, radius, query_penalty,
                                 rank_of, role_number, use_regions))
    if not found:
        return None if _pairs_only else {}
    rows, needle, score, distance, order_key = (np.concatenate(column) for column in zip(*found))
    if _pairs_only:  # each hit row's best pair, for the search of aligned boxes below
        return rows, needle, score, distance, order_key
    if len(rows) == 0:
        return {}
    items = shard.item_ids[rows]
    # Best row per item: lowest score, then needle order, then role, then row.
    order = np.lexsort((order_key, score, items))
    first = order[np.r_[True, items[order][1:] != items[order][:-1]]]
    aligned = None  # which pairs had their query box moved onto the stored picture
    pair_boxes: dict[int, tuple] = {}  # pair -> its aligned query box
    needle_boxes = dict(needle_boxes or {})
    if aligner is not None and use_regions and region_config.align:
        score, distance, aligned, moved = _align_contenders(
            shard, aligner, needles, rows, needle, score, distance, items, first, pair_boxes)
        changed = bool(aligned.any())
        if moved:
            # Boxes aligned onto the closest items, searched again: a box aligned onto a
            # template sibling is the copy's true box and meets the copy's own source.
            more = [(aligner.fingerprint(region, box, variant),
                     str(RegionName.parse(region).with_aligned()), variant)
                    for region, variant, box in moved]
            pairs = search_shard(shard, algorithm, more, radius, min_quality, 0, use_regions,
                                 _pairs_only=True)
            if pairs is not None and len(pairs[0]):
                for k, (region, _, box) in enumerate(moved):
                    needle_boxes[len(needles) + k] = (aligner.boxes[region][0], box)
                shift = np.int64(len(needles) * 4) << np.int64(40)  # after every first needle
                needle = np.concatenate([needle, pairs[1] + len(needles)])
                needles = list(needles) + more
                rows = np.concatenate([rows, pairs[0]])
                score = np.concatenate([score, pairs[2]])
                distance = np.concatenate([distance, pairs[3]])
                order_key = np.concatenate([order_key, pairs[4] + shift])
                aligned = np.concatenate([aligned, np.ones(len(pairs[0]), bool)])
                items = shard.item_ids[rows]
                changed = True
        if changed:
            order = np.lexsort((order_key, score, items))
            first = order[np.r_[True, items[order][1:] != items[order][:-1]]]
    item_scores = score[first]
    groups = None
    if margin > 0 and len(first) > 1:
        # Near-duplicate pictures stored twice (a photo and its re-encode) are one picture
        # for the margin test: group items whose full frames are that close. Only items
        # within the margin of the best can change the test's outcome.
        contenders = np.nonzero(item_scores < item_scores.min() + margin)[0]
        groups = np.arange(len(first))
        if len(contenders) > 1:
            full_rows = shard.full_rows_of(items[first[contenders]], rows[first[contenders]])
            stored = shard.codes_of(full_rows)
            if stored is not None:
                labels = _duplicate_groups(stored)
                groups[contenders] = contenders[labels]
        groups = groups[None, :]
    keep = rg.select_matches(item_scores[None, :], max_distance, margin, groups=groups)[0] \
        if margin > 0 else item_scores <= max_distance
    out = {}
    for j in first[keep]:
        fp, qregion, qvariant = needles[needle[j]]
        if boxes is not None:
            boxes[int(items[j])] = pair_boxes.get(int(j)) or needle_boxes.get(int(needle[j])) \
                or (aligner.boxes.get(qregion) if aligner is not None else None)
        if aligned is not None and aligned[j]:  # its box was moved onto the stored picture
            qregion = str(RegionName.parse(qregion).with_aligned())
        row = rows[j]
        out[int(items[j])] = ((int(score[j]), algorithm != "pdq"), algorithm, int(distance[j]),
                              qregion, qvariant, shard.names[shard.region_codes[row]],
                              shard.names[shard.variant_codes[row]], fp.quality,
                              int(shard.qualities[row]))
    return out


def _align_contenders(shard, aligner, needles, rows, needle, score, distance, items, first,
                      pair_boxes=None):
    """The pairs of the closest items aligned (:meth:`hashmatch.regions.Aligner.align`):
    (scores, distances, which pairs were aligned, the moved boxes worth searching again as
    (region, variant, box)). Nothing is aligned when a pair is certain already. Each close
    item's ALIGN_ROWS best rows are aligned: a copy cropped on two sides fits inside one
    stored window and not in the one its unaligned frame is closest to. ``first``: each
    item's best row."""
    from . import regions as rg

    item_scores = score[first]
    aligned = np.zeros(len(score), bool)
    if len(first) == 0 or int(item_scores.min()) <= rg.PDQ_CERTAIN:
        return score, distance, aligned, []
    best = int(item_scores.min())
    closest = first[np.argsort(item_scores, kind="stable")]
    closest = closest[score[closest] <= best + rg.ALIGN_WINDOW][: rg.ALIGN_CONTENDERS]
    score, distance = score.copy(), distance.copy()
    aligned_boxes = []
    for item in items[closest]:
        mine = np.nonzero(items == item)[0]
        for j in mine[np.argsort(score[mine], kind="stable")][: rg.ALIGN_ROWS]:
            _, region, variant = needles[needle[j]]
            if not aligner.can_align(region, variant):
                continue
            aligned_distance, box = aligner.align(region, variant,
                                                  shard.codes_of(rows[j:j + 1])[0])
            if aligned_distance < distance[j]:
                score[j] -= distance[j] - aligned_distance
                distance[j] = aligned_distance
                aligned[j] = True
                if pair_boxes is not None:
                    pair_boxes[int(j)] = (aligner.boxes[region][0], box)
                if box != aligner.boxes[region][1]:
                    aligned_boxes.append((int(score[j]), region, variant, box))
    moved = []
    for _, region, variant, box in sorted(aligned_boxes, key=lambda entry: entry[0]):
        source = aligner.boxes[region][0]
        if len(moved) < rg.ALIGN_RESEARCH and all(
                aligner.boxes[other_region][0] != source or rg.iou(box, other) < rg.DEDUP_IOU
                for other_region, _, other in moved):
            moved.append((region, variant, box))
    return score, distance, aligned, moved


def _plain_pdq_match(query_region: str, stored_region, distance: int) -> bool:
    """PDQ's own rule, for items the verifier cannot check: whole image against whole image
    (any rotation or flip), within PDQ's usual 31 bits."""
    return query_region == FULL_REGION and str(stored_region) == FULL_REGION and \
        distance <= DEFAULT_MAX_DISTANCE["pdq"]


def _quality_ok(shard, rows: np.ndarray, min_quality) -> np.ndarray:
    """Which rows take part in matching (stored quality unknown or >= min_quality)."""
    if min_quality is None or len(rows) == 0:
        return np.ones(len(rows), bool)
    quality = shard.qualities[rows]
    return (quality < 0) | (quality >= min_quality)


def _best_pairs(shard, rows, members, distances, radius, query_penalty, rank_of, role_number,
                use_regions):
    """Each hit row's best pair among the needles ``members`` (that may meet the row's
    role; ``distances``: rows x members): (rows, needle, score, distance, tie order) of the
    rows that have a pair within ``radius``. Score = distance + the larger region penalty
    of the two sides."""
    stored_penalty = shard.penalties_of(rows) if use_regions else np.zeros(len(rows), np.int64)
    scores = distances + np.maximum(stored_penalty[:, None], query_penalty[members][None, :])
    # lowest score, then the needle first in tie order
    ranks = rank_of[members]
    keys = np.where(distances <= radius, scores * 1024 + ranks[None, :], _NO_PAIR)
    k = np.argmin(keys, axis=1) if len(rows) else np.zeros(0, np.int64)
    at = np.arange(len(rows))
    ok = keys[at, k] != _NO_PAIR
    rows, k, at = rows[ok], k[ok], at[ok]
    order_key = (ranks[k] * 4 + role_number) * (1 << 40) + rows
    return rows, members[k], scores[at, k], distances[at, k].astype(np.int64), order_key


_NO_PAIR = np.iinfo(np.int64).max


def _duplicate_groups(codes: np.ndarray) -> np.ndarray:
    """Group label per row: rows within regions.DUPLICATE_DISTANCE (transitively) share one.
    A query has a handful of contenders: their distance matrix and a min-label propagation
    (label = the group's first row) cost microseconds, the general clustering ~1 ms."""
    from .cluster import component_labels
    from .regions import DUPLICATE_DISTANCE

    if len(codes) > 64:
        return component_labels(codes, np.arange(len(codes)), DUPLICATE_DISTANCE, threads=1)
    from ._hamming import distance_matrix

    near = distance_matrix(codes, codes, threads=1) <= DUPLICATE_DISTANCE
    labels = np.arange(len(codes))
    while True:
        spread = np.where(near, labels[None, :], len(codes)).min(axis=1)
        if (spread == labels).all():
            return labels
        labels = spread


def _variants(image: Image.Image, algorithm: str, exact: bool, dihedral: bool,
              full_size: tuple[int, int] | None = None):
    from .hashers import compute

    if not dihedral:
        return [(compute(image, algorithm, exact=exact, full_size=full_size), "original")]
    if algorithm == "pdq":
        from .hashers.pdq import pdq_hash_image

        # One DCT gives all eight, as in the reference implementation.
        return list(zip(pdq_hash_image(image, exact=exact, dihedral=True, full_size=full_size),
                        DIHEDRAL_VARIANTS))
    return [(compute(image if op is None else image.transpose(op), algorithm, exact=exact), name)
            for name, op in PIL_TRANSPOSE.items()]


@dataclass(frozen=True)
class _QueryFingerprintJob:
    algorithms: tuple
    exact: bool
    dihedral: bool
    regions: bool = False
    region_config: RegionConfig = DEFAULT_REGION_CONFIG

    def __call__(self, source):
        name = decoding.describe(source)
        try:
            needles, decoded, aligner = _query_needles(source, self.algorithms, self.exact,
                                                       self.dihedral, self.regions,
                                                       self.region_config)
            return name, needles, decoded.sha256, aligner, None
        except ImageError as exc:
            return name, [], None, None, exc.reason + (f" ({exc.detail})" if exc.detail else "")


def _pdq_quality(fingerprints) -> int | None:
    for fp in fingerprints:
        if fp.algorithm == "pdq":
            return fp.quality
    return None


def _as_fingerprints(hashes, algorithm: str, qualities) -> list[Fingerprint]:
    check_algorithm(algorithm)
    if isinstance(hashes, (str, Fingerprint)):
        hashes = [hashes]
    if isinstance(hashes, np.ndarray):
        arr = np.atleast_2d(np.asarray(hashes, np.uint8))
        if arr.shape[1] * 8 != DEFAULT_BITS[algorithm] and algorithm == "pdq":
            raise HashFormatError(f"pdq codes must be 32 bytes each, got {arr.shape[1]}")
        hashes = [Fingerprint(algorithm, row) for row in arr]
    out = []
    qualities = list(qualities) if qualities is not None else [None] * len(hashes)
    for value, quality in zip(hashes, qualities):
        if isinstance(value, Fingerprint):
            if value.algorithm != algorithm:
                raise HashFormatError(f"got a {value.algorithm} fingerprint, expected {algorithm}")
            out.append(value if quality is None else Fingerprint(algorithm, value.bits, quality))
        else:
            out.append(Fingerprint.from_hex(str(value), algorithm, quality))
    return out


__all__ = ["AddOutcome", "AddReport", "Index", "Match", "QueryResult", "DEFAULT_MAX_DISTANCE",
           "HashmatchError"]
