"""Issue 16 items 8 and 9: decodes are bounded in bytes, not only pixels; truncated JPEGs with
forged headers are errors; constant float/int images hash instead of dividing by zero."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import hashmatch as hm
from hashmatch import decode as decoding
from hashmatch.errors import ImageError


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width, height, depth, colour_type) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + _png_chunk(b"IEND", b""))


def jpeg_bytes(width, height, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), np.uint8)
    image = Image.fromarray(small, "RGB").resize((width, height), Image.BILINEAR)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def forged_jpeg(width, height) -> bytes:
    real = jpeg_bytes(16, 16)
    at = real.index(b"\xff\xc0")
    return real[: at + 5] + struct.pack(">HH", height, width) + real[at + 9:]


# -- item 9: float / int32 / 16-bit modes ------------------------------------------------------
def _tiff(array, mode=None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode).save(out, "TIFF")
    return out.getvalue()


@pytest.mark.parametrize("array", [
    np.full((64, 64), -5.0, np.float32), np.full((64, 64), 1e9, np.float32),
    np.full((64, 64), -7, np.int32), np.full((64, 64), 70000, np.int32),
    np.full((64, 64), 3.0, np.float32),
], ids=["F-negative", "F-huge", "I-negative", "I-huge", "F-in-range"])
def test_constant_float_and_int_images_are_constant_grey(tmp_path, array):
    path = tmp_path / "constant.tif"
    path.write_bytes(_tiff(array))
    decoded = decoding.decode(path, mode="L")
    values = np.asarray(decoded.image)
    assert values.min() == values.max()  # one grey, whatever it is
    fp = hm.hash_file(path)  # was ZeroDivisionError
    assert fp.algorithm == "pdq"
    with hm.Index.open(tmp_path / "x.hmdb", create=True) as index:
        index.add_hashes([fp.hex()])
        assert isinstance(index.query(path), list)


def test_float_image_with_a_range_still_scales_to_8_bit():
    ramp = np.linspace(-1000.0, 1000.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    values = np.asarray(decoding.decode(_tiff(ramp), mode="L").image)
    assert values.min() == 0 and values.max() == 255


# -- item 8: bytes, not pixels --------------------------------------------------------------
def test_16_bit_rgba_png_over_the_byte_budget_is_refused_before_decoding():
    data = png_header(13000, 13000, 16, 6)  # 169 Mpx: under the pixel limit, GBs to decode
    with pytest.raises(ImageError) as caught:
        decoding.decode(data)
    assert caught.value.reason == "too large"
    assert "MB" in str(caught.value)


def test_byte_budget_is_configurable_by_argument_and_environment(monkeypatch):
    data = png_header(3000, 3000, 8, 2)  # 9 Mpx RGB: ~36 MB
    with pytest.raises(ImageError, match="too large"):
        decoding.decode(data, max_decode_bytes=8 * 1024 * 1024)
    monkeypatch.setenv("HASHMATCH_MAX_DECODE_MB", "8")
    with pytest.raises(ImageError, match="too large"):
        decoding.decode(data)
    monkeypatch.setenv("HASHMATCH_MAX_DECODE_MB", "lots")
    with pytest.raises(ValueError, match="HASHMATCH_MAX_DECODE_MB"):
        decoding.decode(data)


def test_jpeg_over_the_budget_is_draft_decoded_to_fit():
    data = jpeg_bytes(2048, 1536)
    decoded = decoding.decode(data, max_decode_bytes=4 * 1024 * 1024)  # exact mode asked
    width, height = decoded.image.size
    assert decoded.original_size == (2048, 1536)
    assert width * height * 4 <= 4 * 1024 * 1024 and width < 2048
    assert decoded.full_size == (2048, 1536)
    full = decoding.decode(data)  # within the default budget: full resolution, as before
    assert full.image.size == (2048, 1536)


@pytest.mark.parametrize("exact", [False, True])
def test_truncated_jpeg_with_forged_huge_header_is_an_error(tmp_path, exact):
    path = tmp_path / "forged.jpg"
    path.write_bytes(forged_jpeg(13000, 13000))  # ~700 bytes claiming 169 Mpx
    with pytest.raises(ImageError) as caught:
        hm.hash_file(path, exact=exact)
    assert caught.value.reason == "truncated"
    assert str(path) in str(caught.value)


def test_small_real_jpegs_still_decode_in_both_modes():
    data = jpeg_bytes(640, 480)
    assert decoding.decode(data).image.size == (640, 480)
    assert decoding.decode(data, mode="L", draft_min_side=64).image.size[0] <= 640
