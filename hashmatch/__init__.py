"""hashmatch: find re-posts of known images."""
from .errors import AlgorithmMismatchError, HashFormatError, HashmatchError, ImageError
from .fingerprint import ALGORITHMS, Fingerprint
from .hashing import FileFingerprints, hash_file, hash_files, hash_image

__version__ = "0.1.0"
__all__ = [
    "ALGORITHMS",
    "AlgorithmMismatchError",
    "FileFingerprints",
    "Fingerprint",
    "HashFormatError",
    "HashmatchError",
    "ImageError",
    "__version__",
    "hash_file",
    "hash_files",
    "hash_image",
]
