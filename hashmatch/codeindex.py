"""In-memory exact index over packed binary codes (one bit length, int64 external ids).

Layout: a log-structured set of *segments*. New codes go to a small append buffer that is
scanned linearly; a full buffer is sealed into a segment (rows sorted by id, so removal is a
binary search), and similar-sized segments are merged, so adds never trigger a full rebuild
and each code is re-indexed O(log N) times overall. Removal marks a tombstone; a segment with
too many tombstones is compacted.

Search is exact by default. Each segment is searched with whichever exact method the cost
model says is cheaper for this call's radius and needle count:
- the Cython linear scan (``hashmatch._hamming``), best for small segments or large radii;
- multi-index hashing (MIH, built for segments of at least ``MIH_MIN_ROWS``): pigeonhole
  probing of per-substring tables, candidates verified with the Cython kernel.
Approximate FAISS search is opt-in (``approximate="ivf"``) and reports no exactness.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os

import numpy as np

from . import _hamming
from .parallel import default_workers

# Cost model, measured with benchmarks/bench_index.py on a 2-core AMD EPYC VM (1 thread):
# a random memory access (bucket probe or candidate verification) costs ~40 ns there, a
# streamed PDQ row ~1.2 ns; an extra needle adds ~0.2 ns per row to the scan (AVX-512).
# The MIH kernel's probe planner (several needles) uses the same probe/candidate costs.
NS_PER_PROBE = _hamming.MIH_NS_PER_PROBE
NS_PER_CANDIDATE = _hamming.MIH_NS_PER_CANDIDATE
NS_PER_SCANNED_WORD = 0.3
NS_PER_EXTRA_NEEDLE_WORD = 0.06

MIH_MIN_ROWS = 200_000       # smaller segments are scanned (< 0.2 ms, as fast as MIH here)
MIH_MAX_WIDTH = 24           # direct-addressed tables: 2**24 uint32 offsets = 64 MiB each
MIH_TABLE_BYTES_PER_CODE = 84  # keeps the whole index <= 128 B per PDQ code
# Below this many (needle x stored code) comparisons a call runs on one thread: the work
# takes under a millisecond, and waking an OpenMP team costs more than it saves -- tens of
# milliseconds when the other cores are busy (measured: 45 ms vs 1.8 ms for 8 needles x 50k
# codes on 2 loaded cores).
PARALLEL_MIN_WORK = 4_000_000
MIH_PARALLEL_MIN_QUERIES = 16
BUFFER_ROWS = 65_536         # append buffer size before sealing into a segment
COMPACT_DEAD_FRACTION = 0.25

METHODS = ("auto", "scan", "mih")

# -- sealed segments mapped from files (one copy per machine) --------------------------------
# While a ``segment_files(folder)`` block is active (Index._load wraps the initial load in
# one), every segment of at least MIH_MIN_ROWS rows sealed without a prefilter is looked up in
# ``folder`` by the SHA-256 of its content (bit length, design radius, ids and codes): a
# verified file (hashmatch.store.cache format: checksums, regular files only) is mapped
# read-only and its codes, ids and MIH tables are used as they are; otherwise the tables are
# built, written there (atomically) and mapped back. Processes that load the same store map
# the same files and share one page-cache copy; what each keeps privately is its tombstone
# mask (1 byte a row) and whatever it appends later (the append buffer and small segments:
# the per-process delta). Files the latest load did not use are removed (a process that still
# maps one keeps its inode alive; POSIX unlink semantics).
_segment_folder = None
SEGMENT_FILE_SUFFIX = ".seg"


class segment_files:
    """Context manager: segments sealed inside it are mapped from / saved to ``folder``
    (None: a no-op)."""

    def __init__(self, folder):
        self.folder = None if folder is None else str(folder)
        self.used: set[str] = set()

    def __enter__(self):
        global _segment_folder
        self._outer = _segment_folder
        _segment_folder = self if self.folder is not None else self._outer
        return self

    def __exit__(self, *exc):
        global _segment_folder
        _segment_folder = self._outer
        if self.folder is None or exc[0] is not None or not self.used:
            return
        for name in _listdir(self.folder):
            path = os.path.join(self.folder, name)
            if name.endswith(SEGMENT_FILE_SUFFIX) and path not in self.used:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _listdir(folder):
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _segment_key(nbits, design_radius, codes, ids) -> str:
    h = hashlib.sha256(f"hashmatch-segment-1/{nbits}/{design_radius}/{len(ids)}/".encode())
    h.update(memoryview(np.ascontiguousarray(ids)).cast("B"))
    h.update(memoryview(np.ascontiguousarray(codes)).cast("B"))
    return h.hexdigest()


def _map_segment_file(files: "segment_files", seg: "_Segment", nbits: int,
                      design_radius: int, threads, force: bool) -> None:
    """Give ``seg`` (codes and ids set) its MIH tables from a segment file, building and
    saving one if none is usable; its codes and ids become the file's mapped arrays."""
    from .store.cache import CacheInvalid, read_cache, save_cache

    key = _segment_key(nbits, design_radius, seg.codes, seg.ids)
    path = os.path.join(files.folder, key + SEGMENT_FILE_SUFFIX)
    # the "store uuid" of a segment file is its content key: a file is only ever taken for
    # the content it was written from
    try:
        _, arrays, info = read_cache(path, key)
    except CacheInvalid:
        seg.build_mih(nbits, design_radius, threads, force)
        arrays = {"codes": seg.codes, "ids": seg.ids}
        info = {"mih": None}
        if seg.mih is not None:
            starts, widths, offsets, rows, split = seg.mih
            arrays.update(starts=np.asarray(starts, np.int32),
                          widths=np.asarray(widths, np.int32),
                          offsets=np.asarray(offsets).view(np.int32),
                          rows=np.asarray(rows).view(np.int32))
            info = {"mih": {"split": int(split)}}
        try:
            os.makedirs(files.folder, exist_ok=True)
            save_cache(path, key, 0, arrays, info)
            _, arrays, info = read_cache(path, key)
        except (OSError, CacheInvalid):
            return  # the tables built in memory stay in use
    try:
        codes, ids = arrays["codes"], arrays["ids"]
        if codes.shape != seg.codes.shape or not np.array_equal(ids, seg.ids):
            return
        mih = None
        if info.get("mih") is not None:
            mih = (arrays["starts"], arrays["widths"], arrays["offsets"].view(np.uint32),
                   arrays["rows"].view(np.uint32), int(info["mih"]["split"]))
            if mih[3].ndim != 2 or mih[3].shape != (len(mih[0]), len(ids)):
                return
    except (KeyError, TypeError, ValueError):
        return
    seg.codes, seg.ids, seg.mih, seg.path_of = codes, ids, mih, {}
    files.used.add(path)


def _probe_count(width: int, radius: int) -> int:
    return sum(math.comb(width, i) for i in range(radius + 1)) if radius >= 0 else 0


def mih_cost(n: int, widths, radius: int, needles: int = 1) -> tuple[float, int]:
    """Estimated (ns, probes) of an MIH search on n uniformly spread codes."""
    nsub = len(widths)
    s, a = divmod(radius, nsub)
    probes = 0
    candidates = 0.0
    for t, w in enumerate(widths):
        count = _probe_count(int(w), s if t <= a else s - 1)
        probes += count
        candidates += n * count / 2.0 ** int(w)
    return needles * (probes * NS_PER_PROBE + candidates * NS_PER_CANDIDATE), probes


def scan_cost(n: int, nwords: int, needles: int = 1) -> float:
    return n * nwords * (NS_PER_SCANNED_WORD + (needles - 1) * NS_PER_EXTRA_NEEDLE_WORD)


def mih_table_bytes(n: int, widths) -> int:
    return sum(4 * ((1 << int(w)) + 1) + 4 * n for w in widths)


def choose_mih_substrings(n: int, nbits: int, design_radius: int, force: bool = False):
    """Number of MIH substrings of the plain (unsplit) layout chosen by choose_mih_layout;
    None when no table fits."""
    choice = choose_mih_layout(n, nbits, design_radius, force, allow_split=False)
    return None if choice is None else choice[0]


def choose_mih_layout(n: int, nbits: int, design_radius: int, force: bool = False,
                      allow_split: bool = True):
    """(number of MIH substrings, split_parity) with the lowest estimated single-needle cost
    at design_radius among layouts whose tables fit the memory budget; None when none fits
    (the segment is then scanned). 256-bit codes also try the parity-split layouts
    (_hamming.pdq_parity_split) and the mixed parity layouts (_hamming.pdq_parity_mix: the
    plain widths), preferred on equal cost in that order: there the 8 dihedral needles of a
    PDQ query share most probes. force (method="mih"): a few MiB are always allowed, so small
    test indexes get tables."""
    budget = MIH_TABLE_BYTES_PER_CODE * n + (4 << 20 if force else 0)
    best, best_cost = None, math.inf
    for nsub in range(max(1, -(-nbits // MIH_MAX_WIDTH)), nbits // 4 + 1):
        for split in ((True, _hamming.SPLIT_MIXED, False)
                      if allow_split and nbits == 256 and nsub >= 4 else (False,)):
            try:
                _, widths = _hamming.mih_layout(nbits, nsub, split)
            except ValueError:  # no mixed layout of nsub tables
                continue
            if widths.max() > MIH_MAX_WIDTH or mih_table_bytes(n, widths) > budget:
                continue
            cost, _ = mih_cost(n, widths, design_radius)
            if cost < best_cost:
                best, best_cost = (nsub, split), cost
    if best is None and force:
        best = (-(-nbits // 16), allow_split and nbits == 256)  # 16-bit tables: 256 KiB of offsets each
    return best


def auto_threads(work: int) -> int:
    """Threads for a call doing ``work`` comparisons: 1 for small work, else every core."""
    return 1 if work < PARALLEL_MIN_WORK else default_workers()


class _Segment:
    """Sealed rows: codes sorted by external id, tombstones, optional MIH tables."""

    __slots__ = ("codes", "ids", "live", "n_dead", "mih", "buckets", "path_of")

    def __init__(self, codes: np.ndarray, ids: np.ndarray):
        if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
            order = np.argsort(ids, kind="stable")
            codes, ids = codes[order], ids[order]
        self.codes = np.ascontiguousarray(codes)
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.live = np.ones(len(ids), dtype=bool)
        self.n_dead = 0
        self.mih = None  # (starts, widths, offsets, rows, split_parity)
        self.buckets = None  # (offsets, rows, coarse codes): see BucketPrefilter
        self.path_of = {}  # (radius, needles) -> MIH cheaper than a scan (cost model, cached)

    def __len__(self):
        return len(self.ids)

    def build_mih(self, nbits: int, design_radius: int, threads, force: bool) -> None:
        choice = choose_mih_layout(len(self), nbits, design_radius, force)
        if choice is None:
            return
        nsub, split = choice
        starts, widths = _hamming.mih_layout(nbits, nsub, split)
        offsets, rows = _hamming.mih_build(self.codes, starts, widths, threads=threads,
                                           split_parity=split)
        self.mih = (starts, widths, offsets, rows, split)
        self.path_of = {}

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Positions of the given ids that are present and live here."""
        pos = np.searchsorted(self.ids, ids)
        inside = pos < len(self.ids)
        pos = pos[inside]
        pos = pos[self.ids[pos] == ids[inside]]
        return pos[self.live[pos]]

    def nbytes(self) -> int:
        total = self.codes.nbytes + self.ids.nbytes + self.live.nbytes
        if self.mih is not None:
            total += self.mih[2].nbytes + self.mih[3].nbytes
        if self.buckets is not None:
            total += sum(part.nbytes for part in self.buckets)
        return total


class BucketPrefilter:
    """A coarse 64-bit code kept beside every stored code, for a two-stage search
    (:meth:`CodeIndex.prefiltered_hits`): a stored code is compared in full only when its
    coarse code is close to the needle's. Each sealed segment keeps its coarse codes sorted
    into buckets by a short key (a few of the coarsest bits), so a search reads only the
    buckets within a few key bits of each needle instead of every row.

    ``coarse_of``: (n, nbytes) uint8 codes -> (n, 8) uint8 coarse codes; ``keys_of``:
    (n, 8) coarse codes -> (n,) integer keys below ``2 ** key_bits`` (key_bits <= 16). For
    PDQ: ``hashers.pdq.low_frequency_codes`` and ``low_frequency_keys``."""

    def __init__(self, coarse_of, keys_of, key_bits: int):
        if not 1 <= key_bits <= 16:
            raise ValueError(f"key_bits must be in 1..16, got {key_bits}")
        self.coarse_of, self.keys_of, self.key_bits = coarse_of, keys_of, key_bits

    def buckets(self, codes: np.ndarray):
        """(offsets (2**key_bits + 1,), rows sorted by key, their coarse codes) of a
        segment's codes."""
        coarse = self.coarse_of(codes)
        keys = np.asarray(self.keys_of(coarse)).astype(np.uint16)
        rows = np.argsort(keys, kind="stable")  # a radix sort for 16-bit keys
        counts = np.bincount(keys, minlength=1 << self.key_bits)
        offsets = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        rows = rows.astype(np.int32 if len(rows) < 2**31 else np.int64)
        return offsets, rows, np.take(coarse, rows, axis=0)

    def key_masks(self, key_radius: int) -> np.ndarray:
        return _key_masks(self.key_bits, key_radius)


@functools.lru_cache(maxsize=64)
def _key_masks(key_bits: int, key_radius: int) -> np.ndarray:
    """Every key_bits-bit mask of at most key_radius ones (the buckets within that radius
    of a key are key ^ mask)."""
    masks = np.arange(1 << key_bits, dtype=np.int64)
    masks = masks[np.bitwise_count(masks) <= key_radius]
    masks.flags.writeable = False
    return masks


class CodeIndex:
    """Exact Hamming range / top-k search over codes of one bit length.

    >>> idx = CodeIndex(256)
    >>> idx.add(codes, ids)                 # codes: uint8 (n, 32); ids: int64 (n,), unique
    >>> offsets, ids, dist = idx.range_search(queries, radius=31)
    >>> offsets, ids, dist, variant = idx.range_search_multi(dihedral_needles, radius=31)

    method: "auto" (cost model per segment and call), "scan" or "mih" (force a path; "mih"
    also seals every add immediately so that all codes live in MIH tables).
    approximate: None (exact) or "ivf" (FAISS IndexBinaryIVF, opt-in, recall < 1: see
    benchmarks/RESULTS.md); nprobe applies to it.
    prefilter: a :class:`BucketPrefilter` (exact index only): sealed segments also keep
    bucketed coarse codes, for :meth:`prefiltered_hits`.
    """

    def __init__(self, nbits: int, *, method: str = "auto", approximate: str | None = None,
                 nprobe: int = 16, design_radius: int | None = None, threads: int | None = None,
                 prefilter: BucketPrefilter | None = None):
        if nbits <= 0 or nbits % 64:
            raise ValueError(f"nbits must be a positive multiple of 64, got {nbits}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if approximate not in (None, "ivf"):
            raise ValueError(f"approximate must be None or 'ivf', got {approximate!r}")
        self.nbits = nbits
        self.nbytes_per_code = nbits // 8
        self.method = method
        self.threads = threads
        # the radius the MIH tables are shaped for (PDQ's usual 31 at 256 bits)
        self.design_radius = design_radius if design_radius is not None else nbits * 31 // 256
        self._segments: list[_Segment] = []
        self._buffer_rows = 0 if method == "mih" else BUFFER_ROWS
        self._buf_codes = np.empty((0, self.nbytes_per_code), dtype=np.uint8)
        self._buf_ids = np.empty(0, dtype=np.int64)
        self._buf_live = np.empty(0, dtype=bool)
        self._buf_n = 0
        self._approx = _FaissIVF(nbits, nprobe) if approximate == "ivf" else None
        if prefilter is not None and approximate is not None:
            raise ValueError("a prefilter needs the exact index (approximate=None)")
        self.prefilter = prefilter

    # -- size --------------------------------------------------------------------------------
    def __len__(self) -> int:
        if self._approx is not None:
            return len(self._approx)
        return (sum(len(s) - s.n_dead for s in self._segments)
                + int(self._buf_live[:self._buf_n].sum()))

    @property
    def nbytes(self) -> int:
        """Resident bytes of the index's arrays."""
        if self._approx is not None:
            return self._approx.nbytes()
        return (sum(s.nbytes() for s in self._segments) + self._buf_codes.nbytes
                + self._buf_ids.nbytes + self._buf_live.nbytes)

    # -- updates -----------------------------------------------------------------------------
    def add(self, codes, ids) -> None:
        """Add codes with their external ids (unique, not already present)."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if codes.ndim != 2 or codes.shape[1] != self.nbytes_per_code:
            raise ValueError(f"codes must have shape (n, {self.nbytes_per_code}), "
                             f"got {codes.shape}")
        if len(ids) != len(codes):
            raise ValueError(f"{len(codes)} codes but {len(ids)} ids")
        if len(ids) == 0:
            return
        if not _all_unique(ids):
            raise ValueError("ids must be unique")
        if self._approx is not None:
            self._approx.add(codes, ids)
            return
        present = self._present(ids)
        if present.size:
            raise ValueError(f"ids already in the index: {present[:5].tolist()}")
        if self._buf_n == 0 and len(ids) >= self._buffer_rows:
            self._seal(codes, ids)
            return
        self._append_to_buffer(codes, ids)
        if self._buf_n >= max(self._buffer_rows, 1):
            self._flush_buffer()

    def remove(self, ids) -> int:
        """Remove ids (unknown ids are ignored). Returns how many were removed."""
        ids = _sorted_unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        if self._approx is not None:
            return self._approx.remove(ids)
        removed = 0
        for seg in self._segments:
            rows = seg.rows_of(ids)
            seg.live[rows] = False
            seg.n_dead += len(rows)
            removed += len(rows)
        n = self._buf_n
        hit = np.isin(self._buf_ids[:n], ids) & self._buf_live[:n]
        self._buf_live[:n][hit] = False
        removed += int(hit.sum())
        self._compact()
        return removed

    def _present(self, ids: np.ndarray) -> np.ndarray:
        found = [seg.ids[seg.rows_of(ids)] for seg in self._segments]
        n = self._buf_n
        found.append(self._buf_ids[:n][self._buf_live[:n] & np.isin(self._buf_ids[:n], ids)])
        return np.concatenate(found)

    def codes_of(self, ids) -> np.ndarray | None:
        """The stored codes of live ``ids``, in the order given (None with an approximate
        backend, which does not keep them). Unknown or removed ids raise KeyError."""
        if self._approx is not None:
            return None
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.zeros((len(ids), self.nbytes_per_code), np.uint8)
        found = np.zeros(len(ids), bool)
        for seg in self._segments:
            pos = np.minimum(np.searchsorted(seg.ids, ids), len(seg.ids) - 1)
            hit = (seg.ids[pos] == ids) & seg.live[pos] if len(seg.ids) else found & False
            out[hit], found = seg.codes[pos[hit]], found | hit
        n = self._buf_n
        if n and not found.all():
            # The write buffer is in arrival order: sort its ids once for this call.
            missing = np.nonzero(~found)[0]
            order = np.argsort(self._buf_ids[:n], kind="stable")
            sorted_ids = self._buf_ids[:n][order]
            pos = np.minimum(np.searchsorted(sorted_ids, ids[missing]), n - 1)
            rows = order[pos]
            hit = (sorted_ids[pos] == ids[missing]) & self._buf_live[:n][rows]
            out[missing[hit]] = self._buf_codes[rows[hit]]
            found[missing[hit]] = True
        if not found.all():
            raise KeyError(f"ids not in the index: {ids[~found][:5].tolist()}")
        return out

    def _append_to_buffer(self, codes, ids):
        need = self._buf_n + len(ids)
        if need > len(self._buf_ids):  # grow geometrically: appends are amortised O(1)
            cap = max(need, 2 * len(self._buf_ids), 1024)
            self._buf_codes = np.resize(self._buf_codes, (cap, self.nbytes_per_code))
            self._buf_ids = np.resize(self._buf_ids, cap)
            self._buf_live = np.resize(self._buf_live, cap)
        self._buf_codes[self._buf_n:need] = codes
        self._buf_ids[self._buf_n:need] = ids
        self._buf_live[self._buf_n:need] = True
        self._buf_n = need

    def _flush_buffer(self):
        n = self._buf_n
        live = self._buf_live[:n]
        codes, ids = self._buf_codes[:n][live], self._buf_ids[:n][live]
        self._buf_n = 0
        self._buf_codes = np.empty((0, self.nbytes_per_code), dtype=np.uint8)
        self._buf_ids = np.empty(0, dtype=np.int64)
        self._buf_live = np.empty(0, dtype=bool)
        if len(ids):
            self._seal(codes, ids)

    def _seal(self, codes, ids):
        self._segments.append(self._make_segment(codes, ids))
        # merge while the newest segment is at least half the size of the one before it
        while len(self._segments) >= 2 and 2 * len(self._segments[-1]) >= len(self._segments[-2]):
            newer = self._segments.pop()
            older = self._segments.pop()
            self._segments.append(self._merge(older, newer))

    def _make_segment(self, codes, ids) -> _Segment:
        seg = _Segment(codes, ids)
        files = _segment_folder
        if (files is not None and self.prefilter is None and self.method != "scan"
                and len(seg) >= MIH_MIN_ROWS):
            _map_segment_file(files, seg, self.nbits, self.design_radius, self.threads,
                              self.method == "mih")
        elif self.method == "mih" or (self.method == "auto" and len(seg) >= MIH_MIN_ROWS):
            seg.build_mih(self.nbits, self.design_radius, self.threads, self.method == "mih")
        if self.prefilter is not None:
            seg.buckets = self.prefilter.buckets(seg.codes)
        return seg

    def _merge(self, a: _Segment, b: _Segment) -> _Segment:
        return self._make_segment(np.concatenate([a.codes[a.live], b.codes[b.live]]),
                                  np.concatenate([a.ids[a.live], b.ids[b.live]]))

    def _compact(self):
        for i, seg in enumerate(self._segments):
            if seg.n_dead and seg.n_dead >= COMPACT_DEAD_FRACTION * len(seg):
                self._segments[i] = self._make_segment(seg.codes[seg.live], seg.ids[seg.live])
        self._segments = [s for s in self._segments if len(s)]

    # -- search ------------------------------------------------------------------------------
    def range_search(self, queries, radius: int, threads: int | None = None):
        """CSR (offsets, ids, distances): every stored code within `radius` of each query,
        ids ascending within a query."""
        queries = np.ascontiguousarray(queries, dtype=np.uint8)
        if queries.ndim != 2:
            raise ValueError(f"queries must be 2-D (nq, nbytes), got shape {queries.shape}")
        offsets, ids, dist, _ = self.range_search_multi(queries[:, None, :], radius, threads)
        return offsets, ids, dist

    def range_search_multi(self, needles, radius: int, threads: int | None = None):
        """Range search with up to 8 needles per query (e.g. the 8 dihedral PDQ hashes).

        needles: (nq, m, nbytes), or (m, nbytes) for one query. Returns CSR
        (offsets, ids, distances, variants): a code is a hit when its minimum distance over
        the query's needles is <= radius; `variants` is the needle achieving it."""
        needles = np.ascontiguousarray(needles, dtype=np.uint8)
        if needles.ndim == 2:
            needles = needles[None]
        if needles.ndim != 3 or needles.shape[2] != self.nbytes_per_code:
            raise ValueError(f"needles must have shape (nq, m, {self.nbytes_per_code})")
        threads = self.threads if threads is None else threads
        radius = int(radius)
        if self._approx is not None:
            return self._approx.range_search_multi(needles, radius)
        nq = needles.shape[0]
        parts = [self._search_segment(seg, needles, radius, threads)
                 for seg in self._segments if len(seg) > seg.n_dead]
        if self._buf_n:
            parts.append(self._search_buffer(needles, radius, threads))
        return _merge_hits(nq, parts, presorted=len(parts) == 1 and not self._buf_n)

    def range_search_hits(self, needles, radii, threads: int | None = None):
        """Every stored code within ``radii[j]`` of some needle ``j``, with its distance to
        every needle: (ids int64 (h,), distances int32 (h, m)), ids ascending.

        needles: (m, nbytes), any m (a query's needles that may meet these codes, one pass);
        radii: one per needle (negative: the needle takes no part). A segment is scanned
        (``_hamming.range_search_hits``) or, when the cost model prefers its MIH tables at
        the largest radius, probed 8 needles at a time and the candidates' distances computed.
        """
        needles, radii = self._check_needles(needles, radii)
        m = len(needles)
        threads = self.threads if threads is None else threads
        parts = []  # (ids, distances)
        if m and (radii >= 0).any():
            for seg in self._segments:
                if len(seg) > seg.n_dead:
                    parts.append(self._hits_segment(seg, needles, radii, threads))
            if self._buf_n:
                n = self._buf_n
                t = auto_threads(m * n) if threads is None else threads
                rows, dist = _hamming.range_search_hits(needles, radii, self._buf_codes[:n],
                                                        threads=t)
                keep = self._buf_live[:n][rows]
                parts.append((self._buf_ids[:n][rows[keep]], dist[keep]))
        return _ascending_hits(parts, m)

    def prefiltered_hits(self, needles, radius: int, coarse_radius: int, key_radius: int):
        """``range_search_hits`` at one ``radius`` through the prefilter (a
        :class:`BucketPrefilter` given at construction): only pairs whose coarse codes are
        within ``coarse_radius`` bits and whose keys within ``key_radius`` bits count; the
        other pairs' distances are set to ``radius + 1``, so a row's pairs do not depend on
        which other needles brought it in. Sealed segments are read bucket by bucket (the
        buckets within ``key_radius`` of each needle's key); the append buffer is scanned.
        Returns (ids int64 (h,), exact distances int32 (h, m)), ids ascending."""
        pf = self.prefilter
        if pf is None:
            raise ValueError("this index keeps no prefilter codes (prefilter=None)")
        needles, _ = self._check_needles(needles, np.zeros(len(needles)))
        m = len(needles)
        radius = int(radius)
        coarse_needles = np.ascontiguousarray(pf.coarse_of(needles))
        needle_keys = np.asarray(pf.keys_of(coarse_needles), np.int64)
        parts = []
        if not (m and radius >= 0 and coarse_radius >= 0 and key_radius >= 0):
            return _ascending_hits(parts, m)
        # Every bucket within reach (key_radius >= key_bits): one scan of the coarse codes.
        every_bucket = key_radius >= pf.key_bits
        masks = None if every_bucket else pf.key_masks(key_radius)
        for seg in self._segments:
            if len(seg) == seg.n_dead:
                continue
            offsets, bucket_rows, coarse = seg.buckets
            if every_bucket:
                at, which = _coarse_pairs(coarse, coarse_needles, coarse_radius)
            else:
                at, which = _hamming.bucket_range_search(coarse_needles, needle_keys, masks,
                                                         offsets, coarse, coarse_radius)
            parts.append(_exact_pairs(bucket_rows[at], which, seg.codes, seg.ids, seg.live,
                                      needles, radius))
        if self._buf_n:
            n = self._buf_n
            coarse = np.ascontiguousarray(pf.coarse_of(self._buf_codes[:n]))
            rows, which = _coarse_pairs(coarse, coarse_needles, coarse_radius)
            key_d = np.bitwise_count(np.asarray(pf.keys_of(coarse[rows]), np.int64)
                                     ^ needle_keys[which])
            rows, which = rows[key_d <= key_radius], which[key_d <= key_radius]
            parts.append(_exact_pairs(rows, which, self._buf_codes, self._buf_ids,
                                      self._buf_live, needles, radius))
        return _ascending_hits(parts, m)

    def _check_needles(self, needles, radii):
        needles = np.ascontiguousarray(needles, dtype=np.uint8)
        if needles.ndim != 2 or needles.shape[1] != self.nbytes_per_code:
            raise ValueError(f"needles must have shape (m, {self.nbytes_per_code})")
        radii = np.asarray(radii, dtype=np.int64).reshape(-1)
        if len(radii) != len(needles):
            raise ValueError(f"{len(needles)} needles but {len(radii)} radii")
        if self._approx is not None:
            raise ValueError("a search that returns every needle's distance needs the exact "
                             "index (no approximate backend)")
        return needles, radii

    def _hits_segment(self, seg: _Segment, needles, radii, threads):
        m = len(needles)
        reach = int(radii.max())
        live = seg.live if seg.n_dead else None
        if self._use_mih(seg, reach, min(m, _hamming.MAX_NEEDLES)):
            if threads is None:
                threads = 1
            starts, widths, offsets, rows, split = seg.mih
            found = []
            for lo in range(0, m, _hamming.MAX_NEEDLES):
                chunk = needles[lo:lo + _hamming.MAX_NEEDLES]
                if (radii[lo:lo + _hamming.MAX_NEEDLES] < 0).all():
                    continue
                found.append(_hamming.mih_range_search_multi(
                    chunk[None], seg.codes, starts, widths, offsets, rows, reach,
                    threads=threads, split_parity=split)[1])
            hit = _sorted_unique(np.concatenate(found)) if found else np.empty(0, np.int64)
            dist = _hamming.distance_matrix(seg.codes[hit], needles, threads=1)
            hit_ok = (dist <= radii[None, :]).any(axis=1)
            hit, dist = hit[hit_ok], dist[hit_ok]
        else:
            if threads is None:
                threads = auto_threads(m * len(seg))
            hit, dist = _hamming.range_search_hits(needles, radii, seg.codes, threads=threads)
        if live is not None:
            keep = live[hit]
            hit, dist = hit[keep], dist[keep]
        return seg.ids[hit], dist

    def _search_segment(self, seg: _Segment, needles, radius, threads):
        nq, m = needles.shape[:2]
        if self._use_mih(seg, radius, m):
            if threads is None:
                # MIH answers one query in well under a millisecond: threads pay off only
                # for batches.
                threads = 1 if nq < MIH_PARALLEL_MIN_QUERIES else default_workers()
            starts, widths, offsets, rows, split = seg.mih
            result = _hamming.mih_range_search_multi(needles, seg.codes, starts, widths,
                                                     offsets, rows, radius, threads=threads,
                                                     split_parity=split)
        else:
            if threads is None:
                threads = auto_threads(nq * m * len(seg))
            result = _hamming.range_search_multi(needles, seg.codes, radius, threads=threads)
        return _hits_to_ids(result, seg.ids, seg.live if seg.n_dead else None)

    def _search_buffer(self, needles, radius, threads):
        n = self._buf_n
        if threads is None:
            threads = auto_threads(needles.shape[0] * needles.shape[1] * n)
        result = _hamming.range_search_multi(needles, self._buf_codes[:n], radius,
                                             threads=threads)
        return _hits_to_ids(result, self._buf_ids[:n], self._buf_live[:n])

    def _use_mih(self, seg: _Segment, radius: int, needles: int) -> bool:
        if seg.mih is None or self.method == "scan":
            return False
        if self.method == "mih":
            return True
        # The cost model depends on the segment's size and layout only (both fixed once it is
        # sealed): evaluating it cost ~15 % of a 1-query search at 200k rows, so it is cached.
        key = (radius, needles)
        use = seg.path_of.get(key)
        if use is None:
            mih_ns, _ = mih_cost(len(seg), seg.mih[1], radius, needles)
            use = seg.path_of[key] = mih_ns < scan_cost(len(seg), self.nbits // 64, needles)
        return use

    def topk(self, queries, k: int, threads: int | None = None):
        """(ids (nq, k), distances (nq, k)) of the k nearest stored codes, sorted by
        (distance, id); padded with id -1 and distance _hamming.PAD_DISTANCE. Linear scan."""
        queries = np.ascontiguousarray(queries, dtype=np.uint8)
        threads = self.threads if threads is None else threads
        if self._approx is not None:
            return self._approx.topk(queries, k)
        nq = len(queries)
        all_ids = [np.full((nq, k), -1, dtype=np.int64)]
        all_d = [np.full((nq, k), _hamming.PAD_DISTANCE, dtype=np.int32)]
        sources = [(s.codes, s.ids, s.live if s.n_dead else None) for s in self._segments]
        if self._buf_n:
            n = self._buf_n
            sources.append((self._buf_codes[:n], self._buf_ids[:n], self._buf_live[:n]))
        for codes, ids, live in sources:
            rows, dist = _hamming.topk(queries, codes, k, threads=threads, live=live)
            all_ids.append(np.where(rows >= 0, ids[rows], -1))
            all_d.append(dist)
        ids = np.concatenate(all_ids, axis=1)
        dist = np.concatenate(all_d, axis=1)
        # pads (-1) sort last among equal PAD distances
        order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), dist), axis=1)[:, :k]
        return np.take_along_axis(ids, order, axis=1), np.take_along_axis(dist, order, axis=1)

    def paths(self, radius: int = 31, needles: int = 1) -> list[str]:
        """Which method each segment would use for such a call (diagnostics, benchmarks)."""
        return ["mih" if self._use_mih(s, radius, needles) else "scan" for s in self._segments]

    @property
    def buffered_rows(self) -> int:
        """Rows in the append buffer, not sealed into a segment yet (diagnostics, tests)."""
        return self._buf_n


def _coarse_pairs(coarse, coarse_needles, coarse_radius):
    """(rows, needles) of the pairs within ``coarse_radius``: one scan of the coarse codes,
    by row then needle."""
    m = len(coarse_needles)
    rows, distances = _hamming.range_search_hits(
        coarse_needles, np.full(m, coarse_radius, np.int64), coarse, threads=1)
    at, which = np.nonzero(distances <= coarse_radius)
    return rows[at], which


def _exact_pairs(rows, which, codes, ids, live, needles, radius):
    """(ids, distances (h, m)) of the live ``rows`` of a segment (or the buffer) that have
    some admitted pair (row, needle ``which``) within ``radius``: exact distances for the
    admitted pairs, ``radius + 1`` for the others. ``rows`` come grouped (equal rows
    together)."""
    m = len(needles)
    keep = live[rows]
    rows, which = rows[keep], which[keep]
    if len(rows) == 0:
        return np.empty(0, np.int64), np.empty((0, m), np.int32)
    starts = np.r_[True, rows[1:] != rows[:-1]]
    unique_rows = rows[starts]
    slot = np.cumsum(starts) - 1
    stored = np.take(codes, unique_rows, axis=0).view(np.uint64)
    pair = np.bitwise_count(stored[slot] ^ needles.view(np.uint64)[which]).sum(axis=1)
    distances = np.full((len(unique_rows), m), radius + 1, np.int32)
    distances[slot, which] = pair
    within = (distances <= radius).any(axis=1)
    return ids[unique_rows[within]], distances[within]


def _ascending_hits(parts, m: int):
    """(ids, distances) of several sources' hits, ids ascending."""
    if not parts:
        return np.empty(0, np.int64), np.empty((0, m), np.int32)
    ids = np.concatenate([p[0] for p in parts])
    dist = np.concatenate([p[1] for p in parts]).astype(np.int32, copy=False)
    if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
        order = np.argsort(ids, kind="stable")
        ids, dist = ids[order], dist[order]
    return ids, dist


def _sorted_unique(ids: np.ndarray) -> np.ndarray:
    """np.unique(ids) for int64 ids. (numpy 2.4's np.unique took 21 s on 10M ids here;
    sort + adjacent compare takes ~1 s, and an already increasing array is returned as is.)"""
    if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
        ids = np.sort(ids)
        keep = np.ones(ids.size, dtype=bool)
        keep[1:] = ids[1:] != ids[:-1]
        ids = ids[keep]
    return ids


def _all_unique(ids: np.ndarray) -> bool:
    return len(_sorted_unique(ids)) == len(ids)


def _hits_to_ids(result, ids, live):
    """Segment-row hits -> (query, external id, distance, variant), tombstones dropped."""
    offsets, rows, dist, var = result
    query = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    if live is not None:
        keep = live[rows]
        query, rows, dist, var = query[keep], rows[keep], dist[keep], var[keep]
    return query, ids[rows], dist, var


def _merge_hits(nq, parts, presorted):
    if parts:
        query, ids, dist, var = (np.concatenate(col) for col in zip(*parts))
    else:
        query, ids = np.empty(0, np.int64), np.empty(0, np.int64)
        dist, var = np.empty(0, np.int32), np.empty(0, np.int8)
    if not presorted:
        order = np.lexsort((ids, query))
        query, ids, dist, var = query[order], ids[order], dist[order], var[order]
    offsets = np.zeros(nq + 1, dtype=np.int64)
    np.cumsum(np.bincount(query, minlength=nq), out=offsets[1:])
    return offsets, ids, dist, var


class _FaissIVF:
    """Opt-in approximate search: FAISS IndexBinaryIVF (trained on the first add)."""

    def __init__(self, nbits: int, nprobe: int):
        self.nbits = nbits
        self.nprobe = nprobe
        self.index = None

    def _ensure(self, codes):
        import faiss

        if self.index is None:
            nlist = max(1, min(int(4 * math.sqrt(len(codes))), len(codes) // 39 or 1))
            self._quantizer = faiss.IndexBinaryFlat(self.nbits)
            self.index = faiss.IndexBinaryIVF(self._quantizer, self.nbits, nlist)
            self.index.train(codes)
            self.index.nprobe = self.nprobe

    def __len__(self):
        return 0 if self.index is None else self.index.ntotal

    def nbytes(self):
        if self.index is None:
            return 0
        # inverted lists hold code + int64 id per entry; the quantizer its centroids
        return self.index.ntotal * (self.nbits // 8 + 8) + self._quantizer.ntotal * self.nbits // 8

    def add(self, codes, ids):
        self._ensure(codes)
        self.index.add_with_ids(codes, ids)

    def remove(self, ids):
        import faiss

        if self.index is None:
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    def range_search_multi(self, needles, radius):
        nq, m, nbytes = needles.shape
        if self.index is None:
            return _merge_hits(nq, [], True)
        lims, dist, ids = self.index.range_search(needles.reshape(nq * m, nbytes), radius + 1)
        flat = np.repeat(np.arange(nq * m), np.diff(lims.astype(np.int64)))
        query, var = flat // m, (flat % m).astype(np.int8)
        # per (query, id) keep the smallest distance, lowest variant on ties
        order = np.lexsort((var, dist, ids, query))
        query, ids, dist, var = query[order], ids[order], dist[order].astype(np.int32), var[order]
        first = np.ones(len(ids), dtype=bool)
        first[1:] = (ids[1:] != ids[:-1]) | (query[1:] != query[:-1])
        return _merge_hits(nq, [(query[first], ids[first], dist[first], var[first])], True)

    def topk(self, queries, k):
        if self.index is None:
            return (np.full((len(queries), k), -1, np.int64),
                    np.full((len(queries), k), _hamming.PAD_DISTANCE, np.int32))
        dist, ids = self.index.search(queries, k)
        dist = np.where(ids < 0, _hamming.PAD_DISTANCE, dist).astype(np.int32)
        return ids, dist
