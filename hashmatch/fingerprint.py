"""The value types of hashing: a Fingerprint, one perceptual hash of one image (or image
region), and FileFingerprints, everything hashing learnt about one file (here, below both
hashing and its Dask runner hashmatch.distributed, which makes one for a lost task).

Bits are stored packed, most significant bit first, so that ``fp.hex()`` is the usual hex
form of each algorithm: PDQ's 64-hex-digit form (as the C++ reference and ThreatExchange write
it) and imagehash's ``str(ImageHash)`` for phash/dhash/ahash.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import AlgorithmMismatchError, HashFormatError

# Default bit length of each algorithm. phash/dhash/ahash accept other hash sizes
# (hash_size**2 bits); a fingerprint's identity is (algorithm, nbits).
# "grid" is hashmatch's own gradient-grid hash (hashers/grid.py; not PhotoDNA).
DEFAULT_BITS = {"pdq": 256, "phash": 64, "dhash": 64, "ahash": 64, "grid": 256}
ALGORITHMS = tuple(DEFAULT_BITS)

_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def check_algorithm(algorithm) -> str:
    """``algorithm`` if hashmatch has it, else HashFormatError: the one check (and message)
    wherever an algorithm is named -- a Fingerprint, a hasher, a hash list, the index."""
    if algorithm not in ALGORITHMS:
        shown = repr(algorithm)
        shown = shown if len(shown) <= 42 else shown[:40] + "..."  # a crafted list's line
        raise HashFormatError(f"unknown algorithm {shown}; choose one of: {', '.join(ALGORITHMS)}")
    return algorithm


class Fingerprint:
    """A perceptual hash: ``algorithm``, packed ``bits`` (np.uint8) and ``quality``.

    ``a - b`` is the Hamming distance. ``quality`` is PDQ's 0-100 score (None when the
    algorithm has none or it is unknown, e.g. a hash imported from a list without it).
    """

    __slots__ = ("algorithm", "bits", "quality")

    def __init__(self, algorithm: str, bits, quality: int | None = None):
        check_algorithm(algorithm)
        packed = np.ascontiguousarray(bits, dtype=np.uint8).reshape(-1)
        if packed.size == 0 or packed.size % 8:
            raise HashFormatError(
                f"{algorithm} fingerprint must have a multiple of 64 bits, got {packed.size * 8}"
            )
        packed.setflags(write=False)
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "bits", packed)
        object.__setattr__(self, "quality", None if quality is None else int(quality))

    def __setattr__(self, name, value):
        raise AttributeError("Fingerprint is immutable")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_hex(cls, text: str, algorithm: str = "pdq", quality: int | None = None) -> "Fingerprint":
        """Parse the hex form of a hash. Raises HashFormatError on bad input."""
        check_algorithm(algorithm)
        if not isinstance(text, str):
            raise HashFormatError(f"hash must be a hex string, got {type(text).__name__}")
        text = text.strip().lower()
        expected = DEFAULT_BITS[algorithm] // 4
        if algorithm == "pdq" and len(text) != expected:
            raise HashFormatError(f"pdq hash must be {expected} hex digits, got {len(text)}")
        if len(text) == 0 or len(text) % 16:
            raise HashFormatError(
                f"{algorithm} hash must be a multiple of 16 hex digits (64 bits), got {len(text)}"
            )
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise HashFormatError(f"not a hex string: {text[:80]!r}") from None
        return cls(algorithm, np.frombuffer(raw, dtype=np.uint8), quality)

    @classmethod
    def from_bool_array(cls, bits, algorithm: str, quality: int | None = None) -> "Fingerprint":
        """From an array of 0/1 values in hex order (first element = most significant bit)."""
        flat = np.asarray(bits).reshape(-1).astype(bool)
        return cls(algorithm, np.packbits(flat), quality)

    @classmethod
    def from_imagehash(cls, image_hash, algorithm: str = "phash") -> "Fingerprint":
        """From an ``imagehash.ImageHash`` (its ``hash`` array, row-major)."""
        return cls.from_bool_array(image_hash.hash, algorithm)

    @classmethod
    def from_pdqhash(cls, vector, quality: int | None = None) -> "Fingerprint":
        """From the 256-element 0/1 vector that ``pdqhash.compute`` returns."""
        return cls.from_bool_array(vector, "pdq", quality)

    # -- conversion ---------------------------------------------------------------------
    @property
    def nbits(self) -> int:
        return self.bits.size * 8

    def hex(self) -> str:
        return self.bits.tobytes().hex()

    def to_bool_array(self) -> np.ndarray:
        return np.unpackbits(self.bits).astype(bool)

    def to_imagehash(self):
        """As an ``imagehash.ImageHash`` (square hash of side sqrt(nbits))."""
        import imagehash

        side = int(round(self.nbits ** 0.5))
        if side * side != self.nbits:
            raise HashFormatError(f"{self.nbits} bits is not a square imagehash")
        return imagehash.ImageHash(self.to_bool_array().reshape(side, side))

    def to_pdqhash(self) -> np.ndarray:
        """As the 0/1 int vector ``pdqhash.compute`` returns."""
        if self.algorithm != "pdq":
            raise AlgorithmMismatchError(f"not a pdq fingerprint: {self.algorithm}")
        return self.to_bool_array().astype(np.int64)

    # -- comparison ---------------------------------------------------------------------
    def _check_comparable(self, other: "Fingerprint") -> None:
        if not isinstance(other, Fingerprint):
            raise TypeError(f"cannot compare Fingerprint with {type(other).__name__}")
        if other.algorithm != self.algorithm or other.nbits != self.nbits:
            raise AlgorithmMismatchError(
                f"cannot compare {self.algorithm}/{self.nbits} with {other.algorithm}/{other.nbits}"
            )

    def __sub__(self, other: "Fingerprint") -> int:
        self._check_comparable(other)
        return int(_POPCOUNT8[np.bitwise_xor(self.bits, other.bits)].sum(dtype=np.int64))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Fingerprint):
            return NotImplemented
        return self.algorithm == other.algorithm and np.array_equal(self.bits, other.bits)

    def __hash__(self) -> int:
        return hash((self.algorithm, self.bits.tobytes()))

    def __repr__(self) -> str:
        q = "" if self.quality is None else f", quality={self.quality}"
        return f"Fingerprint({self.algorithm!r}, {self.hex()!r}{q})"

    def __str__(self) -> str:
        return self.hex()

    def __reduce__(self):
        # Lets Fingerprints cross process boundaries (multiprocessing) by value; hashmatch
        # itself never unpickles anything read from disk or the network.
        return (Fingerprint, (self.algorithm, self.bits.copy(), self.quality))


@dataclass
class FileFingerprints:
    """Everything hashing learnt about one file; ``error`` set (and no fingerprints) on failure."""

    path: str
    fingerprints: list[Fingerprint] = field(default_factory=list)
    sha256: str | None = None
    file_size: int | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None  # "reason (detail)" as ImageError words it
    # (region name, PDQ fingerprint) of the image's regions besides the full frame (content
    # without borders, embedded picture: hashmatch.regions), when asked for.
    regions: list[tuple[str, Fingerprint]] = field(default_factory=list)
    # What the verification stage compares candidates with (hashmatch.verify.encode), made
    # with the regions.
    verification: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def fingerprint(self) -> Fingerprint | None:
        return self.fingerprints[0] if self.fingerprints else None
