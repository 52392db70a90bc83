"""Pictures re-posted turned by a few degrees, turned back (query side).

``deskewed``: a picture turned on filled corners (white, black) is a tilted rectangle on a
flat background; its angle is measured from the outline and the picture turned back and cut
out. ``straightened`` / ``turned:<angle>``: a picture turned and cut to its fill-free inner
box has no corners to measure; the angle its straight edges show (or, without one, a few
fixed guesses) turns it back, and the lost margins are grown again.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .boxes import COLOUR_TOLERANCE, EDGE_STEP, Region, _analysis_array, _plausible
from .names import RegionName

# --------------------------------------------------------------------------------------------
# small rotations with filled corners (query side)

# A picture turned by a few degrees and re-posted with its corners filled (white, black) is a
# tilted rectangle on a flat background: its angle is the one that makes the outline's
# bounding box smallest; turned back and trimmed, it is (almost) the original frame.
DESKEW_MAX_DEGREES = 8.0
DESKEW_STEP_DEGREES = 0.25
DESKEW_MIN_DEGREES = 0.75


def _tilt(arr: np.ndarray):
    """(angle in degrees for PIL's ``rotate`` to undo, fill grey level, outline x, outline y
    in analysis pixels), or None when the analysis copy is not a tilted picture on filled
    corners."""
    grey = arr.mean(axis=2, dtype=np.float32)
    h, w = grey.shape
    if min(h, w) < 16:
        return None
    corners = grey[[0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]]
    if np.ptp(corners) > COLOUR_TOLERANCE:
        return None
    fill = float(np.median(corners))
    content = np.abs(grey - fill) > COLOUR_TOLERANCE
    rows = np.nonzero(content.any(axis=1))[0]
    cols = np.nonzero(content.any(axis=0))[0]
    if len(rows) < h // 2 or len(cols) < w // 2:
        return None
    left = content[rows].argmax(axis=1)
    right = w - 1 - content[rows, ::-1].argmax(axis=1)
    top = content[:, cols].argmax(axis=0)
    bottom = h - 1 - content[::-1, cols].argmax(axis=0)
    xs = np.concatenate([left, right, cols, cols]).astype(np.float64)
    ys = np.concatenate([rows, rows, top, bottom]).astype(np.float64)
    degrees = np.arange(-DESKEW_MAX_DEGREES, DESKEW_MAX_DEGREES + 1e-9, DESKEW_STEP_DEGREES)
    theta = np.radians(degrees)[:, None]
    u = xs * np.cos(theta) - ys * np.sin(theta)
    v = xs * np.sin(theta) + ys * np.cos(theta)
    area = np.ptp(u, axis=1) * np.ptp(v, axis=1)
    best = int(np.argmin(area))
    upright = area[np.argmin(np.abs(degrees))]
    if abs(degrees[best]) < DESKEW_MIN_DEGREES or area[best] > 0.97 * upright:
        return None
    # Points turned by +theta (y down) line up; PIL's rotate(angle) turns the picture
    # counter-clockwise on screen, which is -theta in these coordinates.
    return -float(degrees[best]), int(round(fill)), xs + 0.5, ys + 0.5


# --------------------------------------------------------------------------------------------
# small rotations cropped to their fill-free inner box (query side)

# A picture turned a few degrees and cut to the box that holds no fill has no corners to
# measure an angle from, and the cut is what costs most: PDQ of a copy that lost 2-4 % on
# every side is 60-90 bits from the original, about as far as the turn itself. Turning the
# copy back AND growing it to the original frame (the lost margins filled by repeating the
# edge pixels) brings a 2-3 degree copy to 4-66 bits (median ~25) of its original (quick
# suite, exact angle; 0.5 degree off: +5-15 bits).
# The angle: straight edges of documents, cards, posters and screenshots run along the
# frame's axes; the angle that makes the edge points' projections sharpest is the turn
# (within 0.6 degree for 13 of the quick suite's 41 inner-cut copies: adverts, receipts). Product
# photos (a garment on a floor) show no such angle; they get fixed guesses, unless their
# edges say they stand upright. Measured on the --quick suite: RESULTS.md, "Small
# rotations, session 3".

# Estimated from a copy this long: within ~0.1 degree on the quick suite's adverts.
STRAIGHTEN_SIDE = 192
STRAIGHTEN_MAX_DEGREES = 8.0
STRAIGHTEN_STEP_DEGREES = 0.25
# Share of pixels (strongest gradients) whose positions are projected.
STRAIGHTEN_EDGE_SHARE = 0.1
# The estimate is used when its projections are this much sharper than the upright ones
# (and the picture counts as upright when the upright ones are this much sharper).
STRAIGHTEN_CONFIDENCE = 1.2
# Without a confident estimate: turns tried as they are (PIL angles), for copies turned by
# about this much either way; the turned-back copy still matches within ~1 degree.
STRAIGHTEN_GUESSES = (2.5, -2.5)
# The turned-back copy is hashed from a grey copy at most this long (PDQ looks at 64x64).
RESTORE_SIDE = 512


def _grey_copy(image: Image.Image, side: int) -> Image.Image:
    """Grey copy, box-filtered to at most ``side`` long (reduced before the grey conversion:
    a query photo of several megapixels costs a fraction of a millisecond this way)."""
    factor = max(1, int(np.ceil(max(image.size) / side)))
    small = image.reduce(factor) if factor > 1 else image
    return small if small.mode == "L" else small.convert("L")


def _edge_points(grey: np.ndarray):
    """``(a, b, offset, weights, bins)`` of the strongest edge pixels (the
    STRAIGHTEN_EDGE_SHARE of them), for :func:`_projection_sharpness`; None if too few.

    A horizontal edge's point is projected on the vertical axis (v = y cos - x sin), a
    vertical edge's on the horizontal one (u = x cos + y sin): both are a cos + b sin +
    offset, the offset putting vertical edges' bins after the horizontal edges' ones.
    Positions are jittered by up to half a pixel: on the pixel grid every row is a perfect
    line at 0 degrees, which would favour the upright angle.
    """
    h, w = grey.shape
    gx = np.zeros_like(grey)
    gy = np.zeros_like(grey)
    gx[:, 1:-1] = grey[:, 2:] - grey[:, :-2]
    gy[1:-1, :] = grey[2:, :] - grey[:-2, :]
    ax, ay = np.abs(gx), np.abs(gy)
    strength = ax + ay
    flat = strength.ravel()
    kth = int(len(flat) * (1 - STRAIGHTEN_EDGE_SHARE))
    threshold = max(float(np.partition(flat, kth)[kth]), 3 * EDGE_STEP)
    ys, xs = np.nonzero(strength > threshold)
    if len(xs) < 64:
        return None
    weights = strength[ys, xs]
    horizontal = ay[ys, xs] > ax[ys, xs]
    jitter = np.random.default_rng(0).uniform(-0.5, 0.5, (2, len(xs)))
    x = xs - w / 2 + jitter[0]
    y = ys - h / 2 + jitter[1]
    length = int(np.hypot(h, w)) + 4
    return (np.where(horizontal, y, x), np.where(horizontal, -x, y),
            np.where(horizontal, length / 2, length + length / 2), weights, 2 * length)


def _projection_sharpness(points, degrees: np.ndarray) -> np.ndarray:
    """Per angle: how sharply the edge points line up along the axes once turned by it: lines
    along the turned axes pile into few 1-pixel bins (sum of squared bin weights)."""
    a, b, offset, weights, bins = points
    theta = np.radians(np.asarray(degrees, np.float64))[:, None]
    index = (a * np.cos(theta) + b * np.sin(theta) + offset).astype(np.int64)
    index += (bins * np.arange(len(degrees)))[:, None]  # every angle in one bincount
    counts = np.bincount(index.ravel(), np.broadcast_to(weights, index.shape).ravel(),
                         bins * len(degrees)).reshape(len(degrees), bins)
    return np.einsum("ij,ij->i", counts, counts)


def _content_tilt(grey: Image.Image) -> tuple[float | None, bool]:
    """``(angle, upright)``: the angle (for PIL's ``rotate``) that turns the picture's straight
    edges back onto the axes, or None when no turn of DESKEW_MIN_DEGREES or more lines them
    up clearly better than the picture as it stands; ``upright``: the picture as it stands
    lines them up clearly better than any such turn. ``grey``: an "L" image, any size."""
    pixels = np.asarray(_grey_copy(grey, STRAIGHTEN_SIDE), dtype=np.float32)
    points = _edge_points(pixels) if min(pixels.shape) >= 32 else None
    if points is None:
        return None, False
    step = STRAIGHTEN_STEP_DEGREES
    # Coarse (two steps), then the best coarse angle's neighbours.
    coarse = np.arange(-STRAIGHTEN_MAX_DEGREES, STRAIGHTEN_MAX_DEGREES + 1e-9, 2 * step)
    sharpness = _projection_sharpness(points, coarse)
    upright = sharpness[np.argmin(np.abs(coarse))]
    turned = sharpness[np.abs(coarse) >= DESKEW_MIN_DEGREES].max()
    if upright >= STRAIGHTEN_CONFIDENCE * turned:
        return None, True
    top = float(coarse[int(np.argmax(sharpness))])
    fine = np.array([top - step, top, top + step])
    around = _projection_sharpness(points, fine)
    best = int(np.argmax(around))
    if around[best] < STRAIGHTEN_CONFIDENCE * upright:
        return None, False
    angle = float(fine[best])
    if best == 1:  # the parabola's top through the best and its neighbours
        a, b, c = around
        if a - 2 * b + c < 0:
            angle += float(0.5 * (a - c) / (a - 2 * b + c) * step)
    if abs(angle) < DESKEW_MIN_DEGREES:
        return None, False
    # Projected on axes turned by -theta (y down), the edges line up: the picture was turned
    # by -theta on screen, and PIL's rotate(theta) turns it back.
    return angle, False


def _restored_frame(grey: Image.Image, angle: float) -> Image.Image:
    """``grey``, taken as a picture turned by ``-angle`` and cut to its fill-free inner box,
    turned back by ``angle`` and grown to the picture's frame; the margins the cut took are
    filled by repeating the edge pixels (closer to the lost pixels than any flat colour)."""
    w, h = grey.size
    t = abs(np.tan(np.radians(angle)))
    # A W x H frame turned by a loses H*t/2 left and right, W*t/2 top and bottom.
    width, height = (w + h * t) / (1 - t * t), (h + w * t) / (1 - t * t)
    pad = int(np.ceil(max(width - w, height - h))) + 2
    padded = Image.fromarray(np.pad(np.asarray(grey), pad, mode="edge"))
    # Nearest neighbour: PDQ blurs the frame down to 64x64 anyway; a sixth of the bilinear
    # turn's cost, and the true pair's distance moved by < 1 bit on average (quick suite).
    turned = padded.rotate(angle, Image.Resampling.NEAREST)
    cx, cy = turned.width / 2, turned.height / 2
    return turned.crop((round(cx - width / 2), round(cy - height / 2),
                        round(cx + width / 2), round(cy + height / 2)))


def _straightened(image: Image.Image) -> list[Region]:
    """``straightened``: the picture turned back by the angle its edges show and grown to its
    frame; without a clear angle, ``turned:<angle>`` for each of STRAIGHTEN_GUESSES, unless
    its edges show it upright. The regions' ``source`` is the grey turned-back frame."""
    grey = _grey_copy(image, RESTORE_SIDE)
    angle, upright = _content_tilt(grey)
    if angle is not None:
        named = [("straightened", angle)]
    elif upright:  # its edges say it is not turned
        named = []
    else:
        named = [(str(RegionName.turned(guess)), guess) for guess in STRAIGHTEN_GUESSES]
    out = []
    for name, turn in named:
        restored = _restored_frame(grey, turn)
        out.append(Region(name, (0, 0, restored.width, restored.height), restored))
    return out


def _deskewed(image: Image.Image) -> list[Region]:
    arr, sx, sy = _analysis_array(image)
    tilt = _tilt(arr)
    if tilt is None:
        return []
    angle, fill, xs, ys = tilt
    grey = image if image.mode == "L" else image.convert("L")
    turned = grey.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=fill)
    # Where the picture's outline lands in ``turned``: rotate() turns about the centre,
    # counter-clockwise on screen, and centres the result on the expanded canvas.
    a = np.radians(angle)
    dx, dy = xs * sx - image.width / 2, ys * sy - image.height / 2
    u = turned.width / 2 + dx * np.cos(a) + dy * np.sin(a)
    v = turned.height / 2 - dx * np.sin(a) + dy * np.cos(a)
    # The picture's sides are on the outline's extremes; a few noisy points are not.
    box = (int(np.ceil(np.percentile(u, 1))), int(np.ceil(np.percentile(v, 1))),
           int(np.percentile(u, 99)), int(np.percentile(v, 99)))
    box = (max(0, box[0]), max(0, box[1]), min(turned.width, box[2]), min(turned.height, box[3]))
    if not _plausible(box, turned.width, turned.height):
        return []
    return [Region("deskewed", box, turned)]
