"""Every kernel of hashmatch._hamming equals its plain-numpy twin in hashmatch._hamming_ref,
for every popcount implementation this CPU has, 1 and 2 threads, edge sizes included."""
import numpy as np

from hashmatch.hashers.pdq import dihedral_from_hash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashmatch import _hamming as fast
from hashmatch import _hamming_ref as ref

IMPLS = fast.available_popcount_impls()


@pytest.fixture(autouse=True)
def _restore_impl():
    before = fast.popcount_impl()
    yield
    fast.set_popcount_impl(before)


@st.composite
def code_sets(draw, max_a=9, max_b=40):
    """(a, b, nbits): random codes of 64/128/256 bits, 0..n rows, often with duplicate rows
    and rows that are near copies of each other (so small radii have hits)."""
    nbytes = draw(st.sampled_from([8, 16, 32]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    na = draw(st.integers(0, max_a))
    nb = draw(st.integers(0, max_b))
    a = rng.integers(0, 256, (na, nbytes), dtype=np.uint8)
    b = rng.integers(0, 256, (nb, nbytes), dtype=np.uint8)
    if na and nb and draw(st.booleans()):
        # plant near copies of a's rows into b, with a few bits flipped, and duplicates
        picks = rng.integers(0, na, nb)
        flips = (rng.random((nb, nbytes * 8)) < draw(st.sampled_from([0.0, 0.02, 0.1])))
        b = a[picks] ^ np.packbits(flips, axis=1, bitorder="little")
        if nb > 1:
            b[nb // 2] = b[0]
    return a, b, nbytes * 8


radii = st.one_of(st.sampled_from([0, 1, 31, 64, 128, 256]), st.integers(-1, 300))
threads = st.sampled_from([1, 2])
impls = st.sampled_from(IMPLS)


def assert_same(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
        assert g.dtype == e.dtype, (g.dtype, e.dtype)


@settings(max_examples=150, deadline=None)
@given(code_sets(), threads, impls)
def test_distance_matrix(sets, nthreads, impl):
    a, b, _ = sets
    fast.set_popcount_impl(impl)
    got = fast.distance_matrix(a, b, threads=nthreads)
    assert got.shape == (len(a), len(b)) and got.dtype == np.int32
    np.testing.assert_array_equal(got, ref.distance_matrix(a, b))


@settings(max_examples=150, deadline=None)
@given(code_sets(), radii, threads, impls)
def test_range_search(sets, radius, nthreads, impl):
    a, b, _ = sets
    fast.set_popcount_impl(impl)
    assert_same(fast.range_search(a, b, radius, threads=nthreads), ref.range_search(a, b, radius))


@settings(max_examples=150, deadline=None)
@given(code_sets(), st.integers(0, 50), threads, impls)
def test_topk(sets, k, nthreads, impl):
    a, b, _ = sets
    fast.set_popcount_impl(impl)
    assert_same(fast.topk(a, b, k, threads=nthreads), ref.topk(a, b, k))


@settings(max_examples=60, deadline=None)
@given(code_sets(), st.integers(1, 50), st.data())
def test_topk_with_live_mask(sets, k, data):
    a, b, _ = sets
    live = np.array(data.draw(st.lists(st.booleans(), min_size=len(b), max_size=len(b))),
                    dtype=bool)
    assert_same(fast.topk(a, b, k, live=live), ref.topk(a, b, k, live=live))


def _needles(a, m, rng):
    """(nq, m, nbytes) needles: each query's own code plus m - 1 other random codes."""
    nq, nbytes = a.shape
    needles = rng.integers(0, 256, (nq, m, nbytes), dtype=np.uint8)
    needles[:, rng.integers(0, m) if m else 0] = a
    if m > 2 and nq:
        needles[:, m - 1] = needles[:, 0]  # duplicate needle: the lower index must win
    return needles


@settings(max_examples=150, deadline=None)
@given(code_sets(), st.integers(1, 8), radii, threads, impls, st.integers(0, 2**32 - 1))
def test_range_search_multi(sets, m, radius, nthreads, impl, seed):
    a, b, _ = sets
    fast.set_popcount_impl(impl)
    needles = _needles(a, m, np.random.default_rng(seed))
    assert_same(fast.range_search_multi(needles, b, radius, threads=nthreads),
                ref.range_search_multi(needles, b, radius))


def test_range_search_multi_single_query_2d():
    rng = np.random.default_rng(0)
    needles = rng.integers(0, 256, (8, 32), dtype=np.uint8)
    near = needles[3:4].copy()
    near[0, 0] ^= 1  # one bit from needle 3
    db = np.concatenate([near, rng.integers(0, 256, (50, 32), dtype=np.uint8)])
    assert_same(fast.range_search_multi(needles, db, 40), ref.range_search_multi(needles, db, 40))
    offsets, ids, dist, var = fast.range_search_multi(needles, db, 1)
    assert ids.tolist() == [0] and dist.tolist() == [1] and var.tolist() == [3]


@st.composite
def needle_radii(draw, a, max_m=40):
    """(m, nbytes) needles (a's rows first, then random codes, a duplicate) and a radius
    each, negative ones included."""
    nbytes = a.shape[1]
    m = draw(st.integers(1, max_m))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    needles = rng.integers(0, 256, (m, nbytes), dtype=np.uint8)
    take = min(m, len(a))
    needles[:take] = a[:take]
    if m > 2:
        needles[m - 1] = needles[0]
    base = draw(radii)
    spread = draw(st.sampled_from([0, 8, 40]))
    return needles, base + rng.integers(-spread, spread + 1, m)


@settings(max_examples=200, deadline=None)
@given(code_sets(), threads, impls, st.data())
def test_range_search_hits(sets, nthreads, impl, data):
    a, b, _ = sets
    fast.set_popcount_impl(impl)
    if len(a) == 0:
        a = np.zeros((1, b.shape[1]), np.uint8)
    needles, rad = data.draw(needle_radii(a))
    assert_same(fast.range_search_hits(needles, rad, b, threads=nthreads),
                ref.range_search_hits(needles, rad, b))


@settings(max_examples=12, deadline=None)
@given(st.integers(4096 * 4 - 9, 4096 * 5 + 9), st.integers(1, 24), threads, impls,
       st.integers(0, 2**32 - 1), st.sampled_from([8, 32]))
def test_range_search_hits_many_rows(n, m, nthreads, impl, seed, nbytes):
    """Several blocks of rows, a row count off the 8-row groups, and database parts split
    across threads: hits near every block edge. 256-bit codes and the 64-bit codes of the
    low-frequency prefilter (each has its own AVX-512 path)."""
    fast.set_popcount_impl(impl)
    rng = np.random.default_rng(seed)
    needles = rng.integers(0, 256, (m, nbytes), dtype=np.uint8)
    db = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    for row in (0, 7, 8, 4095, 4096, 8191, n // 2, n - 8, n - 1):
        flips = rng.random(8 * nbytes) < 0.1
        db[row] = needles[rng.integers(0, m)] ^ np.packbits(flips, bitorder="little")
    rad = rng.integers(20, 100, m) * nbytes // 32
    assert_same(fast.range_search_hits(needles, rad, db, threads=nthreads),
                ref.range_search_hits(needles, rad, db))


def test_range_search_hits_shapes():
    db = np.zeros((3, 32), np.uint8)
    rows, dist = fast.range_search_hits(np.zeros((2, 32), np.uint8), [0, -1], db)
    assert rows.tolist() == [0, 1, 2] and dist.shape == (3, 2) and not dist.any()
    rows, dist = fast.range_search_hits(np.zeros((2, 32), np.uint8), [-1, -1], db)
    assert rows.shape == (0,) and dist.shape == (0, 2)
    with pytest.raises(ValueError):
        fast.range_search_hits(np.zeros((2, 32), np.uint8), [1], db)
    with pytest.raises(ValueError):
        fast.range_search_hits(np.zeros((2, 16), np.uint8), [1, 1], db)


@settings(max_examples=150, deadline=None)
@given(code_sets(), st.integers(1, 8), radii, threads, impls, st.integers(0, 2**32 - 1))
def test_range_search_multi_candidates(sets, m, radius, nthreads, impl, seed):
    a, b, _ = sets
    fast.set_popcount_impl(impl)
    rng = np.random.default_rng(seed)
    needles = _needles(a, m, rng)
    counts = rng.integers(0, 2 * len(b) + 1, len(a)) if len(b) else np.zeros(len(a), int)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = rng.integers(0, max(len(b), 1), offsets[-1])  # any order, repeats allowed
    assert_same(fast.range_search_multi_candidates(needles, b, offsets, rows, radius,
                                                   threads=nthreads),
                ref.range_search_multi_candidates(needles, b, offsets, rows, radius))


@settings(max_examples=100, deadline=None)
@given(code_sets(max_b=60), st.integers(1, 8), threads, st.data())
def test_mih_build_and_search(sets, m, nthreads, data):
    a, b, nbits = sets
    nsub = data.draw(st.integers(-(-nbits // 16), nbits // 4))  # tables <= 2**16 keys: fast
    radius = data.draw(st.integers(-1, nbits // 2))
    starts, widths = fast.mih_layout(nbits, nsub)
    np.testing.assert_array_equal(starts, ref.mih_layout(nbits, nsub)[0])
    np.testing.assert_array_equal(widths, ref.mih_layout(nbits, nsub)[1])
    tables = fast.mih_build(b, starts, widths, threads=nthreads)
    assert_same(tables, ref.mih_build(b, starts, widths))
    needles = _needles(a, m, np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))))
    assert_same(fast.mih_range_search_multi(needles, b, starts, widths, *tables, radius,
                                            threads=nthreads),
                ref.mih_range_search_multi(needles, b, starts, widths, *tables, radius))


def test_block_boundaries_and_parallel_parts():
    """Enough rows to cross the kernels' 4096-row blocks and be split between threads."""
    rng = np.random.default_rng(7)
    db = rng.integers(0, 256, (20_011, 32), dtype=np.uint8)
    queries = db[[0, 4095, 4096, 20_010]] ^ np.uint8(3)
    for impl in IMPLS:
        fast.set_popcount_impl(impl)
        for nthreads in (1, 2):
            assert_same(fast.range_search(queries, db, 100, threads=nthreads),
                        ref.range_search(queries, db, 100))
            assert_same(fast.topk(queries, db, 5, threads=nthreads), ref.topk(queries, db, 5))


def test_popcount_impl_is_reported():
    assert fast.popcount_impl() in IMPLS
    assert "portable" in IMPLS
    with pytest.raises(ValueError):
        fast.set_popcount_impl("no-such-impl")


@pytest.mark.parametrize("bad", [np.zeros((3, 7), np.uint8), np.zeros(8, np.uint8),
                                 np.zeros((3, 0), np.uint8)])
def test_rejects_bad_shapes(bad):
    with pytest.raises(ValueError):
        fast.range_search(bad, bad, 3)


def test_rejects_mixed_lengths_and_too_many_needles():
    with pytest.raises(ValueError):
        fast.distance_matrix(np.zeros((1, 8), np.uint8), np.zeros((1, 32), np.uint8))
    with pytest.raises(ValueError):
        fast.range_search_multi(np.zeros((1, 9, 32), np.uint8), np.zeros((4, 32), np.uint8), 3)


# --- MIH over parity-split PDQ codes (the dihedral variants share probes) -------------------

dihedral_ideal = dihedral_from_hash  # PDQ's bit transforms (hashers/pdq.py)


def real_dihedral_sets(count, seed):
    """pdq_dihedral_from_rgb of smooth random images (real, not idealised, variants)."""
    from hashmatch.hashers.pdq import pdq_dihedral_from_rgb

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = np.kron(small, np.ones((16, 16, 1), np.uint8))  # 128x128, blocky: real DCT
        out.append(pdq_dihedral_from_rgb(img)[0])
    return np.array(out, dtype=np.uint8).reshape(count, 8, 32)


def test_parity_split_twin_and_layouts():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    np.testing.assert_array_equal(fast.pdq_parity_split(codes), ref.pdq_parity_split(codes))
    assert sorted(ref.pdq_parity_permutation().tolist()) == list(range(256))
    for nsub in range(4, 65):
        got, exp = fast.mih_layout(256, nsub, True), ref.mih_layout(256, nsub, True)
        assert_same(got, exp)
        # every substring inside one 64-bit parity class, together covering all 256 bits
        assert np.all(got[0] // 64 == (got[0] + got[1] - 1) // 64) and got[1].sum() == 256
    with pytest.raises(ValueError):
        fast.mih_layout(128, 8, True)


def test_parity_mix_twin_and_layouts():
    """Mixed parity layout: the plain widths; each table holds bits of one class 0-2 plus
    (odd, odd) bits, or (odd, odd) bits only; together a permutation of the split code."""
    rng = np.random.default_rng(6)
    codes = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    for nsub in [4] + list(range(6, 65)):
        tables = fast.pdq_mix_tables(nsub)
        assert tables == ref.pdq_mix_tables(nsub)
        assert_same(fast.mih_layout(256, nsub, fast.SPLIT_MIXED), fast.mih_layout(256, nsub))
        assert_same(fast.mih_layout(256, nsub, fast.SPLIT_MIXED),
                    ref.mih_layout(256, nsub, ref.SPLIT_MIXED))
        bits = []
        for (c, s0, w0, s3, w3), w in zip(tables, fast.mih_layout(256, nsub)[1]):
            assert w0 + w3 == w and s0 // 64 == (s0 + w0 - 1) // 64 == c
            assert w3 == 0 or s3 // 64 == (s3 + w3 - 1) // 64 == 3
            bits += list(range(s0, s0 + w0)) + list(range(s3, s3 + w3))
        assert sorted(bits) == list(range(256))
        np.testing.assert_array_equal(fast.pdq_parity_mix(codes, nsub),
                                      ref.pdq_parity_mix(codes, nsub))
    for bad in (3, 5):
        with pytest.raises(ValueError):
            fast.mih_layout(256, bad, fast.SPLIT_MIXED)
        with pytest.raises(ValueError):
            ref.mih_layout(256, bad, ref.SPLIT_MIXED)


def test_dihedral_variants_share_parity_class_keys():
    """Under the split, the ideal variants take <= 2 values in the (odd, odd) word and <= 4
    in the others; the real ones are the ideal ones up to a few bits (median shifts)."""
    rng = np.random.default_rng(4)
    sets = dihedral_ideal(rng.integers(0, 256, (50, 32), dtype=np.uint8))
    for s in sets:
        words = fast.pdq_parity_split(s).view(np.uint64)
        assert len(set(words[:, 3].tolist())) <= 2
        assert all(len(set(words[:, w].tolist())) <= 4 for w in range(3))
    real = real_dihedral_sets(10, 5)
    assert np.array_equal(dihedral_ideal(real[:, 0])[:, [0, 6]], real[:, [0, 6]])
    assert np.unpackbits(dihedral_ideal(real[:, 0]) ^ real, axis=2).sum(2).mean() < 16


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(16, 40), st.sampled_from(["ideal", "real",
                                                                        "random", "near"]),
       st.integers(1, 8), threads, impls, st.sampled_from([True, fast.SPLIT_MIXED]))
def test_mih_split_parity_with_dihedral_needles(seed, nsub, kind, m, nthreads, impl, split):
    """Split-parity and mixed-parity MIH = brute force, with needle sets whose probes
    coincide (dihedral) or not, and databases planted near those needles."""
    fast.set_popcount_impl(impl)
    rng = np.random.default_rng(seed)
    nq = int(rng.integers(0, 5))
    if kind == "real":
        needles = real_dihedral_sets(nq, seed)
    else:
        needles = dihedral_ideal(rng.integers(0, 256, (nq, 32), dtype=np.uint8))
        if kind == "random":
            needles = rng.integers(0, 256, (nq, 8, 32), dtype=np.uint8)
        if kind == "near":  # keys equal or 1-3 bits apart: the probe planner shares keys
            needles = _near_needle_sets(rng, nq)
    needles = needles[:, rng.permutation(8)[:m]]
    db = rng.integers(0, 256, (int(rng.integers(0, 80)), 32), dtype=np.uint8)
    if nq and len(db):
        picks = needles.reshape(-1, 32)[rng.integers(0, nq * m, len(db))]
        flips = rng.random((len(db), 256)) < rng.choice([0.0, 0.03, 0.08])
        db[::2] = (picks ^ np.packbits(flips, axis=1))[::2]
    radius = int(rng.choice([0, 3, 15, 31, 40, 64]))
    starts, widths = fast.mih_layout(256, nsub, split)
    tables = fast.mih_build(db, starts, widths, threads=nthreads, split_parity=split)
    assert_same(tables, ref.mih_build(db, starts, widths, split_parity=split))
    assert_same(fast.mih_range_search_multi(needles, db, starts, widths, *tables, radius,
                                            threads=nthreads, split_parity=split),
                ref.range_search_multi(needles, db, radius))


def _near_needle_sets(rng, nq):
    """(nq, 8, 32): one random code per query and 7 copies with 0-3 bits flipped each."""
    base = rng.integers(0, 256, (nq, 1, 32), dtype=np.uint8).repeat(8, axis=1)
    flips = np.zeros((nq, 8, 256), dtype=bool)
    for q in range(nq):
        for j in range(1, 8):
            flips[q, j, rng.choice(256, int(rng.integers(0, 4)), replace=False)] = True
    return base ^ np.packbits(flips, axis=2)


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["ideal", "real", "random", "near"]),
       st.integers(1, 8),
       st.sampled_from([(12, True), (14, fast.SPLIT_MIXED), (12, False), (16, True),
                        (40, True), (8, False), (64, False)]),
       st.sampled_from([0, 1, 1000, 10**6, 10**7]),
       st.sampled_from([-1, 0, 1, 3, 15, 31, 40, 64, 300]))
def test_mih_probe_plan_twin_and_pigeonhole(seed, kind, m, layout, n, radius):
    """The probe plan equals its twin, and every needle's radii satisfy the pigeonhole
    condition that makes the search exact: sum over tables (rho + 1) >= radius + 1, or one
    table enumerated whole. One needle: the classic plan."""
    rng = np.random.default_rng(seed)
    if kind == "real":
        needles = real_dihedral_sets(1, seed)[0]
    elif kind == "ideal":
        needles = dihedral_ideal(rng.integers(0, 256, (1, 32), dtype=np.uint8))[0]
    elif kind == "near":
        needles = _near_needle_sets(rng, 1)[0]
    else:
        needles = rng.integers(0, 256, (8, 32), dtype=np.uint8)
    needles = needles[rng.permutation(8)[:m]]
    nsub, split = layout
    starts, widths = fast.mih_layout(256, nsub, split)
    plan = fast.mih_probe_plan(needles, starts, widths, n, radius, split_parity=split)
    assert_same((plan,), (ref.mih_probe_plan(needles, starts, widths, n, radius,
                                             split_parity=split),))
    assert plan.shape == (nsub, m)
    assert (fast.MIH_NS_PER_PROBE, fast.MIH_NS_PER_CANDIDATE) == (ref.MIH_NS_PER_PROBE,
                                                                  ref.MIH_NS_PER_CANDIDATE)
    if radius < 0:
        assert np.all(plan == -1)
        return
    for j in range(m):
        assert (plan[:, j] + 1).sum() >= radius + 1 or np.any(plan[:, j] >= widths)
    s, a = divmod(radius, nsub)
    classic = np.where(np.arange(nsub) <= a, s, s - 1)
    if m == 1:
        np.testing.assert_array_equal(plan[:, 0], classic)


def test_mih_probe_plan_shares_dihedral_keys():
    """On real dihedral needles at 10M codes the plan costs less (model) than probing every
    distinct key at the classic radii: keys shared by several needles are widened instead."""
    starts, widths = fast.mih_layout(256, 12, True)
    sets = real_dihedral_sets(6, 11)
    split = ref.pdq_parity_split(sets.reshape(-1, 32)).reshape(6, 8, 32)
    s, a = divmod(31, 12)
    cheaper = 0
    for needles, keyed in zip(sets, split):
        plan = fast.mih_probe_plan(needles, starts, widths, 10**7, 31, split_parity=True)
        cost = classic = 0.0
        for t in range(12):
            keys = ref.substring_keys(keyed, int(starts[t]), int(widths[t])).tolist()
            for key in set(keys):
                rho = plan[t, keys.index(key)]
                cost += ref._ball_cost(10**7, int(widths[t]), int(rho))
                classic += ref._ball_cost(10**7, int(widths[t]), s if t <= a else s - 1)
        assert cost <= classic
        cheaper += cost < classic
    assert cheaper >= 4


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 4, 8]), st.integers(0, 300),
       st.one_of(st.integers(1, 5), st.integers(30, 70)), st.integers(-1, 64), impls,
       st.sampled_from([8, 32]))
def test_bucket_range_search(seed, key_bits, n, m, radius, impl, nbytes):
    """Rows sorted into buckets by key: the kernel reads only the needles' buckets given by
    the masks, and finds there exactly the rows within the radius (some buckets empty, some
    named by several needles, more needles than one pass takes)."""
    fast.set_popcount_impl(impl)
    rng = np.random.default_rng(seed)
    buckets = 1 << key_bits
    counts = rng.multinomial(n, rng.dirichlet(np.full(buckets, 0.3)))
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    database = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    needles = rng.integers(0, 256, (m, nbytes), dtype=np.uint8)
    if n:
        needles[0] = database[rng.integers(n)]
    keys = rng.integers(0, buckets, m)
    masks = np.unique(rng.integers(0, buckets, rng.integers(0, buckets + 1)))
    got = fast.bucket_range_search(needles, keys, masks, offsets, database, radius)
    expected = ref.bucket_range_search(needles, keys, masks, offsets, database, radius)
    assert_same(got, expected)


def test_bucket_range_search_reads_past_a_scan_block_and_rejects_bad_buckets():
    rng = np.random.default_rng(4)
    database = rng.integers(0, 256, (10_000, 8), dtype=np.uint8)
    offsets = np.array([0, 2, 9_999, 10_000], np.int64)
    with pytest.raises(ValueError, match="power of two"):
        fast.bucket_range_search(database[:1], [0], [0], offsets, database, 10)
    offsets = np.array([0, 9_000, 9_000, 10_000], np.int64)[[0, 1, 3]]
    needles = database[[8_500]]
    rows, which = fast.bucket_range_search(needles, [0], [0], offsets, database, 64)
    np.testing.assert_array_equal(rows, np.arange(9_000))  # bucket 0 only, every row
    assert (which == 0).all()
    with pytest.raises(ValueError, match="offsets"):
        fast.bucket_range_search(needles, [0], [0], offsets[::-1], database, 64)
    with pytest.raises(ValueError, match="keys"):
        fast.bucket_range_search(needles, [2], [0], offsets, database, 64)
