"""Verification: is a candidate the same picture? An absolute test on stored pixels.

The search (hashmatch.index.search_shard) proposes candidates from PDQ distances, which are relative by
nature: an unrelated photo can come within 60 bits of some stored photo, and documents made
from one template (ID cards of one design, receipts of one shop) sit 14-30 bits apart, inside
any radius that also finds edited copies. So every candidate whose stored item has pixels is
checked against what the store keeps of it (``VerificationData``, <= ``BUDGET_BYTES``: a grey
JPEG thumbnail of ~10,000 pixels, where the stored regions lie on it, and 40 ORB keypoints of
the picture at KEYPOINT_SIDE), independently of what else the database holds:

1. **Register**: the pair the search found says which box of the query (on the query's grey
   copy, turned and mirrored as the pair says) corresponds to which stored region. The stored
   thumbnail is sampled into the query through that correspondence, refined side by side,
   by shifts and by a small turn (coordinate descent on the normalised correlation), so that
   a crop, a border or a loose trim the search only roughly fitted lands on the stored
   pixels. Only the paired query box (with a little slack) is compared: what lies outside it
   is frame, border or page.
2. **Compare** tile by tile in the registered frame, after one robust brightness/contrast
   fit (colour edits, greyscale, gamma; a caption does not pull it): a tile agrees when its
   structure correlates; flat tiles of the same brightness on both sides are no evidence.
   Then the stored keypoints are looked for, on the query resampled to their scale, where
   the registration puts them.
3. **Decide**: the *same picture* agrees in its pixels and its fine detail almost
   everywhere, or everywhere but one compact area that something covers (a caption, a
   sticker, a banner). An unrelated picture has almost none of the keypoints. A picture made
   from the same *template* agrees in its layout but not in its detail (another photo, other
   names): "template". Every figure is in ``Verdict.evidence``.

Thresholds are measured (benchmarks/bench_precision.py, RESULTS.md "Precision"). Numpy and one
ORB detection: 8-15 ms per verified candidate on the shared 2-core machine.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]
FBox = tuple[float, float, float, float]

# ---------------------------------------------------------------------------------------------
# stored data

MAGIC = b"HMV2"
# magic, thumbnail width and height, content box, embedded box (in 1/65535 of the picture),
# number of keypoints, JPEG length.
_HEADER = struct.Struct("<4sHH8HHH")
_KEYPOINT = struct.Struct("<HH32s")  # position (1/65535 of the picture), ORB descriptor
# Per item: header + JPEG bytes. The budget is 4 KB; a grey JPEG of ~9,000 pixels
# (e.g. 110x82 for a photo, 55x165 for a receipt) fits it for photos and most documents;
# text-dense pictures step down until it fits.
BUDGET_BYTES = 4000
# Local features (OpenCV's ORB) of the picture at KEYPOINT_SIDE on its long side, the
# strongest spread over a KEYPOINT_GRID x KEYPOINT_GRID grid: fine detail (letters, faces)
# that the thumbnail is too coarse to show, which is what tells a copy from a picture made
# from the same template with other names and photos.
KEYPOINT_SIDE = 512
KEYPOINT_COUNT = 40
KEYPOINT_GRID = 5
THUMB_PIXELS = 10_000
MIN_THUMB_PIXELS = 1_500
THUMB_QUALITY = 82
MAX_THUMB_SIDE = 400  # refuse anything larger when reading (hostile stores)


@dataclass(frozen=True)
class VerificationData:
    """A stored picture as the verifier needs it: grey thumbnail + region boxes on it."""

    thumb: np.ndarray  # (h, w) uint8
    content: FBox  # the stored "content" region, in thumbnail pixels
    embedded: FBox
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (n, 2) thumb px
    descriptors: np.ndarray = field(default_factory=lambda: np.zeros((0, 32), np.uint8))

    def region_box(self, region: str) -> FBox | None:
        """Where stored region ``region`` lies on the thumbnail (crop windows from content)."""
        h, w = self.thumb.shape
        if region == "full":
            return (0.0, 0.0, float(w), float(h))
        if region == "content":
            return self.content
        if region == "embedded":
            return self.embedded
        if region.startswith("crop:"):
            from .regions import crop_window_box

            return crop_window_box(self.content, region)
        return None


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
    points = _stored_keypoints(grey)
    pixels = THUMB_PIXELS
    while True:
        tw, th = _thumb_size(grey.width, grey.height, pixels)
        small = _reduce_to(grey, tw, th)
        arr = np.ascontiguousarray(np.asarray(small, np.uint8)[:, :, None])
        data = simplejpeg.encode_jpeg(arr, quality=THUMB_QUALITY, colorspace="GRAY",
                                      colorsubsampling="Gray")
        out = (_HEADER.pack(MAGIC, tw, th, *boxes, len(points) // _KEYPOINT.size, len(data))
               + data + points)
        if len(out) <= BUDGET_BYTES or pixels <= MIN_THUMB_PIXELS:
            return out
        pixels = max(MIN_THUMB_PIXELS, int(pixels * 0.75))


def _orb(grey: np.ndarray, count: int):
    """ORB keypoints (x, y) and descriptors of a grey array. One pyramid level: the query is
    resampled to the stored keypoints' scale before it is looked at, so the scale search
    of a full pyramid buys nothing (and cost 2.5x the time)."""
    import cv2

    orb = cv2.ORB_create(nfeatures=count, fastThreshold=12, edgeThreshold=15,  # type: ignore[attr-defined]
                         patchSize=31, nlevels=1, scoreType=cv2.ORB_FAST_SCORE)  # type: ignore[attr-defined]
    found, desc = orb.detectAndCompute(np.ascontiguousarray(grey, np.uint8), None)
    if desc is None or not found:
        return np.zeros((0, 2)), np.zeros((0, 32), np.uint8), np.zeros(0)
    xy = np.array([k.pt for k in found], np.float64)
    response = np.array([k.response for k in found], np.float64)
    return xy, desc, response


def _stored_keypoints(grey: Image.Image) -> bytes:
    scale = KEYPOINT_SIDE / max(grey.size)
    size = (max(16, round(grey.width * scale)), max(16, round(grey.height * scale)))
    work = np.asarray(_reduce_to(grey, *size), np.uint8)
    xy, desc, response = _orb(work, 10 * KEYPOINT_COUNT)
    if len(xy) == 0:
        return b""
    # The strongest of each grid cell in turn: keypoints spread over the whole picture.
    cell = (np.minimum(xy[:, 0] * KEYPOINT_GRID // size[0], KEYPOINT_GRID - 1) * KEYPOINT_GRID
            + np.minimum(xy[:, 1] * KEYPOINT_GRID // size[1], KEYPOINT_GRID - 1)).astype(int)
    order = np.lexsort((-response, cell))
    rank = np.empty(len(xy), int)
    starts = np.r_[0, np.nonzero(np.diff(cell[order]))[0] + 1]
    for begin, end in zip(starts, np.r_[starts[1:], len(order)]):
        rank[order[begin:end]] = np.arange(end - begin)
    chosen = np.lexsort((-response, rank))[:KEYPOINT_COUNT]
    out = b""
    for k in chosen:
        fx = max(0, min(65535, round(xy[k, 0] / size[0] * 65535)))
        fy = max(0, min(65535, round(xy[k, 1] / size[1] * 65535)))
        out += _KEYPOINT.pack(fx, fy, desc[k].tobytes())
    return out


def _reduce_to(grey: Image.Image, tw: int, th: int) -> Image.Image:
    # Box-reduce to about twice the size first (cheap, anti-aliased), then resample exactly.
    factor = min(grey.width // (2 * tw), grey.height // (2 * th))
    if factor >= 2:
        grey = grey.reduce(factor)
    return grey.resize((tw, th), Image.Resampling.BILINEAR, reducing_gap=None)


class VerificationDataError(ValueError):
    """Stored verification data that is not what hashmatch writes (a hostile or damaged
    store): the candidate is then treated as unverifiable, never trusted."""


def decode(blob: bytes) -> VerificationData:
    """Parse stored verification data; raises VerificationDataError for anything malformed."""
    import simplejpeg

    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise VerificationDataError("not bytes")
    blob = bytes(blob)
    if len(blob) <= _HEADER.size or len(blob) > 4 * BUDGET_BYTES:
        raise VerificationDataError(f"wrong size ({len(blob)} bytes)")
    magic, tw, th, *boxes, n_points, jpeg_size = _HEADER.unpack_from(blob)
    if magic != MAGIC or not (8 <= tw <= MAX_THUMB_SIDE and 8 <= th <= MAX_THUMB_SIDE):
        raise VerificationDataError("bad header")
    if _HEADER.size + jpeg_size + n_points * _KEYPOINT.size != len(blob):
        raise VerificationDataError("lengths in the header do not add up")
    jpeg = blob[_HEADER.size:_HEADER.size + jpeg_size]
    rest = blob[_HEADER.size + jpeg_size:]
    points = [_KEYPOINT.unpack_from(rest, k * _KEYPOINT.size) for k in range(n_points)]
    keypoints = np.array([(x / 65535 * tw, y / 65535 * th) for x, y, _ in points],
                         np.float64).reshape(-1, 2)
    descriptors = np.frombuffer(b"".join(d for _, _, d in points), np.uint8).reshape(-1, 32)
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

    return VerificationData(np.ascontiguousarray(arr), box(boxes[:4]), box(boxes[4:]),
                            keypoints, descriptors)


# ---------------------------------------------------------------------------------------------
# registration and comparison

# Tiles of the comparison grid: about this many pixels a side (the thumbnail's resolution
# is ~1 % of the picture a pixel).
TILE = 6
# A tile "is flat" below this standard deviation (grey levels): compared by brightness.
FLAT_STD = 5.0
FLAT_LEVELS = 24.0  # flat tiles agree when their brightness (after the global fit) is this close
TILE_AGREE_NCC = 0.55
# The decision (measured on 564 copy pairs and 660 pairs of unknown pictures with their
# closest stored items: benchmarks/bench_precision.py, RESULTS.md "Precision"):
# - the query has the stored picture's fine detail: at least SAME_KEYPOINTS of its keypoints
#   (an unrelated photo or receipt: <= 0.25; a copy: 0.9 typically);
# - and its pixels agree: SAME_AGREE of the compared tiles, and SAME_AGREE_KEYPOINTS of its
#   keypoints; or, when something covers part
#   of it (a caption, a sticker, a banner), OCCLUDED_AGREE of them with everything but the
#   largest disagreeing area agreeing (OCCLUDED_REST) and its keypoints there too
#   (OCCLUDED_KEYPOINTS). A card of the same design with another photo and name agrees
#   around the photo too, but not in its names and numbers: its keypoints there fail.
SAME_KEYPOINTS = 0.30
SAME_AGREE = 0.90
SAME_AGREE_KEYPOINTS = 0.50  # ... with this share of its keypoints
OCCLUDED_AGREE = 0.50
OCCLUDED_REST = 0.85
OCCLUDED_KEYPOINTS = 0.95
TEMPLATE_AGREE = 0.45  # not a copy, but at least this agrees: the same layout, other content
MIN_COVER = 0.30  # the query must show at least this share of the stored picture
REFINE_STEPS = (0.06, 0.03, 0.015)
REFINE_DEGREES = (1.0, 0.5, 0.25)
MAX_DEGREES = 6.0
ANGLE_GAIN = 0.01


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
        (sl, st, sr, sb), angle = pose
        ql, qt, qr, qb = self.qbox
        kx, ky = (qr - ql) / (sr - sl), (qb - qt) / (sb - st)
        dx = (self.us - (sl + sr) / 2) * kx
        dy = (self.vs - (st + sb) / 2) * ky
        if angle:
            c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
            xs = (ql + qr) / 2 + dx * c - dy * s
            ys = (qt + qb) / 2 + dx * s + dy * c
        else:
            xs = np.broadcast_to((ql + qr) / 2 + dx, (len(self.vs), dx.shape[1]))
            ys = np.broadcast_to((qt + qb) / 2 + dy, (dy.shape[0], self.us.shape[1]))
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


def _refine(reg: _Registration, start: FBox):
    """Coordinate descent of the stored box's sides, shifts and a small turn on the
    correlation between the stored thumbnail and the query sampled through the pose."""
    pose = (start, 0.0)
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
    textured = ~both_flat & (out >= 0)
    return out, np.where(textured, np.clip(ncc, -1, 1), np.nan)


def _largest_blob(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """Size of the largest 4-connected group of True cells (the tile grids are small), and
    its cells."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return 0, np.zeros(mask.shape, bool)
    sizes = np.bincount(labels.ravel())[1:]
    return int(sizes.max()), labels == int(np.argmax(sizes)) + 1


QUERY_KEYPOINTS = 1000  # ORB features of the query, where the stored picture lies
KEYPOINT_REACH = 0.03  # a stored keypoint is looked for this far (share of KEYPOINT_SIDE)
KEYPOINT_MATCH_BITS = 64  # of ORB's 256: the same spot of the same picture


def _keypoint_agreement(turned: np.ndarray, factor: int, reg: "_Registration", pose,
                        stored: VerificationData, blob_mask: np.ndarray, thumb_shape):
    """Share of the stored keypoints the query shows that it has too, at the place the
    registration puts them (all of them, and those outside the largest tile difference),
    and how many it shows."""
    if len(stored.keypoints) == 0:
        return 0.0, 0.0, 0
    h, w = thumb_shape
    (sl, st, sr, sb), angle = pose
    ql, qt, qr, qb = (v * factor for v in reg.qbox)
    kx, ky = (qr - ql) / (sr - sl), (qb - qt) / (sb - st)
    # Stored keypoints in the turned query's pixels (the registration's map, scaled back up).
    dx = (stored.keypoints[:, 0] - (sl + sr) / 2) * kx
    dy = (stored.keypoints[:, 1] - (st + sb) / 2) * ky
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    px = (ql + qr) / 2 + dx * c - dy * s
    py = (qt + qb) / 2 + dx * s + dy * c
    gh, gw = turned.shape
    visible = (px >= 8) & (px < gw - 8) & (py >= 8) & (py < gh - 8)
    if reg.limit is not None:
        l, t, r, b = (v * factor for v in reg.limit)
        visible &= (px >= l) & (px <= r) & (py >= t) & (py <= b)
    if not visible.any():
        return 0.0, 0.0, 0
    # The query at the stored keypoints' scale, resampled as the stored picture was (the
    # descriptors are sensitive to the resampling: the whole query is resized, then cut),
    # then cut to where the stored picture lies, so that the query's keypoints are spent
    # there and not on a caption bar or a page around it.
    per_keypoint_px = max(kx * w, ky * h) / KEYPOINT_SIDE  # query px per stored-keypoint px
    ratio = 1.0 / per_keypoint_px
    whole = (max(16, round(gw * ratio)), max(16, round(gh * ratio)))
    if whole[0] * whole[1] > 16 * KEYPOINT_SIDE * KEYPOINT_SIDE:
        return 0.0, 0.0, 0
    resized = np.asarray(_reduce_to(Image.fromarray(np.ascontiguousarray(turned)), *whole))
    sx, sy = whole[0] / gw, whole[1] / gh
    margin = 0.05 * KEYPOINT_SIDE
    x0 = int(max(0, px[visible].min() * sx - margin))
    x1 = int(min(whole[0], px[visible].max() * sx + margin))
    y0 = int(max(0, py[visible].min() * sy - margin))
    y1 = int(min(whole[1], py[visible].max() * sy + margin))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return 0.0, 0.0, 0
    qxy, qdesc, _ = _orb(resized[y0:y1, x0:x1], QUERY_KEYPOINTS)
    if len(qxy) == 0:
        return 0.0, 0.0, int(visible.sum())
    at = np.stack([px * sx - x0, py * sy - y0], axis=1)
    reach = KEYPOINT_REACH * KEYPOINT_SIDE
    near = ((at[:, None, :] - qxy[None, :, :]) ** 2).sum(axis=2) <= reach * reach
    which, other = np.nonzero(near)
    bits = np.bitwise_count(stored.descriptors[which] ^ qdesc[other]).sum(axis=1)
    best = np.full(len(at), 256, np.int64)
    np.minimum.at(best, which, bits.astype(np.int64))
    matched = best <= KEYPOINT_MATCH_BITS
    ny, nx = blob_mask.shape
    ti = np.clip((stored.keypoints[:, 1] // max(1, h // ny)).astype(int), 0, ny - 1)
    tj = np.clip((stored.keypoints[:, 0] // max(1, w // nx)).astype(int), 0, nx - 1)
    outside = visible & ~blob_mask[ti, tj]
    share_all = float(matched[visible].mean())
    share_outside = float(matched[outside].mean()) if outside.any() else share_all
    return share_all, share_outside, int(visible.sum())


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
    if stored_region.startswith("embedded"):
        limit = None
    else:
        ql, qt, qr, qb = qbox
        slack_x, slack_y = 0.04 * (qr - ql), 0.04 * (qb - qt)
        limit = (ql - slack_x, qt - slack_y, qr + slack_x, qb + slack_y)
    stride = 2 if min(thumb.shape) >= 24 else 1
    coarse = _Registration(thumb, query, qbox, stride=stride, limit=limit)
    pose, _ = _refine(coarse, start)
    reg = _Registration(thumb, query, qbox, limit=limit)
    values, valid = reg.sample(pose)
    ncc = _ncc(values, thumb, valid)
    tiles, tile_ncc = _tile_agreement(values, thumb, valid)
    cover = float(valid.mean())
    compared = tiles >= 0
    n = int(compared.sum())
    if n == 0:
        return Verdict("different", {"reason": "no overlap", "cover": round(cover, 3)})
    agree = int((tiles == 1).sum())
    disagree = compared & (tiles == 0)
    blob, blob_mask = _largest_blob(disagree)
    outside = tile_ncc[~blob_mask & ~np.isnan(tile_ncc)]
    detail = float(outside.mean()) if len(outside) else 0.0
    raw = agree / n
    set_aside = agree / max(1, n - blob)
    kp_all, kp_outside, kp_visible = _keypoint_agreement(turned, factor, reg, pose, stored,
                                                         blob_mask, thumb.shape)
    evidence = {"agree": round(raw, 3), "agree_outside_largest_difference": round(set_aside, 3),
                "largest_difference": round(blob / n, 3), "tiles": n,
                "cover": round(cover, 3), "correlation": round(ncc, 3),
                "detail_outside_largest_difference": round(detail, 3),
                "angle": round(pose[1], 2), "keypoints_visible": kp_visible,
                "keypoints_agree": round(kp_all, 3),
                "keypoints_agree_outside_largest_difference": round(kp_outside, 3)}
    if kp_visible and kp_all < SAME_KEYPOINTS:
        return Verdict("different", evidence)
    if cover >= MIN_COVER and ((raw >= SAME_AGREE and kp_all >= SAME_AGREE_KEYPOINTS) or (
            raw >= OCCLUDED_AGREE and set_aside >= OCCLUDED_REST
            and kp_outside >= OCCLUDED_KEYPOINTS)):
        return Verdict("copy", evidence)
    if raw >= TEMPLATE_AGREE:
        return Verdict("template", evidence)
    return Verdict("different", evidence)


# ---------------------------------------------------------------------------------------------
# words for investigators

PLAIN_WORDS = "whole-image hash match (not verified: no pixels stored for this item)"
PLAIN_RULE = "plain PDQ: whole image, any rotation or flip, distance <= 31"
TEMPLATE_WORDS = "same template, not a copy"


def copy_words(distance: int, query_variant: str, query_region: str, stored_region: str) -> str:
    """"same picture", or "same picture, edited" when it was turned, framed, cut or changed
    (the outputs say how beside it: hashmatch.formats.describe_how)."""
    if distance <= 8 and query_variant == "original" and query_region == "full" \
            and stored_region == "full":
        return "same picture"
    return "same picture, edited"
