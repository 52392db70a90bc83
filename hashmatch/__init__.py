"""hashmatch: find re-posts of known images."""
from .errors import AlgorithmMismatchError, HashFormatError, HashmatchError, ImageError
from .fingerprint import ALGORITHMS, Fingerprint

__version__ = "0.1.0"
__all__ = [
    "ALGORITHMS",
    "AlgorithmMismatchError",
    "Fingerprint",
    "HashFormatError",
    "HashmatchError",
    "ImageError",
    "__version__",
]
