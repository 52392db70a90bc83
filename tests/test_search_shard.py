"""hashmatch.index.search_shard (one scan per stored role, the crop-window candidate stage)
equals a brute-force search over every stored row on small random shards."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashmatch import regions as rg
from hashmatch._hamming import distance_matrix
from hashmatch.fingerprint import Fingerprint
from hashmatch.index import _duplicate_groups, _Shard, search_shard

STORED = ["full", "content", "embedded", "crop:l12", "crop:t12", "crop:r12", "crop:b12"]
QUERY = [("full", v) for v in ("original", "rot90", "rot180", "flipy")] + [
    ("content", "original"), ("content", "flipy"), ("embedded", "original"),
    ("embedded:1", "flipy"), ("framed:1", "original"), ("deskewed", "original")]


def _near(code, rng, bits):
    flips = np.zeros(256, bool)
    flips[rng.choice(256, bits, replace=False)] = True
    return code ^ np.packbits(flips, bitorder="little")


@st.composite
def shards(draw):
    """A shard of 1-30 items (full frame + some regions and crop windows each, item order
    or shuffled, some removed, some of low quality) whose rows lie at many distances from
    the query's needles, and the needles."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    needles = [(Fingerprint("pdq", rng.integers(0, 256, 32, dtype=np.uint8),
                            int(rng.choice([100, 100, 100, 30]))), region, variant)
               for region, variant in QUERY[: draw(st.integers(1, len(QUERY)))]]
    n_items = draw(st.integers(1, 30))
    fp_ids, items, codes, names, qualities = [], [], [], [], []
    for item in range(n_items):
        kinds = ["full"] + [name for name in STORED[1:] if rng.random() < 0.5]
        for name in kinds:
            anchor = needles[rng.integers(0, len(needles))][0].bits
            code = _near(anchor, rng, int(rng.choice([0, 5, 20, 40, 60, 80, 90, 100, 128])))
            fp_ids.append(len(fp_ids))
            items.append(item)
            codes.append(code)
            names.append(name)
            qualities.append(int(rng.choice([100, 100, 100, 20, -1])))
    order = rng.permutation(len(fp_ids)) if draw(st.booleans()) else np.arange(len(fp_ids))
    shard = _Shard("pdq", 256)
    shard.append(np.asarray(fp_ids)[order], np.asarray(items)[order],
                 np.asarray(codes)[order], np.asarray(names, object)[order],
                 np.full(len(fp_ids), "original", object), np.asarray(qualities)[order])
    if n_items > 2 and draw(st.booleans()):
        shard.remove_items([0])
    return shard, needles


def brute_force(shard, needles, max_distance, margin, min_quality, use_regions):
    """Item -> best score, from every (needle, live row) pair, then the decision rule."""
    if max_distance is None:
        max_distance = rg.PDQ_MAX_DISTANCE if use_regions else 31
    if margin is None:
        margin = rg.PDQ_MARGIN if use_regions else 0
    if min_quality is None and use_regions:
        min_quality = rg.MIN_QUALITY
    radius = min(256, max_distance + margin)
    needles = [n for n in needles if min_quality is None or n[0].quality >= min_quality]
    rows = np.nonzero(shard.live[:shard.n])[0]
    if min_quality is not None:
        q = shard.qualities[rows]
        rows = rows[(q < 0) | (q >= min_quality)]
    if not needles or not len(rows):
        return {}
    stored = shard.codes_of(rows)
    dist = distance_matrix(stored, np.stack([fp.bits for fp, _, _ in needles])).astype(int)
    best = {}
    for i, row in enumerate(rows):
        name = shard.names[shard.region_codes[row]]
        for k, (_, region, variant) in enumerate(needles):
            if rg.stored_role(name) not in rg.search_roles(region, variant) or dist[i, k] > radius:
                continue
            penalty = max(rg.region_penalty(name), rg.region_penalty(region)) if use_regions else 0
            item = int(shard.item_ids[row])
            best[item] = min(best.get(item, 1 << 30), int(dist[i, k]) + penalty)
    if not best:
        return {}
    items = np.array(sorted(best))
    scores = np.array([best[i] for i in items])
    if margin <= 0:
        keep = scores <= max_distance
    else:
        groups = np.arange(len(items))
        contenders = np.nonzero(scores < scores.min() + margin)[0]
        if len(contenders) > 1:
            full = shard.full_rows_of(items[contenders], np.full(len(contenders), -1))
            assert (full >= 0).all()
            groups[contenders] = contenders[_duplicate_groups(shard.codes_of(full))]
        keep = rg.select_matches(scores[None], max_distance, margin, groups=groups[None])[0]
    return {int(i): int(s) for i, s in zip(items[keep], scores[keep])}


def _scores(found):
    return {item: value[0][0] for item, value in found.items()}


@settings(max_examples=150, deadline=None)
@given(shards(), st.sampled_from([None, 0, 31, 76, 100, 128, 256]),
       st.sampled_from([None, 0, 12]), st.sampled_from([None, 0]), st.booleans())
def test_search_equals_brute_force(shard_needles, max_distance, margin, min_quality,
                                   use_regions):
    shard, needles = shard_needles
    got = search_shard(shard, "pdq", needles, max_distance, min_quality, margin, use_regions)
    assert _scores(got) == brute_force(shard, needles, max_distance, margin, min_quality,
                                       use_regions)
    for item, (_, _, distance, qregion, qvariant, sregion, _, _, _) in got.items():
        # the evidence is a real pair of the search
        assert rg.stored_role(sregion) in rg.search_roles(qregion, qvariant)
        assert 0 <= distance <= 256


@settings(max_examples=60, deadline=None)
@given(shards(), st.sampled_from([None, 76, 128]))
def test_crop_candidate_stage_with_full_slack_is_the_exhaustive_search(monkeypatch_module,
                                                                       shard_needles,
                                                                       max_distance):
    """With a candidate radius covering every code, checking crop windows only for the
    candidate items finds exactly what scanning them finds."""
    shard, needles = shard_needles
    exhaustive = search_shard(shard, "pdq", needles, max_distance, None, None, True)
    monkeypatch_module.setattr(rg, "VERIFY_CROP_WINDOWS", True)
    monkeypatch_module.setattr(rg, "CANDIDATE_SLACK", 256)
    try:
        verified = search_shard(shard, "pdq", needles, max_distance, None, None, True)
    finally:
        monkeypatch_module.undo()
    assert _scores(verified) == _scores(exhaustive)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _one_item_shard(rows):
    """Item 7 with the given (region name, code) rows, plus 50 unrelated items."""
    rng = np.random.default_rng(3)
    names = [name for name, _ in rows] + ["full"] * 50
    codes = [code for _, code in rows] + list(rng.integers(0, 256, (50, 32), dtype=np.uint8))
    items = [7] * len(rows) + list(range(100, 150))
    shard = _Shard("pdq", 256)
    shard.append(np.arange(len(names)), items, np.asarray(codes), np.asarray(names, object),
                 np.full(len(names), "original", object), np.full(len(names), 100))
    return shard


def test_an_item_whose_crop_window_is_the_only_close_row_matches(monkeypatch):
    rng = np.random.default_rng(1)
    query = rng.integers(0, 256, 32, dtype=np.uint8)
    far = [_near(query, rng, 120), _near(query, rng, 118)]
    shard = _one_item_shard([("full", far[0]), ("content", far[1]),
                             ("crop:l12", _near(query, rng, 30)),
                             ("crop:r12", _near(query, rng, 125))])
    needles = [(Fingerprint("pdq", query, 100), "full", "original"),
               (Fingerprint("pdq", _near(query, rng, 128), 100), "full", "rot90")]
    found = search_shard(shard, "pdq", needles, None, None, None, True)
    assert list(found) == [7]
    _, _, distance, qregion, qvariant, sregion, _, _, _ = found[7]
    assert (distance, qregion, qvariant, sregion) == (30, "full", "original", "crop:l12")
    # a rotated needle never meets crop windows
    rotated = [(Fingerprint("pdq", query, 100), "full", "rot90")]
    assert search_shard(shard, "pdq", rotated, None, None, None, True) == {}


def test_crop_window_found_through_the_candidate_stage(monkeypatch):
    """Candidate mode: the item's full frame is within radius + slack of the needle, so its
    crop windows are checked; with a smaller slack it is not a candidate and not found."""
    rng = np.random.default_rng(2)
    query = rng.integers(0, 256, 32, dtype=np.uint8)
    shard = _one_item_shard([("full", _near(query, rng, 100)),
                             ("crop:t12", _near(query, rng, 40))])
    needles = [(Fingerprint("pdq", query, 100), "full", "original")]
    monkeypatch.setattr(rg, "VERIFY_CROP_WINDOWS", True)
    monkeypatch.setattr(rg, "CANDIDATE_SLACK", 24)  # candidate radius 88 + 24 >= 100
    found = search_shard(shard, "pdq", needles, None, None, None, True)
    assert list(found) == [7] and found[7][5] == "crop:t12" and found[7][2] == 40
    monkeypatch.setattr(rg, "CANDIDATE_SLACK", 8)  # 96 < 100: not a candidate
    assert search_shard(shard, "pdq", needles, None, None, None, True) == {}


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 80), st.integers(0, 2**32 - 1))
def test_duplicate_groups_are_the_components_of_near_pairs(n, seed):
    """Same partition as the general clustering (hashmatch.cluster), on chains of near
    codes, duplicates and unrelated codes."""
    from hashmatch.cluster import component_labels

    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    for i in range(1, n):
        if rng.random() < 0.5:  # near (or equal to) an earlier code: chains form
            codes[i] = _near(codes[rng.integers(0, i)], rng, int(rng.choice([0, 4, 8, 9])))
    got = _duplicate_groups(codes)
    expected = component_labels(codes, np.arange(n), rg.DUPLICATE_DISTANCE, threads=1)
    # the same partition: equal labels exactly where the reference's are equal
    assert ((got[:, None] == got[None, :]) == (expected[:, None] == expected[None, :])).all()
    if n <= 64:
        assert (got[got] == got).all()  # the small-set path labels by the group's first row
