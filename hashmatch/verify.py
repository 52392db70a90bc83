"""Verification: is a candidate the same picture? An absolute test on stored pixels.

The search (hashmatch.search.search_shard) proposes candidates from PDQ distances, which are
relative by nature: an unrelated photo can come within 60 bits of some stored photo, and
documents made from one template (ID cards of one design, receipts of one shop) sit 14-30
bits apart, inside any radius that also finds edited copies. So every candidate whose stored
item has pixels is checked against what the store keeps of it (``VerificationData``,
<= ``BUDGET_BYTES``: a grey JPEG thumbnail of up to ~10,000 pixels, where the stored regions
lie on it, and a *detail code* of 64 bits for each of ~240 tiles of the picture), whatever
else the database holds:

1. **Register**: the pair the search found says which box of the query (on the query's grey
   copy, turned and mirrored as the pair says) corresponds to which stored region. The stored
   thumbnail is sampled into the query through that correspondence, refined side by side,
   by shifts and by a small turn (coordinate descent on the normalised correlation), so that
   a crop, a border or a loose trim the search only roughly fitted lands on the stored
   pixels. Only the paired query box (with a little slack) is compared: what lies outside it
   is frame, border or page.
2. **Compare the layout** tile by tile on the thumbnail, after one robust brightness/contrast
   fit (colour edits, greyscale, gamma; a caption does not pull it).
3. **Compare the detail** tile by tile at several times the thumbnail's resolution: each
   stored tile's code holds the signs of its 63 lowest DCT coefficients (against their
   median, as PDQ does for the whole picture), and the tiles with the most fine detail
   (text) a second code for each quarter at twice the resolution; the query is sampled at
   the same places through the registration (within 2 samples either way) and every
   coefficient it shows clearly (not near zero, where noise flips the sign) is compared.
   Letters, digits and faces are resolved here: another name or another total is another
   code.
4. **Decide**: the *same picture* agrees in its detail everywhere the query shows it, but
   for one connected area at most that something covers (a caption, a sticker, a banner);
   where that area is large, it must differ in its layout too (an overlay replaces the
   picture, where a sibling keeps its layout). A picture made from the same *template*
   agrees in its layout but not in its detail at several places (other names, other
   lines): "template". An unrelated picture agrees in neither. Every figure is in
   ``Verdict.evidence``.

Thresholds are measured (benchmarks/bench_precision.py, RESULTS.md "Precision"). Numpy only:
about 10 ms per verified candidate on the shared 2-core machine.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .policy import MATCH_POLICY
from .regions.names import RegionName
from .store.base import VERIFICATION_MAGIC

Box = tuple[int, int, int, int]
FBox = tuple[float, float, float, float]

# ---------------------------------------------------------------------------------------------
# stored data

MAGIC = VERIFICATION_MAGIC  # the stores count items by it (stats: verifiable_items)
# Older formats are read as outdated (not trusted; replaced when the file is indexed again):
# HMV2 (thumbnail + ORB keypoints, hashmatch 0.2.0), HMV3 (no fine codes, 0.3.0 development).
OLD_MAGICS = {b"HMV2": "hashmatch 0.2", b"HMV3": "an earlier hashmatch 0.3"}
# magic, thumbnail width and height, content box, embedded box (in 1/65535 of the picture),
# JPEG length, detail grid columns and rows, number of tiles with fine codes.
_HEADER = struct.Struct("<4sHH8HHBBH")
# Per item: header + JPEG bytes + the flat-tile bitmap + the detail codes of the other tiles
# + the fine-tile bitmap + their fine codes. The budget is 4 KB: the detail codes
# take up to ~2 KB, the thumbnail (a grey JPEG of up to 10,000 pixels, e.g. 100x70 for a
# photo) what they leave, and the fine codes what is left after both (a smaller thumbnail
# for more fine codes lost more copies than it saved false alarms: RESULTS.md).
BUDGET_BYTES = 4000
THUMB_PIXELS = 10_000
MIN_THUMB_PIXELS = 1_500
THUMB_QUALITY = 82
MAX_THUMB_SIDE = 400  # refuse anything larger when reading (hostile stores)
# The detail grid: about DETAIL_TILES tiles shaped to the picture; each tile is sampled at
# DETAIL_SAMPLES x DETAIL_SAMPLES and coded by the signs of the 63 lowest AC coefficients of
# its 8x8 DCT against their median, plus a "flat" bit (too little texture to code). Flat
# tiles are one bit of a bitmap; the others 8 bytes.
DETAIL_TILES = 240
DETAIL_MAX_SIDE = 40
DETAIL_SAMPLES = 16
DETAIL_FLAT_STD = 4.0
DETAIL_BYTES = 8
# Fine codes: the tiles with the most detail finer than their code can hold (text: a 16x16
# sampling of a tile gives 2-3 samples a letter, so two cards of one design with other
# digits in a field have the same code there) get a second code for each quarter of the
# tile, sampled at twice the resolution (4 x 8 bytes), at most FINE_MAX_TILES, and only
# where that finer detail is at least FINE_MIN_DETAIL grey levels (RMS).
FINE_MAX_TILES = 60
FINE_MIN_DETAIL = 6.0
# A quarter's code: the signs of its FINE_COEFFS lowest AC coefficients (by u + v) and the
# flat bit, 4 bytes; a tile's four quarters are compared together.
FINE_CODE_BYTES = 4
FINE_BYTES = 4 * FINE_CODE_BYTES


@dataclass(frozen=True)
class VerificationData:
    """A stored picture as the verifier needs it: grey thumbnail, region boxes on it, and
    the detail codes of its tiles."""

    thumb: np.ndarray  # (h, w) uint8
    content: FBox  # the stored "content" region, in thumbnail pixels
    embedded: FBox
    detail: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, DETAIL_BYTES), np.uint8))
    # (ny, nx) which tiles have fine codes, and those codes: (n, 2, 2, DETAIL_BYTES), the
    # tiles in row order, their quarters (top, bottom) x (left, right)
    fine_tiles: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    fine: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 2, FINE_CODE_BYTES),
                                                             np.uint8))

    def region_box(self, region: str) -> FBox | None:
        """Where stored region ``region`` lies on the thumbnail (crop windows from content)."""
        h, w = self.thumb.shape
        if region == "full":
            return (0.0, 0.0, float(w), float(h))
        if region == "content":
            return self.content
        if region == "embedded":
            return self.embedded
        from .regions import crop_window_box

        return crop_window_box(self.content, region)  # None for any other name


def _thumb_size(width: int, height: int, pixels: int) -> tuple[int, int]:
    scale = min(1.0, (pixels / max(1, width * height)) ** 0.5)
    tw = max(8, min(MAX_THUMB_SIDE, round(width * scale)))
    th = max(8, min(MAX_THUMB_SIDE, round(height * scale)))
    return tw, th


def _fraction_box(box, size) -> list[int]:
    w, h = size
    l, t, r, b = box
    return [max(0, min(65535, round(v / s * 65535))) for v, s in ((l, w), (t, h), (r, w), (b, h))]


def encode(image: Image.Image, content_box: Box, embedded_box: Box) -> bytes:
    """What the store keeps for verification of ``image`` (the decoded picture that was
    fingerprinted; boxes in its pixels): <= BUDGET_BYTES."""
    import simplejpeg

    grey = image if image.mode == "L" else image.convert("L")
    boxes = _fraction_box(content_box, grey.size) + _fraction_box(embedded_box, grey.size)
    nx, ny, codes, fine_detail, quarters = _stored_detail(grey)
    flat = (codes[:, :, DETAIL_BYTES - 1] & 1).astype(bool)
    flat_bitmap = np.packbits(flat.ravel()).tobytes()
    bitmap = len(flat_bitmap)
    detail = flat_bitmap + codes[~flat].tobytes()
    # The thumbnail first, as if every tile took its 8 bytes (registration and the layout
    # comparison need it as large as that leaves); fine codes get what is left over. Both
    # bitmaps (flat tiles, fine tiles) are always written.
    thumb_room = BUDGET_BYTES - _HEADER.size - nx * ny * DETAIL_BYTES - 2 * bitmap
    pixels = THUMB_PIXELS
    while True:
        tw, th = _thumb_size(grey.width, grey.height, pixels)
        small = _reduce_to(grey, tw, th)
        arr = np.ascontiguousarray(np.asarray(small, np.uint8)[:, :, None])
        data = simplejpeg.encode_jpeg(arr, quality=THUMB_QUALITY, colorspace="GRAY",
                                      colorsubsampling="Gray")
        if len(data) <= thumb_room or pixels <= MIN_THUMB_PIXELS:
            break
        pixels = max(MIN_THUMB_PIXELS, int(pixels * 0.8))
    room = BUDGET_BYTES - _HEADER.size - len(data) - len(detail) - bitmap
    wanted = np.where(~flat & (fine_detail >= FINE_MIN_DETAIL), fine_detail, 0).ravel()
    count = min(FINE_MAX_TILES, max(0, room // FINE_BYTES), int(np.count_nonzero(wanted)))
    fine_tiles = np.zeros(ny * nx, bool)
    fine_tiles[np.argsort(-wanted, kind="stable")[:count]] = True
    fine_tiles = fine_tiles.reshape(ny, nx)
    detail += np.packbits(fine_tiles.ravel()).tobytes() + tile_codes(
        quarters[fine_tiles], FINE_COEFFS).tobytes()
    return _HEADER.pack(MAGIC, tw, th, *boxes, len(data), nx, ny, count) + data + detail


def _dct_rows(size: int) -> np.ndarray:
    """The 8 lowest DCT-II basis rows for ``size`` samples."""
    x = np.arange(size)
    return np.cos(np.pi * (2 * x[None, :] + 1) * np.arange(8)[:, None] / (2 * size)).astype(
        np.float32)


_DCT = _dct_rows(DETAIL_SAMPLES)
# The 31 lowest AC coefficients by u + v (then nearest the diagonal), as indices into the 63
# that tile_coefficients returns.
FINE_COEFFS = np.array(sorted(range(1, 64), key=lambda i: (i // 8 + i % 8,
                                                          abs(i // 8 - i % 8)))[:31]) - 1


def detail_grid(width: int, height: int) -> tuple[int, int]:
    """Columns and rows of the detail grid of a picture of this size."""
    nx = max(2, min(DETAIL_MAX_SIDE, round((DETAIL_TILES * width / max(1, height)) ** 0.5)))
    ny = max(2, min(DETAIL_MAX_SIDE, round(DETAIL_TILES / nx)))
    return nx, ny


def tile_coefficients(patches: np.ndarray) -> np.ndarray:
    """(..., S, S) grey patches -> (..., 63): their 63 lowest AC DCT coefficients minus
    the coefficients' median (so that a sign is one bit of the code)."""
    coeffs = np.matmul(np.matmul(_DCT, patches.astype(np.float32)), _DCT.T)
    c = coeffs.reshape(coeffs.shape[:-2] + (64,))[..., 1:]
    return c - np.median(c, axis=-1, keepdims=True)


def tile_codes(patches: np.ndarray, coefficients=None) -> np.ndarray:
    """(..., S, S) grey patches -> packed uint8 codes: the signs of ``coefficients`` of
    tile_coefficients (all 63 by default: 8 bytes; FINE_COEFFS for a fine code: 4 bytes),
    then the flat bit."""
    bits = tile_coefficients(patches) > 0
    if coefficients is not None:
        bits = bits[..., coefficients]
    flat = patches.std(axis=(-2, -1)) < DETAIL_FLAT_STD
    return np.packbits(np.concatenate([bits, flat[..., None]], axis=-1), axis=-1)


def _sampled(grey: Image.Image, width: int, height: int) -> np.ndarray:
    # Box-reduce by a whole factor, then resample: about one area average per sample, as
    # the query's side does (hashmatch.verify._detail_agreement).
    factor = min(grey.width // width, grey.height // height)
    work = grey.reduce(factor) if factor >= 2 else grey
    return np.asarray(work.resize((width, height), Image.Resampling.BILINEAR), np.float32)


def _stored_detail(grey: Image.Image):
    """The detail grid of ``grey``: columns, rows, every tile's code (ny, nx, 8), how much
    detail each tile has beyond what its code holds (ny, nx: RMS grey levels), and every
    tile's quarters sampled at twice the resolution (ny, nx, 2, 2, S, S)."""
    nx, ny = detail_grid(grey.width, grey.height)
    s = DETAIL_SAMPLES
    coarse = _sampled(grey, nx * s, ny * s)
    codes = tile_codes(coarse.reshape(ny, s, nx, s).transpose(0, 2, 1, 3))
    fine = _sampled(grey, 2 * nx * s, 2 * ny * s)
    # What the tile's code cannot see: the fine sampling minus the coarse one (repeated).
    finer = fine - np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)
    fine_detail = np.sqrt((finer.reshape(ny, 2 * s, nx, 2 * s) ** 2).mean(axis=(1, 3)))
    quarters = fine.reshape(ny, 2, s, nx, 2, s).transpose(0, 3, 1, 4, 2, 5)
    return nx, ny, codes, fine_detail, quarters


def _reduce_to(grey: Image.Image, tw: int, th: int) -> Image.Image:
    # Box-reduce to about twice the size first (cheap, anti-aliased), then resample exactly.
    factor = min(grey.width // (2 * tw), grey.height // (2 * th))
    if factor >= 2:
        grey = grey.reduce(factor)
    return grey.resize((tw, th), Image.Resampling.BILINEAR, reducing_gap=None)


class VerificationDataError(ValueError):
    """Stored verification data that is not what hashmatch writes (a hostile or damaged
    store, or an older format): the candidate is then treated as unverifiable, never
    trusted."""


def is_current(blob) -> bool:
    """Whether stored verification data is in the format this version verifies with (data
    of an older version is replaced when its file is indexed again)."""
    return isinstance(blob, (bytes, bytearray, memoryview)) and bytes(blob[:4]) == MAGIC


def decode(blob: bytes) -> VerificationData:
    """Parse stored verification data; raises VerificationDataError for anything malformed."""
    import simplejpeg

    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise VerificationDataError("not bytes")
    blob = bytes(blob)
    if blob[:4] in OLD_MAGICS:
        raise VerificationDataError(f"made by {OLD_MAGICS[blob[:4]]} (index the file again)")
    if len(blob) <= _HEADER.size or len(blob) > 4 * BUDGET_BYTES:
        raise VerificationDataError(f"wrong size ({len(blob)} bytes)")
    magic, tw, th, *boxes, jpeg_size, nx, ny, n_fine = _HEADER.unpack_from(blob)
    if magic != MAGIC or not (8 <= tw <= MAX_THUMB_SIDE and 8 <= th <= MAX_THUMB_SIDE) \
            or not (2 <= nx <= DETAIL_MAX_SIDE and 2 <= ny <= DETAIL_MAX_SIDE):
        raise VerificationDataError("bad header")
    tiles, bitmap = nx * ny, (nx * ny + 7) // 8
    at = _HEADER.size + jpeg_size
    if at + bitmap > len(blob):
        raise VerificationDataError("lengths in the header do not add up")
    flat = np.unpackbits(np.frombuffer(blob, np.uint8, bitmap, at))[:tiles].astype(bool)
    textured = tiles - int(flat.sum())
    fine_at = at + bitmap + textured * DETAIL_BYTES
    if fine_at + bitmap + n_fine * FINE_BYTES != len(blob):
        raise VerificationDataError("lengths in the header do not add up")
    fine_tiles = np.unpackbits(np.frombuffer(blob, np.uint8, bitmap, fine_at))[:tiles].astype(
        bool)
    if int(fine_tiles.sum()) != n_fine or (fine_tiles & flat).any():
        raise VerificationDataError("fine codes do not match their bitmap")
    jpeg = blob[_HEADER.size:at]
    detail = np.zeros((tiles, DETAIL_BYTES), np.uint8)
    detail[flat, DETAIL_BYTES - 1] = 1  # the flat bit; a flat tile's other bits are not kept
    detail[~flat] = np.frombuffer(blob, np.uint8, textured * DETAIL_BYTES,
                                  at + bitmap).reshape(textured, DETAIL_BYTES)
    detail = detail.reshape(ny, nx, DETAIL_BYTES)
    fine = np.frombuffer(blob, np.uint8, n_fine * FINE_BYTES, fine_at + bitmap).reshape(
        n_fine, 2, 2, FINE_CODE_BYTES)
    try:
        hw = simplejpeg.decode_jpeg_header(jpeg)
        if (hw[1], hw[0]) != (tw, th):
            raise VerificationDataError("thumbnail size does not match its header")
        arr = simplejpeg.decode_jpeg(jpeg, colorspace="GRAY")[:, :, 0]
    except VerificationDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder complaint means "damaged"
        raise VerificationDataError(f"thumbnail does not decode ({exc})") from None

    def box(values):
        l, t, r, b = (v / 65535 for v in values)
        if not (0 <= l < r <= 1 and 0 <= t < b <= 1):
            raise VerificationDataError("bad region box")
        return (l * tw, t * th, r * tw, b * th)

    return VerificationData(np.ascontiguousarray(arr), box(boxes[:4]), box(boxes[4:]), detail,
                            fine_tiles.reshape(ny, nx), fine)


# ---------------------------------------------------------------------------------------------
# registration and comparison

# Tiles of the comparison grid: about this many pixels a side (the thumbnail's resolution
# is ~1 % of the picture a pixel).
TILE = 6
# A tile "is flat" below this standard deviation (grey levels): compared by brightness.
FLAT_STD = 5.0
FLAT_LEVELS = 24.0  # flat tiles agree when their brightness (after the global fit) is this close
TILE_AGREE_NCC = 0.55
# The decision (measured on the verified pairs of bench_precision's quick suite: 994 copy
# pairs, 1,895 pairs of a query with a stored picture it is not; RESULTS.md "Precision"):
# - a detail tile agrees when at most DETAIL_MAX_WRONG of the bits it counts differ (7 of
#   63; a copy: 0-3 mostly; another name in the same field: 10-30), at both levels of
#   detail where it has fine codes;
# - the same picture: of the textured tiles the query shows, at least DETAIL_MIN_AGREE
#   agree, and outside the largest connected group of disagreeing tiles at least
#   SAME_DETAIL_REST do (noise, a turn of a few degrees); that group (something covering
#   the picture) is at most COVERED_FREELY of the tiles, or at most COVERED_AT_MOST if the
#   layout there differs too (at most COVERED_LAYOUT_AGREE of the thumbnail tiles under it
#   agree: an overlay replaces the picture, where a card of the same design keeps its
#   labels and lines and changes only the names in them);
# - the query shows at least MIN_COVER of the stored picture, and at least MIN_DETAIL_TILES
#   textured tiles of it;
# - otherwise a "template" when at least TEMPLATE_AGREE of the thumbnail tiles agree and
#   DETAIL_MIN_AGREE of the detail tiles (an unrelated picture: rarely 0.4, mostly < 0.2).
DETAIL_SHIFT = 2  # samples either way: what the registration leaves over
# Fine codes are compared only when the query has at least this many pixels a fine sample
# (a copy shrunk much further has lost that detail: its tiles' codes decide alone).
FINE_MIN_RESOLUTION = 0.6
# A coefficient counts if it is at least this share of the tile's RMS coefficient: one
# near the median flips with any resampling or JPEG noise.
DETAIL_MIN_COEFF = 0.3
DETAIL_MAX_WRONG = 0.119  # share of the counted bits: 7 of 63
FINE_MIN_COUNTED = 31  # a tile's fine codes decide only if its quarters count this many bits
DETAIL_MIN_AGREE = 0.30
SAME_DETAIL_REST = 0.92
COVERED_FREELY = 0.12
COVERED_AT_MOST = 0.30
COVERED_LAYOUT_AGREE = 0.30
MIN_DETAIL_TILES = 8
TEMPLATE_AGREE = 0.45  # not a copy, but at least this agrees: the same layout, other content
MIN_COVER = 0.30  # the query must show at least this share of the stored picture
REFINE_STEPS = (0.06, 0.03, 0.015)
REFINE_DEGREES = (1.0, 0.5, 0.25)
MAX_DEGREES = 6.0
ANGLE_GAIN = 0.01
# Where the registration's descent may start again, in degrees, when the verdict from
# upright is "template" (verify_pair): each is scored once at the upright fit's box, and
# the descent runs from the TURN_TRIES best of them only (a descent costs some 100 scores).
TURN_STARTS = (-5.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
TURN_TRIES = 2


@dataclass
class Verdict:
    """The verifier's answer for one (query, stored item) pair."""

    kind: str  # "copy" | "template" | "different"
    evidence: dict = field(default_factory=dict)


def _sample(grey: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of ``grey`` at the points (xs, ys) (2-D arrays of one shape; pixel
    centres at +0.5), and which points lie inside it."""
    gh, gw = grey.shape
    xs, ys = xs - 0.5, ys - 0.5
    valid = (ys >= -0.5) & (ys <= gh - 0.5) & (xs >= -0.5) & (xs <= gw - 0.5)
    x0f, y0f = np.floor(xs), np.floor(ys)
    fx = np.clip(xs - x0f, 0, 1).astype(np.float32)
    fy = np.clip(ys - y0f, 0, 1).astype(np.float32)
    x0 = np.clip(x0f.astype(np.int64), 0, gw - 1)
    y0 = np.clip(y0f.astype(np.int64), 0, gh - 1)
    x1, y1 = np.minimum(x0 + 1, gw - 1), np.minimum(y0 + 1, gh - 1)
    flat = grey.ravel()
    top = flat[y0 * gw + x0] * (1 - fx) + flat[y0 * gw + x1] * fx
    bottom = flat[y1 * gw + x0] * (1 - fx) + flat[y1 * gw + x1] * fx
    return top * (1 - fy) + bottom * fy, valid


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Normalised correlation of ``a`` and ``b`` over ``mask``."""
    n = int(np.count_nonzero(mask))
    if n < 16:
        return -1.0
    m = mask.astype(np.float32)
    a, b = a * m, b * m
    sa, sb = float(a.sum()), float(b.sum())
    cov = float((a * b).sum()) - sa * sb / n
    va = float((a * a).sum()) - sa * sa / n
    vb = float((b * b).sum()) - sb * sb / n
    if va <= 1e-6 or vb <= 1e-6:
        return 1.0 if va <= 1e-6 and vb <= 1e-6 and abs(sa - sb) / n < 8 else -1.0
    return cov / float(np.sqrt(va * vb))


def turn_box(box: Box, size: tuple[int, int], variant: str) -> Box:
    """Where ``box`` of an image of ``size`` lands when the image is turned as ``variant``
    (hashers.pdq.PIL_TRANSPOSE[variant])."""
    w, h = size
    l, t, r, b = box
    return {
        "original": (l, t, r, b), "flipy": (w - r, t, w - l, b), "flipx": (l, h - b, r, h - t),
        "rot90": (t, w - r, b, w - l), "rot180": (w - r, h - b, w - l, h - t),
        "rot270": (h - b, l, h - t, r), "flipplus1": (t, l, b, r),
        "flipminus1": (h - b, w - r, h - t, w - l),
    }[variant]


def _turned_query(grey: np.ndarray, box: Box, variant: str, scale: float):
    """The query's grey copy turned as ``variant`` (and ``box`` on it), and a box-reduced
    copy on which one pixel is about one thumbnail pixel (``scale``: query pixels per
    thumbnail pixel), with its reduction factor."""
    image = Image.fromarray(grey)
    from .hashers.pdq import PIL_TRANSPOSE

    op = PIL_TRANSPOSE.get(variant)
    if op is not None:
        box = turn_box(box, image.size, variant)
        image = image.transpose(op)
    turned = np.asarray(image)
    factor = int(scale // 1.5)
    if factor >= 2:
        reduced = np.asarray(image.reduce(factor), np.float32)
    else:
        factor = 1
        reduced = turned.astype(np.float32)
    return turned, reduced, factor, tuple(float(v) / factor for v in box)


def _to_query(pose, qbox: FBox, us: np.ndarray, vs: np.ndarray):
    """Stored thumbnail points (``us``, ``vs``: arrays that broadcast together) -> query
    points: the pose's stored box maps onto ``qbox`` (a scale per axis), turned by the
    pose's angle about the boxes' centres."""
    (sl, st, sr, sb), angle = pose
    ql, qt, qr, qb = qbox
    dx = (us - (sl + sr) / 2) * ((qr - ql) / (sr - sl))
    dy = (vs - (st + sb) / 2) * ((qb - qt) / (sb - st))
    shape = np.broadcast_shapes(np.shape(us), np.shape(vs))
    if not angle:
        return (np.broadcast_to((ql + qr) / 2 + dx, shape),
                np.broadcast_to((qt + qb) / 2 + dy, shape))
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    return (ql + qr) / 2 + dx * c - dy * s, (qt + qb) / 2 + dx * s + dy * c


class _Registration:
    """Stored thumbnail pixel -> query pixel: the stored box ``sbox`` maps onto the query
    box (a scale per axis), turned by ``angle`` degrees about the boxes' centres (what a
    turned-back region leaves over). ``stride``: score every stride-th thumbnail pixel (the
    refinement; the final comparison uses every pixel)."""

    def __init__(self, thumb: np.ndarray, query: np.ndarray, qbox: FBox, stride: int = 1,
                 limit: FBox | None = None):
        self.thumb, self.query, self.qbox = thumb[::stride, ::stride], query, qbox
        self.limit = limit  # the part of the query that may show the stored picture
        h, w = thumb.shape
        self.us = (np.arange(0, w, stride, dtype=np.float64) + 0.5)[None, :]
        self.vs = (np.arange(0, h, stride, dtype=np.float64) + 0.5)[:, None]

    def sample(self, pose) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = _to_query(pose, self.qbox, self.us, self.vs)
        values, valid = _sample(self.query, xs, ys)
        if self.limit is not None:
            l, t, r, b = self.limit
            valid &= (xs >= l) & (xs <= r) & (ys >= t) & (ys <= b)
        return values, valid

    def score(self, pose) -> float:
        values, valid = self.sample(pose)
        return _ncc(values, self.thumb, valid) if valid.mean() >= 0.15 else -1.0


def _moves(pose, step: float, degrees: float):
    (l, t, r, b), angle = pose
    dw, dh = (r - l) * step, (b - t) * step
    for box in ((l + dw, t, r, b), (l - dw, t, r, b), (l, t, r - dw, b), (l, t, r + dw, b),
                (l, t + dh, r, b), (l, t - dh, r, b), (l, t, r, b - dh), (l, t, r, b + dh),
                (l + dw, t, r + dw, b), (l - dw, t, r - dw, b),
                (l, t + dh, r, b + dh), (l, t - dh, r, b - dh)):
        if box[2] - box[0] >= 4 and box[3] - box[1] >= 4:
            yield box, angle
    if abs(angle + degrees) <= MAX_DEGREES:
        yield (l, t, r, b), angle + degrees
    if abs(angle - degrees) <= MAX_DEGREES:
        yield (l, t, r, b), angle - degrees


def _refine(reg: _Registration, start: FBox, angle: float = 0.0):
    """Coordinate descent of the stored box's sides, shifts and a small turn on the
    correlation between the stored thumbnail and the query sampled through the pose,
    from ``start`` turned by ``angle``."""
    pose = (start, angle)
    best = reg.score(pose)
    for step, degrees in zip(REFINE_STEPS, REFINE_DEGREES):
        improved = True
        while improved:
            improved = False
            for moved in _moves(pose, step, degrees):
                value = reg.score(moved)
                # A turn must earn its keep: on a picture that was not turned, a small turn
                # fits noise a little better and spoils the tile comparison.
                if value > best + (1e-4 if moved[1] == pose[1] else ANGLE_GAIN):
                    pose, best, improved = moved, value, True
                    break
    return pose, best


def _fit_levels(q: np.ndarray, s: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The query's grey levels mapped onto the stored ones by one gain and offset (colour
    edits, greyscale, gamma), fitted robustly: a caption or a sticker covering part of the
    picture must not pull the fit, so the fit is redone on the pixels it explains."""
    x, y = q[valid].astype(np.float64), s[valid].astype(np.float64)
    keep = np.ones(len(x), bool)
    gain, offset = 1.0, 0.0
    for _ in range(3):
        if keep.sum() < 16:
            break
        xs, ys = x[keep], y[keep]
        var = float(xs.var())
        gain = float(((xs - xs.mean()) * (ys - ys.mean())).mean() / var) if var > 1e-3 else 1.0
        gain = min(4.0, max(0.25, gain)) if gain > 0 else 1.0
        offset = float(ys.mean() - gain * xs.mean())
        residual = np.abs(gain * x + offset - y)
        keep = residual <= max(8.0, 2.5 * float(np.median(residual[keep])))
    return q * gain + offset


def _tile_agreement(q: np.ndarray, s: np.ndarray, valid: np.ndarray):
    """Per tile of the stored thumbnail: 1 agree, 0 disagree, -1 not compared (outside the
    query, or flat on both sides and of the same brightness: no evidence either way)."""
    q = _fit_levels(q, s, valid)
    h, w = q.shape
    ny, nx = max(1, h // TILE), max(1, w // TILE)
    th, tw = h // ny, w // nx  # tiles of equal size; the last rows/columns left over

    def tiles(a):
        return a[:ny * th, :nx * tw].reshape(ny, th, nx, tw).astype(np.float64)

    m = tiles(valid)
    a, b = tiles(q) * m, tiles(s) * m
    n = m.sum(axis=(1, 3))
    safe = np.maximum(n, 1)
    ma, mb = a.sum(axis=(1, 3)) / safe, b.sum(axis=(1, 3)) / safe
    va = np.maximum((a * a).sum(axis=(1, 3)) / safe - ma * ma, 0)
    vb = np.maximum((b * b).sum(axis=(1, 3)) / safe - mb * mb, 0)
    cov = (a * b).sum(axis=(1, 3)) / safe - ma * mb
    sa, sb = np.sqrt(va), np.sqrt(vb)
    same_level = np.abs(ma - mb) <= FLAT_LEVELS
    flat_a, flat_b = sa < FLAT_STD, sb < FLAT_STD
    ncc = cov / np.maximum(sa * sb, 1e-9)
    out = np.where(ncc >= TILE_AGREE_NCC, 1, 0).astype(np.int8)
    # One flat, one textured: agreement only if the texture is faint (JPEG noise at a flat
    # area's edge).
    one_flat = flat_a ^ flat_b
    out[one_flat] = (np.maximum(sa, sb) < 2.5 * FLAT_STD)[one_flat] & same_level[one_flat]
    both_flat = flat_a & flat_b
    out[both_flat & same_level] = -1
    out[both_flat & ~same_level] = 0
    out[n < 0.6 * th * tw] = -1
    return out


def _largest_blob(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """Size of the largest 4-connected group of True cells (the tile grids are small), and
    its cells."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return 0, np.zeros(mask.shape, bool)
    sizes = np.bincount(labels.ravel())[1:]
    return int(sizes.max()), labels == int(np.argmax(sizes)) + 1


def _detail_agreement(turned: np.ndarray, factor: int, reg: "_Registration", pose,
                      stored: VerificationData, layout: np.ndarray):
    """Per detail tile of the stored picture: the share of the counted bits of the query's
    code that differ from the stored code (the best of the shifts within DETAIL_SHIFT
    samples; where the tile has fine codes, the worse of its two levels), 1 where a flat
    stored tile was covered, -1 where the query does not show the tile; the mask of tiles
    that are no evidence either way; and the thumbnail comparison ``layout`` under each
    tile."""
    ny, nx = stored.detail.shape[:2]
    h, w = stored.thumb.shape
    s, k = DETAIL_SAMPLES, DETAIL_SHIFT
    ql, qt, qr, qb = reg.qbox
    qbox = (ql * factor, qt * factor, qr * factor, qb * factor)  # the turned query's pixels
    (sl, st, sr, sb), _ = pose
    # Sample the query as the stored picture was: box-reduced by a whole factor to about
    # one pixel per sample, then bilinear.
    spacing = max((qbox[2] - qbox[0]) / (sr - sl) * w / (nx * s),
                  (qbox[3] - qbox[1]) / (sb - st) * h / (ny * s))
    image = turned
    r = int(spacing)
    if r >= 2:
        image = np.asarray(Image.fromarray(np.ascontiguousarray(turned)).reduce(r))
    else:
        r = 1
    n = s + 2 * k
    offsets = (np.arange(n) - k + 0.5) / s  # in tiles
    us = (np.arange(nx)[:, None] + offsets[None, :]) / nx * w  # (nx, n) thumbnail pixels
    vs = (np.arange(ny)[:, None] + offsets[None, :]) / ny * h
    px, py = _to_query(pose, qbox, us[None, :, None, :], vs[:, None, :, None])
    values, valid = _sample(image.astype(np.float32), px / r, py / r)
    if reg.limit is not None:
        l, t, rr, b = (v * factor for v in reg.limit)
        valid &= (px >= l) & (px <= rr) & (py >= t) & (py <= b)
    shown = valid[:, :, k:k + s, k:k + s].mean(axis=(2, 3)) >= 0.9
    windows = np.stack([values[:, :, a:a + s, b:b + s] for a, b in _SHIFTS], axis=2)
    stored_bits = np.unpackbits(stored.detail, axis=-1).astype(bool)  # (ny, nx, 64)
    wrong_bits, counted = _wrong_bits(windows, stored_bits)
    per_shift = wrong_bits / np.maximum(counted, 1)  # (ny, nx, shifts)
    share = per_shift.min(axis=-1)
    if stored.fine_tiles.any() and spacing / 2 >= FINE_MIN_RESOLUTION:
        fine = _fine_wrong_share(turned, spacing, pose, qbox, reg, factor, stored,
                                 per_shift.argmin(axis=-1))
        share = np.where(stored.fine_tiles, np.maximum(share, fine), share)
    # A stored flat tile is no evidence, unless something was put on the picture there:
    # the query shows texture (a caption's letters over a blank area), or the thumbnail
    # comparison says the brightness differs (a plain sticker over a blank area).
    layout_at = _layout_at(layout, (ny, nx))
    flat = stored_bits[:, :, 63]
    centre = windows[:, :, _SHIFTS.index((k, k))]
    changed = flat & ((centre.std(axis=(-2, -1)) >= 2 * DETAIL_FLAT_STD) | (layout_at == 0))
    wrong = np.where(changed, 1.0, share)
    return np.where(shown, wrong, -1.0), flat & ~changed, layout_at


_SHIFTS = [(a, b) for a in range(2 * DETAIL_SHIFT + 1) for b in range(2 * DETAIL_SHIFT + 1)]


def _wrong_bits(windows: np.ndarray, stored_bits: np.ndarray,
                coefficients=None) -> tuple[np.ndarray, np.ndarray]:
    """(..., shifts, S, S) query windows against (..., bits) stored code bits (the signs of
    ``coefficients`` of tile_coefficients, all 63 by default; then the flat bit): how many
    of the query's clear coefficients (DETAIL_MIN_COEFF) differ in sign from the stored
    code, and how many were counted, per shift. Every clear coefficient counts, not only
    the largest: the largest carry the structure a sibling of the same template shares,
    the other names and digits sit in the rest (RESULTS.md, session 8)."""
    coeffs = tile_coefficients(windows)  # (..., shifts, 63)
    if coefficients is not None:
        coeffs = coeffs[..., coefficients]
    n = coeffs.shape[-1]
    rms = np.sqrt((coeffs * coeffs).mean(axis=-1, keepdims=True))
    counted = np.abs(coeffs) >= DETAIL_MIN_COEFF * rms
    wrong = ((coeffs > 0) != stored_bits[..., None, :n]) & counted
    return wrong.sum(axis=-1), counted.sum(axis=-1)


def _fine_wrong_share(turned: np.ndarray, spacing: float, pose, qbox: FBox,
                      reg: "_Registration", factor: int, stored: VerificationData,
                      best_shift: np.ndarray):
    """(ny, nx): for the tiles with fine codes, the share of wrong bits of their four
    quarters pooled (at the best of the shifts within DETAIL_SHIFT fine samples about the
    tile's own best shift); 0 elsewhere, and where the quarters count fewer than
    FINE_MIN_COUNTED bits. ``turned``: the turned query in full size, ``spacing`` its
    pixels a tile sample."""
    ny, nx = stored.fine_tiles.shape
    h, w = stored.thumb.shape
    s, k = DETAIL_SAMPLES, DETAIL_SHIFT
    rows, cols = np.nonzero(stored.fine_tiles)
    dy, dx = np.array(_SHIFTS)[best_shift[rows, cols]].T - k  # coarse samples
    n = 2 * s + 2 * k
    offsets = (np.arange(n) - k + 0.5) / (2 * s)  # in tiles
    us = (cols[:, None] + dx[:, None] / s + offsets[None, :]) / nx * w  # (tiles, n)
    vs = (rows[:, None] + dy[:, None] / s + offsets[None, :]) / ny * h
    px, py = _to_query(pose, qbox, us[:, None, :], vs[:, :, None])  # (tiles, n, n)
    r = int(spacing / 2)  # box-reduced to about one pixel a fine sample, as stored
    image = turned
    if r >= 2:
        image = np.asarray(Image.fromarray(np.ascontiguousarray(turned)).reduce(r))
    else:
        r = 1
    values, valid = _sample(image.astype(np.float32), px / r, py / r)
    if reg.limit is not None:
        l, t, rr, b = (v * factor for v in reg.limit)
        valid &= (px >= l) & (px <= rr) & (py >= t) & (py <= b)
    bits = np.unpackbits(stored.fine, axis=-1).astype(bool)  # (tiles, 2, 2, 32)
    wrong = np.zeros((len(rows), len(_SHIFTS)))
    counted = np.zeros((len(rows), len(_SHIFTS)))
    for qy, qx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        y0, x0 = qy * s, qx * s
        windows = np.stack([values[:, y0 + a:y0 + a + s, x0 + b:x0 + b + s]
                            for a, b in _SHIFTS], axis=1)
        w, c = _wrong_bits(windows, bits[:, qy, qx], FINE_COEFFS)
        seen = valid[:, y0 + k:y0 + k + s, x0 + k:x0 + k + s].mean(axis=(1, 2)) >= 0.9
        counts = (seen & ~bits[:, qy, qx, len(FINE_COEFFS)])[:, None]
        wrong += np.where(counts, w, 0)
        counted += np.where(counts, c, 0)
    # The four quarters together, at the best shift of the whole tile: other text in a
    # field differs across the tile.
    share = np.where(counted >= FINE_MIN_COUNTED, wrong / np.maximum(counted, 1), 0.0)
    out = np.zeros((ny, nx))
    out[rows, cols] = share.min(axis=1)
    return out


def _layout_at(tiles: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The thumbnail tile comparison (1 agree, 0 disagree, -1 none) under the centre of
    each tile of a detail grid of ``shape``."""
    cy, cx = tiles.shape
    ci = np.clip(((np.arange(shape[0]) + 0.5) / shape[0] * cy).astype(int), 0, cy - 1)
    cj = np.clip(((np.arange(shape[1]) + 0.5) / shape[1] * cx).astype(int), 0, cx - 1)
    return tiles[ci[:, None], cj[None, :]]


def verify_pair(query_grey: np.ndarray, query_box: Box, query_variant: str,
                stored: VerificationData, stored_region: str) -> Verdict:
    """Is the query the stored picture? ``query_box`` (on ``query_grey``, turned as
    ``query_variant``) is where the search found the stored region ``stored_region``; the
    whole stored picture is then compared wherever the query shows it."""
    start = stored.region_box(stored_region)
    l, t, r, b = query_box
    if start is None or r - l < 8 or b - t < 8 or start[2] - start[0] < 4 \
            or start[3] - start[1] < 4:
        return Verdict("different", {"reason": "nothing to compare"})
    turned_w = (r - l) if query_variant in ("original", "flipx", "flipy", "rot180") else (b - t)
    scale = turned_w / (start[2] - start[0])
    turned, query, factor, qbox = _turned_query(query_grey, query_box, query_variant, scale)
    thumb = stored.thumb.astype(np.float32)
    # Where the query may show the stored picture: the query box the search paired with the
    # stored region (what lies outside it is frame, border or page: a crop of the stored
    # picture put in a frame shows the frame where the cut-off part was), with some slack
    # for the refinement; the whole query when the stored region is only a part of the
    # stored picture (an embedded picture), which the query may show the rest of.
    stored_name = RegionName.try_parse(stored_region)
    if stored_name is not None and stored_name.kind == "embedded":
        limit = None
    else:
        ql, qt, qr, qb = qbox
        slack_x, slack_y = 0.04 * (qr - ql), 0.04 * (qb - qt)
        limit = (ql - slack_x, qt - slack_y, qr + slack_x, qb + slack_y)
    stride = 2 if min(thumb.shape) >= 24 else 1
    coarse = _Registration(thumb, query, qbox, stride=stride, limit=limit)
    pose, score = _refine(coarse, start)
    verdict = _judge(thumb, query, qbox, limit, turned, factor, pose, stored)
    if verdict.kind != "template":
        return verdict
    # The same layout but not the same detail: a picture turned by a few degrees that the
    # descent from upright did not turn far enough (on a smooth photo, each degree gains
    # little correlation on the thumbnail) agrees in its coarse layout and fails in its
    # detail everywhere a little. Descents from turned starts; the best one is judged
    # again if it fits better than the upright one (no ANGLE_GAIN margin here: a 1-degree
    # turn gains less than that, RESULTS.md session 10).
    box = pose[0]
    screened = sorted(TURN_STARTS, key=lambda a: coarse.score((box, a)), reverse=True)
    turned_pose, turned_score = max((_refine(coarse, box, a) for a in screened[:TURN_TRIES]),
                                    key=lambda found: found[1], default=(pose, score))
    if turned_score <= score:
        return verdict
    second = _judge(thumb, query, qbox, limit, turned, factor, turned_pose, stored)
    return second if second.kind == "copy" else verdict


def _judge(thumb: np.ndarray, query: np.ndarray, qbox: FBox, limit: FBox | None,
           turned: np.ndarray, factor: int, pose, stored: VerificationData) -> Verdict:
    """The verdict on one registration ``pose`` (verify_pair): the layout and the detail
    compared where the query shows the stored picture, and the decision on them."""
    reg = _Registration(thumb, query, qbox, limit=limit)
    values, valid = reg.sample(pose)
    ncc = _ncc(values, thumb, valid)
    tiles = _tile_agreement(values, thumb, valid)
    cover = float(valid.mean())
    compared = tiles >= 0
    n = int(compared.sum())
    if n == 0:
        return Verdict("different", {"reason": "no overlap", "cover": round(cover, 3)})
    layout = int((tiles == 1).sum()) / n
    wrong, no_evidence, layout_at = _detail_agreement(turned, factor, reg, pose, stored, tiles)
    textured = (wrong >= 0) & ~no_evidence
    count = int(textured.sum())
    agree = textured & (wrong <= DETAIL_MAX_WRONG)
    covered, covered_mask = _largest_blob(textured & ~agree)
    rest = textured & ~covered_mask
    share = float(agree.sum()) / max(1, count)
    share_rest = float((agree & rest).sum()) / max(1, int(rest.sum()))
    covered_share = covered / max(1, int((wrong >= 0).sum()))  # of the picture shown
    under = layout_at[covered_mask]
    layout_covered = float((under == 1).sum() / max(1, (under >= 0).sum()))
    evidence = {"detail_agree": round(share, 3),
                "detail_agree_outside_largest_difference": round(share_rest, 3),
                "largest_difference": round(covered_share, 3),
                "layout_agree_in_largest_difference": round(layout_covered, 3),
                "detail_tiles": count, "layout_agree": round(layout, 3), "layout_tiles": n,
                "cover": round(cover, 3), "correlation": round(ncc, 3),
                "angle": round(pose[1], 2)}
    if cover >= MIN_COVER and count >= MIN_DETAIL_TILES and share >= DETAIL_MIN_AGREE \
            and share_rest >= SAME_DETAIL_REST and (
                covered_share <= COVERED_FREELY or (
                    covered_share <= COVERED_AT_MOST
                    and layout_covered <= COVERED_LAYOUT_AGREE)):
        return Verdict("copy", evidence)
    if cover >= MIN_COVER and layout >= TEMPLATE_AGREE and share >= DETAIL_MIN_AGREE:
        return Verdict("template", evidence)
    return Verdict("different", evidence)


# ---------------------------------------------------------------------------------------------
# words for investigators

PLAIN_WORDS = "whole-image hash match (not verified: no pixels stored for this item)"
PLAIN_RULE = ("plain PDQ: whole image, any rotation or flip, distance <= "
              f"{MATCH_POLICY.plain_pdq_distance}")
TEMPLATE_WORDS = "same template, not a copy"


COVERED_WORDS_FROM = 0.05  # a covered/changed area this large is named in the verdict


def copy_words(distance: int, query_variant: str, query_region: str, stored_region: str,
               evidence: dict | None = None) -> str:
    """"same picture", or "same picture, edited" when it was turned, framed, cut or changed
    (the outputs say how beside it: hashmatch.formats.describe_how), with the share of the
    picture something covers when that is large enough to matter to a reader."""
    covered = float((evidence or {}).get("largest_difference", 0.0))
    if covered >= COVERED_WORDS_FROM:
        return f"same picture, edited: {round(100 * covered)} % of it covered or changed"
    if distance <= 8 and query_variant == "original" and query_region == "full" \
            and stored_region == "full":
        return "same picture"
    return "same picture, edited"
