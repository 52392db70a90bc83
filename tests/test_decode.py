"""Decoding: every input type and Pillow mode, EXIF orientation, limits, clear errors."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import hashmatch as hm
from hashmatch.decode import decode, load_image
from conftest import PDQ_REF

MODES_DIR = PDQ_REF / "images" / "misc-images" / "modes"
ORIGINAL = MODES_DIR / "original.jpg"


def _phash_distance(a, b):
    return hm.hash_image(a, "phash", exact=True) - hm.hash_image(b, "phash", exact=True)


@pytest.mark.parametrize("path", sorted(MODES_DIR.iterdir()), ids=lambda p: p.name)
def test_every_mode_file_decodes_to_the_same_picture(path):
    original = load_image(ORIGINAL)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == original.size
    # 1-bit is dithered, HSV/LAB round-trip lossy: the picture must still be the same one.
    assert _phash_distance(image, original) <= 8


@pytest.mark.parametrize("mode", ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "CMYK",
                                  "YCbCr", "I", "I;16", "F", "HSV", "LAB"])
def test_every_pillow_mode_in_memory(mode):
    base = Image.open(ORIGINAL).reduce(4)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
        assert image.mode.startswith("I;16")
    else:
        image = base.convert(mode)
    decoded = load_image(image)
    assert decoded.mode == "RGB" and decoded.size == base.size
    assert _phash_distance(decoded, base) <= 8


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (16, 16, 48, 48))
    arr = np.asarray(load_image(rgba))
    assert tuple(arr[0, 0]) == (255, 255, 255)
    assert tuple(arr[32, 32]) == (0, 0, 255)
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.info["transparency"] = 0
    assert tuple(np.asarray(load_image(palette))[0, 0]) == (255, 255, 255)


def test_inputs_path_bytes_fileobj_pil_array_agree():
    data = ORIGINAL.read_bytes()
    expected = hm.hash_file(ORIGINAL, "phash", exact=True)
    assert hm.hash_file(data, "phash", exact=True) == expected
    assert hm.hash_file(io.BytesIO(data), "phash", exact=True) == expected
    assert hm.hash_image(Image.open(ORIGINAL), "phash", exact=True) == expected
    assert hm.hash_image(np.asarray(Image.open(ORIGINAL)), "phash", exact=True) == expected


@pytest.mark.parametrize("orientation, to_stored", [
    (3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90),
    (8, Image.Transpose.ROTATE_270), (2, Image.Transpose.FLIP_LEFT_RIGHT)])
def test_exif_orientation_makes_a_file_hash_like_its_upright_twin(tmp_path, orientation, to_stored):
    upright = Image.open(ORIGINAL).reduce(2)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated-{orientation}.png"
    upright.transpose(to_stored).save(path, exif=exif)
    for algorithm in ("pdq", "phash"):
        twin = hm.hash_image(upright, algorithm, exact=True)
        assert hm.hash_file(path, algorithm, exact=True) == twin
        assert hm.hash_file(path, algorithm, exact=True, exif_transpose=False) - twin > 16


def test_exif_rotn_reference_photos_come_out_upright():
    # Four shots of one desk (not pixel twins), stored sideways or upside down with EXIF tags
    # saying so: applied, the tags turn the sideways ones portrait; ignored, they stay as stored.
    folder = PDQ_REF / "images" / "reg-test-input" / "exif-rotn"
    for n, portrait in ((1, False), (3, False), (6, True), (8, True)):
        width, height = load_image(folder / f"exif-rotn-{n}.jpg").size
        assert (height > width) == portrait, n
        width, height = load_image(folder / f"exif-rotn-{n}.jpg", exif_transpose=False).size
        assert width > height, n


def test_animated_gif_hashes_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (64, 64), c) for c in ("white", "black")]
    draw_target = frames[0].copy()
    draw_target.paste((0, 0, 0), (0, 0, 32, 64))
    frames[0] = draw_target
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert hm.hash_file(path, "phash", exact=True) == hm.hash_image(frames[0], "phash", exact=True)


def _png_header_only(width, height):
    def chunk(kind, payload):
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))


def _jpeg_bytes():
    buf = io.BytesIO()
    Image.open(ORIGINAL).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("make, reason", [
    (lambda: b"", "empty file"),
    (lambda: _jpeg_bytes()[:5000], "truncated"),
    (lambda: b"hello, I am a text file\n" * 20, "not an image"),
    (lambda: b"%PDF-1.7\n" + b"x" * 100, "unsupported format"),
    (lambda: _png_header_only(30000, 30000), "too large"),
    (lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
])
def test_bad_input_raises_image_error_naming_file_and_reason(tmp_path, make, reason):
    path = tmp_path / "evidence file.jpg"
    path.write_bytes(make())
    with pytest.raises(hm.ImageError) as info:
        hm.hash_file(path)
    assert info.value.source == str(path)
    assert info.value.reason.startswith(reason)
    assert str(path) in str(info.value)


def test_size_limits_are_configurable(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(_jpeg_bytes())
    with pytest.raises(hm.ImageError, match="too large"):
        decode(path, max_bytes=1000)
    with pytest.raises(hm.ImageError, match="too large"):
        decode(path, max_pixels=1000)
    assert decode(path).image.size == (1600, 1004)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(hm.ImageError, match="file not found"):
        hm.hash_file(tmp_path / "nope.jpg")
    with pytest.raises(hm.ImageError, match="is a directory"):
        hm.hash_file(tmp_path)


def test_draft_decode_keeps_both_sides_at_least_the_minimum():
    decoded = decode(ORIGINAL, mode="L", draft_min_side=128)
    assert decoded.image.mode == "L"
    assert min(decoded.image.size) >= 128 and decoded.image.size[0] < 1600
    assert decoded.original_size == (1600, 1004)


def test_hash_files_keeps_order_and_reports_errors(tmp_path):
    good = [PDQ_REF / "images" / "bridge-mods" / n for n in ("aaa-orig.jpg", "blur-a-lot.jpg")]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    paths = [good[0], bad, good[1], good[0], tmp_path / "missing.png"]
    results = hm.hash_files(paths, "phash", workers=2)
    assert [r.path for r in results] == [str(p) for p in paths]
    assert [r.ok for r in results] == [True, False, True, True, False]
    assert results[1].error.startswith("not an image")
    assert results[4].error.startswith("file not found")
    assert results[0].fingerprint == results[3].fingerprint == hm.hash_file(good[0], "phash")
    assert results[0].sha256 == results[3].sha256 and len(results[0].sha256) == 64


# -- the lean JPEG path (libjpeg-turbo through simplejpeg) ---------------------------------
from hashmatch import decode as decoding  # noqa: E402
from conftest import corpus_files  # noqa: E402

EXIF_ROTN = PDQ_REF / "images" / "reg-test-input" / "exif-rotn"


def _pillow_decode(monkeypatch, source, **options):
    with monkeypatch.context() as patch:
        patch.setattr(decoding, "_simplejpeg", None)
        return decode(source, **options)


def _lean_decode(monkeypatch, source, **options):
    """decode() that must take the lean path: Pillow's opener is not reachable."""
    def no_pillow(*args, **kwargs):
        raise AssertionError("fell back to Pillow")
    with monkeypatch.context() as patch:
        patch.setattr(decoding, "_open_checked", no_pillow)
        return decode(source, **options)


def _same_decode(a, b):
    assert a.image.mode == b.image.mode == "L"
    assert a.image.size == b.image.size
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.full_size == b.full_size
    assert (a.format, a.original_size, a.sha256, a.file_size) == \
        (b.format, b.original_size, b.sha256, b.file_size)


LEAN_FILES = [ORIGINAL, *sorted(EXIF_ROTN.iterdir()), *corpus_files()[::60]]


@pytest.mark.parametrize("path", LEAN_FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("min_side", [64, 128, 240])
def test_lean_jpeg_decode_gives_pillows_draft_pixels(monkeypatch, path, min_side):
    # Same libjpeg, same power-of-two DCT scale, same Y channel, same EXIF orientation.
    for turn in (True, False):
        options = dict(mode="L", draft_min_side=min_side, exif_transpose=turn)
        _same_decode(_lean_decode(monkeypatch, path, **options),
                     _pillow_decode(monkeypatch, path, **options))


def _jpeg_with(image, **save_options):
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, **save_options)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(0, 10))
def test_lean_jpeg_applies_every_exif_orientation_as_pillow(monkeypatch, orientation):
    picture = Image.open(ORIGINAL).reduce(4)  # 400 x 251: drafted at min side 64 and 128
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg_with(picture, exif=exif)
    for min_side in (64, 128):
        options = dict(mode="L", draft_min_side=min_side)
        lean = _lean_decode(monkeypatch, data, **options)
        _same_decode(lean, _pillow_decode(monkeypatch, data, **options))
        assert (lean.image.height > lean.image.width) == (orientation in (5, 6, 7, 8))


def test_lean_jpeg_reads_xmp_orientation_as_pillow(monkeypatch):
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
           b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/"'
           b' tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    data = _jpeg_with(Image.open(ORIGINAL).reduce(4), xmp=xmp)
    lean = _lean_decode(monkeypatch, data, mode="L", draft_min_side=64)
    _same_decode(lean, _pillow_decode(monkeypatch, data, mode="L", draft_min_side=64))
    assert lean.image.height > lean.image.width


def test_lean_jpeg_leaves_what_it_does_not_read_exactly_to_pillow(monkeypatch):
    plain = _jpeg_with(Image.open(ORIGINAL).reduce(4))
    assert decoding._jpeg_orientation(plain) == 1

    def with_segment(marker, payload):
        return plain[:2] + marker + struct.pack(">H", len(payload) + 2) + payload + plain[2:]

    exif = Image.Exif()
    exif[0x0112] = 3
    exif_block = exif.tobytes()  # starts with "Exif\0\0", as in the APP1 segment
    twice = with_segment(b"\xff\xe1", exif_block)
    twice = twice[:2] + twice[2:2 + 4 + len(exif_block)] * 2 + twice[2 + 4 + len(exif_block):]
    assert decoding._jpeg_orientation(with_segment(b"\xff\xe1", exif_block)) == 3
    assert decoding._jpeg_orientation(twice) is None  # Pillow concatenates several blocks
    assert decoding._jpeg_orientation(with_segment(b"\xff\xe2", b"MPF\0" + b"\0" * 20)) is None
    assert decoding._jpeg_orientation(with_segment(b"\xff\xe1", b"Exif\0\0junk")) is None
    cmyk = MODES_DIR / "CMYK.jpg"
    assert decoding._lean_jpeg_grey(cmyk.read_bytes(), "x", 64, 10**9, True) is None
    for data in (twice, cmyk.read_bytes()):  # Pillow decodes them, the same as without simplejpeg
        _same_decode(decode(data, mode="L", draft_min_side=64),
                     _pillow_decode(monkeypatch, data, mode="L", draft_min_side=64))


class _HeaderOnly:
    """simplejpeg whose pixel decoder must not be reached."""

    def __init__(self, real):
        self.decode_jpeg_header = real.decode_jpeg_header

    def decode_jpeg(self, *args, **kwargs):
        raise AssertionError("decoded pixels of an image over the limit")


def test_lean_jpeg_enforces_the_pixel_limit_before_decoding(monkeypatch, tmp_path):
    monkeypatch.setattr(decoding, "_simplejpeg", _HeaderOnly(decoding._simplejpeg))
    path = tmp_path / "a.jpg"
    path.write_bytes(_jpeg_bytes())
    with pytest.raises(hm.ImageError, match="too large") as info:
        decode(path, mode="L", draft_min_side=64, max_pixels=1000)
    assert info.value.source == str(path)
    # A header claiming 60000 x 60000 (3.6 Gpx) over a small picture's data.
    data = bytearray(_jpeg_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    path.write_bytes(bytes(data))
    for algorithm in ("phash", "dhash", "ahash", "pdq"):
        with pytest.raises(hm.ImageError, match="too large"):
            hm.hash_file(path, algorithm)


@pytest.mark.parametrize("damage", ["truncated", "garbage scan", "no SOF", "zero size"])
def test_lean_jpeg_damaged_files_fail_or_decode_exactly_as_pillow(monkeypatch, tmp_path, damage):
    data = bytearray(_jpeg_bytes())
    if damage == "truncated":
        data = data[:5000]
    elif damage == "garbage scan":
        start = data.index(b"\xff\xda") + 200
        data[start:start + 3000] = np.random.default_rng(1).integers(0, 255, 3000, np.uint8).tobytes()
    elif damage == "no SOF":
        sof = data.index(b"\xff\xc0")
        data[sof + 1] = 0xC9  # arithmetic-coded SOF libjpeg-turbo's build may refuse
    else:
        sof = data.index(b"\xff\xc0")
        data[sof + 5:sof + 9] = b"\0\0\0\0"
    path = tmp_path / "evidence file.jpg"
    path.write_bytes(bytes(data))
    outcomes = []
    for run in (decode, lambda *a, **k: _pillow_decode(monkeypatch, *a, **k)):
        try:
            outcomes.append(run(path, mode="L", draft_min_side=64))
        except hm.ImageError as exc:
            assert exc.source == str(path) and str(path) in str(exc)
            outcomes.append((exc.reason, exc.detail))
    if isinstance(outcomes[0], tuple) or isinstance(outcomes[1], tuple):
        assert outcomes[0] == outcomes[1]
    else:
        _same_decode(*outcomes)
    if damage == "truncated":
        assert outcomes[0][0] == "truncated"
