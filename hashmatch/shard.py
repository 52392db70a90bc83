"""The in-memory codes of one (algorithm, bit length) -- a :class:`Shard` -- with each row's
item, region, variant and quality; searched per stored role (:class:`_RoleCodes`).
"""
from __future__ import annotations

import numpy as np

from .codeindex import BucketPrefilter, CodeIndex
from .regions import stored_role

FULL_REGION = "full"  # the region name of a whole image (stored and query side)

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


def pdq_prefilter():
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
                prefilter = pdq_prefilter() if role in self.prefilter_roles else None
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


class Shard:
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
        self._item_order: np.ndarray | None = None  # argsort of item_ids when they are not ascending

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

    def is_full_frame(self, rows: np.ndarray) -> np.ndarray:
        """Which rows are whole-image fingerprints."""
        return self.region_codes[rows] == self._name_code.get(FULL_REGION, -1)

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
