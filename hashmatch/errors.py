"""The package's exceptions: one type per kind of failure a user can act on."""


class HashmatchError(Exception):
    """Base class of every error hashmatch raises on purpose."""


class ImageError(HashmatchError):
    """An image could not be read: names the file and the reason.

    ``source`` is the path (or a short description such as ``<bytes>``), ``reason`` a short
    machine-friendly phrase (``empty file``, ``truncated``, ``not an image``, ``too large`` ...).
    """

    def __init__(self, source: str, reason: str, detail: str | None = None):
        self.source = source
        self.reason = reason
        self.detail = detail
        message = f"{source}: {reason}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class HashFormatError(HashmatchError, ValueError):
    """A hash string or array is malformed (wrong length, not hex, unknown algorithm)."""


class AlgorithmMismatchError(HashmatchError, TypeError):
    """Two fingerprints of different algorithms or sizes were compared."""
