import imagehash
import numpy as np
import pytest

from hashmatch import AlgorithmMismatchError, Fingerprint, HashFormatError

PDQ_HEX = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"


def test_hex_round_trip_and_distance():
    a = Fingerprint.from_hex(PDQ_HEX, "pdq", quality=100)
    assert a.hex() == PDQ_HEX and a.nbits == 256 and a.quality == 100
    flipped = bytearray(bytes.fromhex(PDQ_HEX))
    flipped[0] ^= 0b1010_0000
    flipped[31] ^= 0b0000_0001
    b = Fingerprint.from_hex(flipped.hex(), "pdq")
    assert a - b == 3 and b - a == 3 and a - a == 0
    assert a == Fingerprint.from_hex(PDQ_HEX.upper(), "pdq")
    assert hash(a) == hash(Fingerprint.from_hex(PDQ_HEX, "pdq"))


def test_mixed_algorithms_cannot_be_compared():
    pdq = Fingerprint.from_hex(PDQ_HEX, "pdq")
    ph = Fingerprint.from_hex("fbaf64e845480d1d", "phash")
    dh = Fingerprint.from_hex("fbaf64e845480d1d", "dhash")
    with pytest.raises(AlgorithmMismatchError):
        pdq - ph
    with pytest.raises(AlgorithmMismatchError):
        ph - dh
    assert ph != dh


@pytest.mark.parametrize("text, algorithm", [
    ("abc", "pdq"), (PDQ_HEX[:-2], "pdq"), ("zz" * 32, "pdq"), ("", "phash"),
    ("0123456789abcde", "phash"), ("fbaf64e845480d1d", "md5"),
])
def test_malformed_hex_is_rejected(text, algorithm):
    with pytest.raises(HashFormatError):
        Fingerprint.from_hex(text, algorithm)


def test_imagehash_interop():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, (8, 8)).astype(bool)
    ih = imagehash.ImageHash(bits)
    fp = Fingerprint.from_imagehash(ih, "phash")
    assert fp.hex() == str(ih)
    assert np.array_equal(fp.to_imagehash().hash, bits)
    other = imagehash.ImageHash(~bits)
    assert fp - Fingerprint.from_imagehash(other, "phash") == ih - other == 64


def test_pdqhash_vector_interop():
    vector = np.unpackbits(np.frombuffer(bytes.fromhex(PDQ_HEX), np.uint8))
    fp = Fingerprint.from_pdqhash(vector, quality=90)
    assert fp.hex() == PDQ_HEX
    assert np.array_equal(fp.to_pdqhash(), vector)


def test_fingerprint_is_immutable():
    fp = Fingerprint.from_hex(PDQ_HEX, "pdq")
    with pytest.raises(AttributeError):
        fp.quality = 3
    with pytest.raises(ValueError):
        fp.bits[0] = 0
