"""phash/dhash/ahash in exact mode are bit-identical to imagehash on the same PIL image."""
import imagehash
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

import hashmatch as hm
from hashmatch.hashers import imagehash_compat
from conftest import corpus_files

ORACLES = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "ahash": imagehash.average_hash,
}


@pytest.mark.parametrize("algorithm", sorted(ORACLES))
def test_exact_matches_imagehash_on_public_corpus(algorithm):
    files = corpus_files()
    assert len(files) == 480
    mismatches = [f.name for f in files
                  if hm.hash_file(f, algorithm, exact=True).hex() != str(ORACLES[algorithm](Image.open(f)))]
    assert mismatches == []


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 700), height=st.integers(1, 700), seed=st.integers(0, 2**32 - 1),
       grey=st.booleans(), kind=st.sampled_from(["noise", "gradient", "flat", "blocks"]))
def test_exact_matches_imagehash_on_generated_images(width, height, seed, grey, kind):
    rng = np.random.default_rng(seed)
    if kind == "noise":
        arr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    elif kind == "flat":
        arr = np.full((height, width, 3), rng.integers(0, 256, 3), dtype=np.uint8)
    elif kind == "gradient":
        arr = np.linspace(0, 255, width * height * 3).reshape(height, width, 3).astype(np.uint8)
    else:
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        arr = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.NEAREST))
    image = Image.fromarray(arr).convert("L" if grey else "RGB")
    for algorithm, oracle in ORACLES.items():
        assert hm.hash_image(image, algorithm, exact=True).hex() == str(oracle(image))


@pytest.mark.parametrize("hash_size", [8, 16])
def test_hash_size_parameter_matches_imagehash(hash_size):
    image = Image.open(corpus_files()[0])
    assert imagehash_compat.phash(image, hash_size).hex() == str(imagehash.phash(image, hash_size))
    assert imagehash_compat.dhash(image, hash_size).hex() == str(imagehash.dhash(image, hash_size))


def test_hash_size_that_is_not_whole_words_is_refused():
    with pytest.raises(hm.HashFormatError):
        imagehash_compat.phash(Image.new("RGB", (50, 50)), hash_size=4)


def test_fast_mode_stays_close_to_exact():
    # The drift budget recorded in benchmarks/RESULTS.md; a regression in the fast path shows here.
    files = corpus_files()[::8]
    drift = [hm.hash_file(f, "phash") - hm.hash_file(f, "phash", exact=True) for f in files]
    assert np.percentile(drift, 99) <= 8


@pytest.mark.parametrize("size_in, size_out", [((253, 200), (32, 32)), ((640, 33), (9, 8)),
                                               ((128, 128), (32, 32)), ((1000, 581), (8, 8))])
def test_lanczos_weights_are_pillows(size_in, size_out):
    # Fast phash applies Pillow's LANCZOS coefficients in float; Pillow rounds them to 22-bit
    # fixed point and rounds each pass to 8 bits, so the results agree to within ~1 level.
    rng = np.random.default_rng(7)
    (height, width), (out_w, out_h) = size_in, size_out
    pixels = (rng.random((height, width)) * 255).astype(np.uint8)
    pillow = np.asarray(Image.fromarray(pixels).resize((out_w, out_h), Image.Resampling.LANCZOS))
    ours = (imagehash_compat.lanczos_weights(height, out_h) @ pixels
            @ imagehash_compat.lanczos_weights(width, out_w).T)
    assert np.abs(ours - pillow).max() <= 1.0


def test_fast_phash_is_the_exact_pipeline_without_its_rounding():
    # Same decoded image: fast phash (float LANCZOS + DCT in one product) vs imagehash's steps
    # on the same reduced image. Only coefficients within rounding of the median may differ.
    for path in corpus_files()[::40]:
        image = hm.decode.load_image(path, mode="L", draft_min_side=128)
        fast = imagehash_compat.phash(image, exact=False)
        reduced = imagehash_compat._grey_reduced(image, (32, 32))
        assert fast - imagehash_compat.phash(reduced, exact=True) <= 4, path.name


def test_fast_phash_dhash_ahash_stay_within_2_bits_of_exact_at_p99():
    # README and `hashmatch hash --help` state these figures (benchmarks/phash_fast.py over
    # every image of ../shared/data: p99 2 / 2 / 1); a quarter of the corpus checks them.
    files = corpus_files()[::4]
    for algorithm in ("phash", "dhash", "ahash"):
        drift = [hm.hash_file(f, algorithm) - hm.hash_file(f, algorithm, exact=True)
                 for f in files]
        assert np.percentile(drift, 99) <= 2, (algorithm, sorted(drift)[-5:])
