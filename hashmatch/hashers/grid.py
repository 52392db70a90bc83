"""A gradient-grid perceptual hash ("grid", 256 bits): an independent open design.

This is NOT PhotoDNA and is not compatible with it. It is written from the public,
high-level descriptions of that family of hashes (normalise the image to a fixed grid of cells,
describe each cell by the energy of its gradients in four directions) and then binarised for
hashmatch's Hamming core, with design choices of our own:

1. grey (luma) image, box-resized to 96x96 (aspect is not kept: a normalised grid), lightly
   smoothed so JPEG blocking and resampling do not show up as gradients;
2. horizontal and vertical differences; per cell of a 6x6 grid the four sums of the positive
   and negative parts of d/dx and d/dy (144 features), divided by the image's total gradient
   energy so that contrast and brightness changes cancel;
3. bits (256 in all, most significant first):
   - 144: each feature above the median of the same direction over the 36 cells (balanced bits:
     unrelated images differ in about half of them);
   - 36: per cell, is horizontal-gradient energy above vertical (the cell's orientation);
   - 60: per cell, is its total energy above its right neighbour's (30) / lower neighbour's (30);
   - 16: zero padding to four 64-bit words.

Distances are therefore out of 240 informative bits; unrelated images sit around 100-120, the
same picture after re-encoding/resizing within about 20 (measured in
benchmarks/bench_robustness.py). Rotations/flips: :func:`grid_hash_dihedral` hashes the 8
variants from one normalised array (transposing the 96x96 grid is exact and cheap).

Register with ``DEFAULT_BITS["grid"] = 256`` in hashmatch/fingerprint.py.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..fingerprint import Fingerprint

GRID_SIDE = 96
CELLS = 6
NBITS = 256
INFORMATIVE_BITS = 240


def normalised_grey(image: Image.Image) -> np.ndarray:
    """(96, 96) float32 luma of ``image``, box-resized and smoothed with a 3x3 box."""
    grey = image if image.mode == "L" else image.convert("L")
    w, h = grey.size
    factor = min(w, h) // (GRID_SIDE * 2)
    if factor >= 2:
        grey = grey.reduce(factor)  # cheap pre-shrink; the final resize averages the rest
    a = np.asarray(grey.resize((GRID_SIDE, GRID_SIDE), Image.Resampling.BOX), dtype=np.float32)
    padded = np.pad(a, 1, mode="edge")
    return sum(padded[i:i + GRID_SIDE, j:j + GRID_SIDE] for i in range(3) for j in range(3)) / 9


def grid_features(grey: np.ndarray) -> np.ndarray:
    """(36, 4) directional gradient energies per cell: dx+, dx-, dy+, dy-; sums to 1."""
    side = grey.shape[0]
    dx = np.zeros_like(grey)
    dy = np.zeros_like(grey)
    dx[:, :-1] = grey[:, 1:] - grey[:, :-1]
    dy[:-1, :] = grey[1:, :] - grey[:-1, :]
    maps = np.stack([np.maximum(dx, 0), np.maximum(-dx, 0), np.maximum(dy, 0), np.maximum(-dy, 0)])
    cell = side // CELLS
    per_cell = maps.reshape(4, CELLS, cell, CELLS, cell).sum(axis=(2, 4))  # (4, 6, 6)
    total = per_cell.sum()
    per_cell = per_cell / total if total > 0 else per_cell
    return per_cell.reshape(4, CELLS * CELLS).T


def grid_bits(features: np.ndarray) -> np.ndarray:
    """The 256 hash bits (bool, hex order) of (36, 4) cell features."""
    above_median = features > np.median(features, axis=0)  # (36, 4)
    horizontal = features[:, 0] + features[:, 1]
    vertical = features[:, 2] + features[:, 3]
    energy = (horizontal + vertical).reshape(CELLS, CELLS)
    bits = np.concatenate([
        above_median.reshape(-1),
        horizontal > vertical,
        (energy[:, :-1] > energy[:, 1:]).reshape(-1),
        (energy[:-1, :] > energy[1:, :]).reshape(-1),
        np.zeros(NBITS - INFORMATIVE_BITS, dtype=bool),
    ])
    return bits


def grid_hash_array(grey: np.ndarray) -> np.ndarray:
    """Packed 32-byte code of a normalised (96, 96) grey array."""
    return np.packbits(grid_bits(grid_features(grey)))


# The eight rotations/flips of a square array, in PDQ's dihedral order
# (original, rot90, rot180, rot270, flipx, flipy, flipplus1, flipminus1).
_DIHEDRAL = (
    lambda a: a,
    lambda a: np.rot90(a, 1),  # counter-clockwise, as pdqhash.compute_dihedral orders them
    lambda a: np.rot90(a, 2),
    lambda a: np.rot90(a, -1),
    lambda a: a[::-1, :],
    lambda a: a[:, ::-1],
    lambda a: a.T,
    lambda a: np.rot90(a, 2).T,
)


def grid_hash_image(image: Image.Image) -> Fingerprint:
    """The grid Fingerprint of a PIL image (needs ``"grid"`` registered in DEFAULT_BITS)."""
    return Fingerprint("grid", grid_hash_array(normalised_grey(image)))


def grid_codes(image: Image.Image, dihedral: bool = False) -> np.ndarray:
    """(1, 32) or (8, 32) uint8 packed codes: the image, or its 8 rotations/flips."""
    grey = normalised_grey(image)
    transforms = _DIHEDRAL if dihedral else _DIHEDRAL[:1]
    return np.stack([grid_hash_array(np.ascontiguousarray(t(grey))) for t in transforms])
