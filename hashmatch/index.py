"""The Index: a persistent store of known images' fingerprints with exact in-memory search.

``Index`` joins the stages: files are fingerprinted (:mod:`hashmatch.hashing`, in worker
processes), written to the store (:mod:`hashmatch.store`, committed in batches) and added to
the in-memory code index (:mod:`hashmatch.shard`, one per algorithm and bit length).
Queries expand the query into its needles (:mod:`hashmatch.needles`: PDQ's 8
rotations/flips from one DCT, regions), search every stored fingerprint within the radius
and decide per item (:mod:`hashmatch.search`; hashes without images:
:mod:`hashmatch.hashsearch`), with the thresholds of :mod:`hashmatch.policy`. Searches are
exact, except in the region-aware PDQ query, where crop-window and region rows pass a 64-bit
low-frequency prefilter first (shard.PREFILTER_THRESHOLD; full frames stay exact).
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterable, Sequence

import numpy as np

from . import search as searching
from .errors import HashFormatError, HashmatchError
from .fingerprint import DEFAULT_BITS
from .hashers import check_algorithm
from .hashing import FileFingerprints, iter_hash_files
from .regions import DEFAULT_REGION_CONFIG, RegionConfig
from .hashsearch import code_hits, query_codes
from .needles import (DIHEDRAL_VARIANTS, QueryFingerprintJob, as_fingerprints, pdq_quality,
                      query_fingerprints, query_needles)
from .policy import MATCH_POLICY
from .results import AddOutcome, AddReport, Match, QueryResult
from .shard import FULL_REGION, Shard
from .store import is_database_url, open_store

# Aliases of the policy's values, for the code and scripts that import them from here.
DEFAULT_MAX_DISTANCE = dict(MATCH_POLICY.max_distances)
VERIFY_CANDIDATES = MATCH_POLICY.verify_candidates
BATCH_SIZE = 64  # files per store transaction: what add_files reports committed is durable


def default_db_path() -> str:
    """$HASHMATCH_DB, else hashmatch.hmdb in the working directory."""
    return os.environ.get("HASHMATCH_DB") or os.path.join(os.getcwd(), "hashmatch.hmdb")


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
        self._shards: dict[tuple[str, int], Shard] = {}
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

    def _shard(self, algorithm: str, nbits: int) -> Shard:
        key = (algorithm, nbits)
        if key not in self._shards:
            self._shards[key] = Shard(algorithm, nbits)
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
            quality = pdq_quality(result.fingerprints)
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
                                     quality=pdq_quality(result.fingerprints))
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

        fingerprints = as_fingerprints(hashes, algorithm, None)
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
        MatchPolicy.region_max_distance; 31 without) is a candidate, and the closest
        (MatchPolicy.verify_candidates) are **verified** on the stored item's own pixels
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
        use_regions = self.uses_regions(regions)
        fingerprints, _, aligner = query_needles(image, self._query_algorithms(), exact,
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
        use_regions = self.uses_regions(regions)
        job = QueryFingerprintJob(self._query_algorithms(), exact, dihedral, use_regions,
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

        PDQ: no pixels to verify, so PDQ's own rule decides (as the verification stage
        does for items without pixels): an item matches when its best pair over its stored
        rows (full frames, regions, crop windows) is whole image against whole image within
        31 bits; Match.verified is None. ``dihedral=True`` (PDQ only) also searches
        each hash's 8 rotations/flips derived from its bits
        (:func:`hashmatch.hashers.pdq.dihedral_from_hash`: a few bits from what the turned
        image would hash to, so use the usual radius or slightly more), against stored full
        frames. A thin layer over the array search (:func:`hashmatch.hashsearch.code_hits`,
        as :meth:`search_codes`): one search for the whole batch, then one metadata look-up
        for the items that were hit.
        """
        if (algorithm == "pdq" and isinstance(hashes, np.ndarray) and hashes.ndim == 2
                and hashes.dtype == np.uint8 and hashes.shape[1] == 32):
            # packed PDQ codes (the hash-list hot path): no Fingerprint object per hash
            self._maybe_sync()
            return query_codes(self._shards, self.store, np.ascontiguousarray(hashes),
                               [None] * len(hashes), algorithm, max_distance, top_k, dihedral)
        fingerprints = as_fingerprints(hashes, algorithm, None)
        self._maybe_sync()  # once: the whole batch is answered from one state of the store
        out = [[] for _ in fingerprints]
        for length in sorted({fp.nbits for fp in fingerprints}):  # one batch per length
            at = [k for k, fp in enumerate(fingerprints) if fp.nbits == length]
            found = query_codes(self._shards, self.store,
                                np.stack([fingerprints[k].bits for k in at]),
                                [fingerprints[k].quality for k in at], algorithm,
                                max_distance, top_k, dihedral)
            for k, matches in zip(at, found):
                out[k] = matches
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
        lims, item_ids, distances, _, _ = code_hits(self._shards.get((algorithm, nbits)), codes,
                                                    radius, roles=("full",))
        return lims, item_ids, distances

    def _query_algorithms(self) -> tuple[str, ...]:
        stored = {a for a, _ in self._shards}
        return tuple(a for a in self.algorithms if a in stored) or self.algorithms

    def default_max_distance(self, algorithm: str, regions: bool | None = None) -> int:
        """What ``max_distance=None`` means for ``algorithm`` in a query."""
        return MATCH_POLICY.default_max_distance(algorithm, self.uses_regions(regions))

    def uses_regions(self, regions: bool | None = None) -> bool:
        """Whether a query given ``regions`` (None: this index's setting) searches the region
        fingerprints; they are PDQ only, so never when PDQ is not queried."""
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
        """The query's stages on this index's shards and store (:func:`hashmatch.search.
        search`): candidates, verification on the stored pixels (``aligner`` carries the
        query's pixels), the decision."""
        use_regions = self.uses_regions() if use_regions is None else use_regions
        return searching.search(self._shards, self.store, fingerprints, max_distance, top_k,
                                min_quality, margin, use_regions, aligner, templates,
                                self.region_config)

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


__all__ = ["AddOutcome", "AddReport", "Index", "Match", "QueryResult", "DEFAULT_MAX_DISTANCE",
           "DIHEDRAL_VARIANTS", "FULL_REGION", "HashmatchError", "query_fingerprints"]
