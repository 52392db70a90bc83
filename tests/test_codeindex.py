"""CodeIndex returns exactly what brute force (the numpy twin) returns, on every path."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashmatch import _hamming as fast
from hashmatch import _hamming_ref as ref
from hashmatch.codeindex import CodeIndex

HAYSTACK = Path(__file__).resolve().parents[2] / "shared/data/pdq-reference/hashlists/haystack.txt"
EXACT_METHODS = ["scan", "mih", "auto"]


def flip_bits(code: np.ndarray, nflips: int, rng) -> np.ndarray:
    bits = np.unpackbits(code, bitorder="little")
    bits[rng.choice(bits.size, nflips, replace=False)] ^= 1
    return np.packbits(bits, bitorder="little")


def random_codes(n, nbytes, rng):
    return rng.integers(0, 256, (n, nbytes), dtype=np.uint8)


def clustered_codes(n, rng):
    """Real PDQ hashes (many near-duplicates of each other) with 0..40 bits of noise."""
    if HAYSTACK.exists():
        hexes = [line.strip() for line in HAYSTACK.read_text().split() if line.strip()]
        base = np.array([np.frombuffer(bytes.fromhex(h), np.uint8) for h in hexes])
    else:  # the shared data folder is absent: synthetic clusters instead
        base = random_codes(60, 32, rng)
    picks = base[rng.integers(0, len(base), n)]
    return np.array([flip_bits(c, int(rng.integers(0, 41)), rng) for c in picks])


def queries_with_planted_neighbours(stored, nq, rng):
    """Queries 1..31 bits from stored codes (and a few unrelated ones)."""
    nbits = stored.shape[1] * 8
    picks = stored[rng.integers(0, len(stored), nq)]
    q = np.array([flip_bits(c, int(rng.integers(1, min(32, nbits))), rng) for c in picks])
    q[::5] = random_codes(len(q[::5]), stored.shape[1], rng)
    return q


class Model:
    """The truth: a dict id -> code, searched by brute force."""

    def __init__(self):
        self.codes = {}

    def add(self, codes, ids):
        self.codes.update(zip(ids.tolist(), codes))

    def remove(self, ids):
        for i in ids.tolist():
            self.codes.pop(i, None)

    def range_search_multi(self, needles, radius, nbytes):
        ids = np.array(sorted(self.codes), dtype=np.int64)
        codes = (np.array([self.codes[i] for i in ids]) if len(ids)
                 else np.zeros((0, nbytes), np.uint8))
        offsets, rows, dist, var = ref.range_search_multi(needles, codes, radius)
        return offsets, ids[rows], dist, var  # rows ascending = ids ascending


def assert_same(got, expected):
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def check(index, model, queries, radius):
    nbytes = queries.shape[-1]
    expected = model.range_search_multi(queries[:, None, :], radius, nbytes)
    got = index.range_search(queries, radius)
    assert_same(got, expected[:3])
    assert got[1].dtype == np.int64 and got[2].dtype == np.int32


@pytest.mark.parametrize("method", EXACT_METHODS)
# The clustered data is the real PDQ hash list, so it only exists at 256 bits.
@pytest.mark.parametrize("nbits, data", [(64, "random"), (256, "random"), (256, "clustered")])
def test_range_search_equals_brute_force_through_adds_and_removes(method, nbits, data):
    rng = np.random.default_rng(nbits + len(method) + len(data))
    nbytes = nbits // 8
    index, model = CodeIndex(nbits, method=method), Model()
    all_codes = (random_codes(3000, nbytes, rng) if data == "random"
                 else clustered_codes(3000, rng))
    all_ids = rng.choice(10**9, len(all_codes), replace=False).astype(np.int64)  # sparse ids
    radii = [0, 5, nbits * 31 // 256, nbits // 4]
    at = 0
    for step, size in enumerate([1, 700, 1200, 1099]):  # adds in uneven batches
        codes, ids = all_codes[at:at + size], all_ids[at:at + size]
        at += size
        index.add(codes, ids)
        model.add(codes, ids)
        gone = rng.choice(all_ids[:at], size // 3, replace=False)
        assert index.remove(gone) == sum(int(g) in model.codes for g in gone)
        model.remove(gone)
        assert len(index) == len(model.codes)
        queries = queries_with_planted_neighbours(all_codes[:at], 40, rng)
        for radius in radii:
            check(index, model, queries, radius)


@pytest.mark.parametrize("method", ["scan", "mih"])
def test_multi_needle_equals_brute_force(method):
    rng = np.random.default_rng(3)
    codes = clustered_codes(2000, rng)
    ids = np.arange(2000, dtype=np.int64) * 7
    index, model = CodeIndex(256, method=method), Model()
    index.add(codes, ids)
    model.add(codes, ids)
    index.remove(ids[::3])
    model.remove(ids[::3])
    needles = np.stack([queries_with_planted_neighbours(codes, 25, rng) for _ in range(8)], 1)
    for radius in (0, 16, 31, 50):
        assert_same(index.range_search_multi(needles, radius),
                    model.range_search_multi(needles, radius, 32))


def test_planted_neighbours_are_all_found_at_every_distance():
    rng = np.random.default_rng(4)
    base = clustered_codes(1000, rng)
    query = base[0]
    planted = np.array([flip_bits(query, d, rng) for d in range(1, 32)])
    index = CodeIndex(256, method="mih")
    index.add(np.concatenate([base[1:], planted]), np.arange(999 + 31))
    offsets, ids, dist = index.range_search(query[None], 31)
    found = dict(zip(ids.tolist(), dist.tolist()))
    for d in range(1, 32):
        assert found[999 + d - 1] == d


@pytest.mark.parametrize("method", EXACT_METHODS)
def test_empty_and_single_item_index(method):
    index = CodeIndex(256, method=method)
    q = np.zeros((2, 32), np.uint8)
    offsets, ids, dist = index.range_search(q, 31)
    assert offsets.tolist() == [0, 0, 0] and ids.size == 0 and len(index) == 0
    ids_k, dist_k = index.topk(q, 3)
    assert (ids_k == -1).all()
    index.add(np.full((1, 32), 255, np.uint8), [42])
    offsets, ids, dist = index.range_search(np.full((1, 32), 255, np.uint8), 0)
    assert ids.tolist() == [42] and dist.tolist() == [0]
    assert index.range_search(q[:1], 255)[1].size == 0
    assert index.range_search(q[:1], 256)[1].tolist() == [42]
    assert index.remove([42, 43]) == 1
    assert len(index) == 0 and index.range_search(q, 256)[1].size == 0


def test_topk_matches_brute_force_across_segments_and_tombstones():
    rng = np.random.default_rng(5)
    codes = random_codes(3000, 32, rng)
    ids = rng.choice(10**6, 3000, replace=False).astype(np.int64)
    index = CodeIndex(256, method="mih")
    for lo in range(0, 3000, 1000):
        index.add(codes[lo:lo + 1000], ids[lo:lo + 1000])
    index.remove(ids[::4])
    keep = np.ones(3000, bool)
    keep[::4] = False
    queries = codes[:10]
    order = np.argsort(ids[keep])
    exp_rows, exp_d = ref.topk(queries, codes[keep][order], 7)
    got_ids, got_d = index.topk(queries, 7)
    np.testing.assert_array_equal(got_ids, ids[keep][order][exp_rows])
    np.testing.assert_array_equal(got_d, exp_d)


def test_add_rejects_duplicates_and_bad_shapes():
    index = CodeIndex(64)
    index.add(np.zeros((2, 8), np.uint8), [1, 2])
    with pytest.raises(ValueError):
        index.add(np.zeros((1, 8), np.uint8), [2])
    with pytest.raises(ValueError):
        index.add(np.zeros((2, 8), np.uint8), [5, 5])
    with pytest.raises(ValueError):
        index.add(np.zeros((1, 32), np.uint8), [9])
    index.remove([2])
    index.add(np.ones((1, 8), np.uint8), [2])  # a removed id may come back
    assert index.range_search(np.ones((1, 8), np.uint8), 0)[1].tolist() == [2]


def test_big_segments_use_mih_and_stay_exact():
    """Over MIH_MIN_ROWS the auto index builds tables; the result must not change."""
    rng = np.random.default_rng(6)
    codes = random_codes(300_000, 32, rng)
    ids = np.arange(300_000, dtype=np.int64)
    index = CodeIndex(256)
    index.add(codes, ids)
    assert index.paths(31) == ["mih"]
    queries = queries_with_planted_neighbours(codes, 30, rng)
    expected = fast.range_search(queries, codes, 31)  # the scan kernel, proven = its twin
    assert_same(index.range_search(queries, 31), expected)
    assert_same(index.range_search(queries, 31, threads=1), expected)
    assert index.nbytes <= 300_000 * 128


def test_approximate_ivf_is_opt_in_and_finds_exact_copies():
    rng = np.random.default_rng(8)
    codes = random_codes(5000, 32, rng)
    index = CodeIndex(256, approximate="ivf", nprobe=8)
    index.add(codes, np.arange(5000))
    offsets, ids, dist = index.range_search(codes[:20], 0)
    assert ids.tolist() == list(range(20))  # a stored code is in its own nearest list
    assert index.remove([0, 1]) == 2 and len(index) == 4998


def test_mih_layout_choice_keeps_plain_widths_with_parity_keys():
    """1M PDQ codes: the mixed parity layout (plain 14 x 18-19-bit widths, dihedral needles
    share keys) fits the memory budget; 10M keeps the parity-split 12 tables."""
    from hashmatch.codeindex import MIH_TABLE_BYTES_PER_CODE, choose_mih_layout, mih_table_bytes

    assert choose_mih_layout(1_000_000, 256, 31) == (14, fast.SPLIT_MIXED)
    assert choose_mih_layout(10_000_000, 256, 31) == (12, True)
    widths = fast.mih_layout(256, 14, fast.SPLIT_MIXED)[1]
    assert mih_table_bytes(1_000_000, widths) <= MIH_TABLE_BYTES_PER_CODE * 1_000_000


def test_codes_of_returns_stored_codes_from_segments_and_buffer():
    from hashmatch.codeindex import BUFFER_ROWS

    rng = np.random.default_rng(5)
    index = CodeIndex(256)
    sealed, total = BUFFER_ROWS + 500, BUFFER_ROWS + 600
    codes = rng.integers(0, 256, (total, 32), dtype=np.uint8)
    index.add(codes[:sealed], np.arange(sealed))               # a sealed segment
    index.add(codes[sealed:], np.arange(sealed, total))        # the write buffer
    assert len(index.paths()) == 1 and index.buffered_rows == total - sealed
    wanted = np.array([total - 1, 0, 1234, sealed])
    assert (index.codes_of(wanted) == codes[wanted]).all()
    index.remove([1234])
    with pytest.raises(KeyError):
        index.codes_of([1234])
    with pytest.raises(KeyError):
        index.codes_of([total + 10])


def _hits_brute_force(model, needles, radii, nbytes):
    ids = np.array(sorted(model.codes), dtype=np.int64)
    codes = (np.array([model.codes[i] for i in ids]) if len(ids)
             else np.zeros((0, nbytes), np.uint8))
    rows, dist = ref.range_search_hits(needles, radii, codes)
    return ids[rows], dist


@pytest.mark.parametrize("method", EXACT_METHODS)
@pytest.mark.parametrize("m", [1, 5, 8, 13, 20])
def test_range_search_hits_equals_brute_force_across_segments_buffer_and_removes(method, m):
    """A radius per needle, any number of needles, scanned or probed through MIH tables
    (8 needles at a time), over segments with tombstones and the append buffer."""
    rng = np.random.default_rng(m + len(method))
    codes = clustered_codes(2500, rng)
    ids = rng.choice(10**9, len(codes), replace=False).astype(np.int64)
    index, model = CodeIndex(256, method=method), Model()
    for lo, hi in ((0, 1200), (1200, 2400), (2400, 2500)):
        index.add(codes[lo:hi], ids[lo:hi])
        model.add(codes[lo:hi], ids[lo:hi])
    index.remove(ids[::4])
    model.remove(ids[::4])
    needles = queries_with_planted_neighbours(codes, m, rng)
    for radii in (np.full(m, 31), rng.integers(-1, 60, m), np.full(m, -1)):
        got = index.range_search_hits(needles, radii)
        expected = _hits_brute_force(model, needles, radii, 32)
        assert_same(got, expected)
        assert got[0].dtype == np.int64 and got[1].dtype == np.int32


def _prefilter_brute_force(model, needles, radius, coarse_radius, key_radius):
    """``prefiltered_hits`` from its definition: every live pair within ``radius`` whose
    8x8 lowest DCT signs are within ``coarse_radius`` and 4x4 lowest within ``key_radius``
    (bit 16 i + j of a PDQ code is coefficient (i, j)'s sign); other pairs radius + 1."""
    ids = np.array(sorted(model.codes), np.int64)
    stored = np.stack([model.codes[i] for i in ids.tolist()])

    def signs(codes, side):
        a = np.unpackbits(codes, axis=1)[:, ::-1].reshape(-1, 16, 16)
        return a[:, :side, :side].reshape(len(a), -1).astype(np.int64)

    def distances(x, y):
        return np.abs(x[:, None, :] - y[None, :, :]).sum(-1)

    dist = distances(signs(stored, 16), signs(needles, 16))
    outside = ((distances(signs(stored, 8), signs(needles, 8)) > coarse_radius)
               | (distances(signs(stored, 4), signs(needles, 4)) > key_radius))
    dist[outside] = radius + 1
    hit = (dist <= radius).any(axis=1)
    return ids[hit], dist[hit].astype(np.int32)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.sampled_from([40, 88, 128]),
       st.integers(8, 64), st.integers(0, 16))
def test_prefiltered_hits_are_the_pairs_the_prefilter_lets_through(seed, m, radius,
                                                                  coarse_radius, key_radius):
    """Bucketed coarse codes (crop windows' prefilter) find exactly the pairs their
    definition admits, with exact distances, across sealed, merged and compacted segments,
    tombstones and the append buffer."""
    from hashmatch import codeindex
    from hashmatch.shard import pdq_prefilter

    mp = pytest.MonkeyPatch()
    mp.setattr(codeindex, "BUFFER_ROWS", 300)  # many segments, merges, a buffer
    try:
        rng = np.random.default_rng(seed)
        codes = clustered_codes(1800, rng)
        ids = rng.choice(10**9, len(codes), replace=False).astype(np.int64)
        index, model = CodeIndex(256, method="scan", prefilter=pdq_prefilter()), Model()
        for lo, hi in ((0, 1200), (1200, 1600), (1600, 1750)):
            index.add(codes[lo:hi], ids[lo:hi])
            index.remove(ids[lo:hi:3][:100])  # tombstones, the 400-row segment compacted
            model.add(codes[lo:hi], ids[lo:hi])
            model.remove(ids[lo:hi:3][:100])
        assert len(index.paths()) > 1 and index.buffered_rows
        needles = queries_with_planted_neighbours(codes, m, rng)
        got = index.prefiltered_hits(needles, radius, coarse_radius, key_radius)
        expected = _prefilter_brute_force(model, needles, radius, coarse_radius, key_radius)
        assert_same(got, expected)
        if coarse_radius == 64 and key_radius == 16:  # nothing filtered: the exact search
            assert_same(got, index.range_search_hits(needles, np.full(m, radius)))
    finally:
        mp.undo()


def test_prefiltered_hits_need_a_prefilter():
    index = CodeIndex(256)
    index.add(np.zeros((1, 32), np.uint8), [1])
    with pytest.raises(ValueError, match="prefilter"):
        index.prefiltered_hits(np.zeros((1, 32), np.uint8), 10, 15, 4)
def test_range_search_hits_through_big_mih_segment():
    rng = np.random.default_rng(8)
    codes = random_codes(250_000, 32, rng)
    index = CodeIndex(256)
    index.add(codes, np.arange(250_000, dtype=np.int64))
    needles = queries_with_planted_neighbours(codes, 11, rng)
    radii = np.array([31] * 10 + [20])
    expected = fast.range_search_hits(needles, radii, codes, threads=1)  # proven = its twin
    assert index.paths(31, needles=11) == ["mih"]
    assert_same(index.range_search_hits(needles, radii, threads=1), expected)
    assert_same(index.range_search_hits(needles, np.full(11, 88)),
                fast.range_search_hits(needles, np.full(11, 88), codes))
