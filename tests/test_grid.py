"""The gradient-grid hash: stable under re-encoding and resizing, far between different images,
deterministic, and its dihedral variants equal the hashes of the transposed images."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hashmatch.hashers import grid

from test_regions import photo_like


def distance(a, b) -> int:
    return int(np.unpackbits(np.bitwise_xor(a, b)).sum())


def reencode(image, quality=50) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_shape_and_padding():
    code = grid.grid_codes(photo_like(1))[0]
    assert code.dtype == np.uint8 and code.shape == (grid.NBITS // 8,)
    bits = np.unpackbits(code)
    assert not bits[grid.INFORMATIVE_BITS:].any()  # padding is always zero
    assert 0.3 < bits[:grid.INFORMATIVE_BITS].mean() < 0.7  # balanced-ish


def test_deterministic():
    image = photo_like(2)
    assert np.array_equal(grid.grid_codes(image), grid.grid_codes(image.copy()))


@pytest.mark.parametrize("seed", range(5))
def test_reencode_and_resize_stay_close(seed):
    image = photo_like(seed, (640, 480))
    code = grid.grid_codes(image)[0]
    assert distance(code, grid.grid_codes(reencode(image, 40))[0]) <= 24
    assert distance(code, grid.grid_codes(image.resize((213, 160)))[0]) <= 24
    assert distance(code, grid.grid_codes(image.resize((1280, 960)))[0]) <= 24


def test_different_images_are_far():
    codes = [grid.grid_codes(photo_like(seed))[0] for seed in range(8)]
    far = [distance(a, b) for i, a in enumerate(codes) for b in codes[i + 1:]]
    assert min(far) >= 60 and np.median(far) >= 90


def test_dihedral_variants_match_transposed_images():
    image = photo_like(9, (320, 320))
    variants = grid.grid_codes(image, dihedral=True)
    assert variants.shape == (8, 32)
    T = Image.Transpose
    # PDQ's dihedral order: rot90 is counter-clockwise (PIL ROTATE_90), flipx flips rows.
    for index, transpose in ((1, T.ROTATE_90), (2, T.ROTATE_180), (3, T.ROTATE_270),
                             (4, T.FLIP_TOP_BOTTOM), (5, T.FLIP_LEFT_RIGHT), (6, T.TRANSPOSE),
                             (7, T.TRANSVERSE)):
        own = grid.grid_codes(image.transpose(transpose))[0]
        assert distance(own, variants[index]) <= 6, index


def test_flat_image_does_not_crash():
    code = grid.grid_codes(Image.new("RGB", (100, 100), (128, 128, 128)))[0]
    assert code.shape == (32,)


def test_fingerprint():
    fp = grid.grid_hash_image(photo_like(3))
    assert fp.algorithm == "grid" and fp.nbits == 256
