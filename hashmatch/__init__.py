"""hashmatch: find re-posts of known images."""
import os as _os

# Idle OpenMP threads (ours and FAISS's) should sleep, not spin: matcher processes share
# cores, and spinning teams cost milliseconds per query on a busy machine. Read by libgomp
# when it loads, so it must be set before the kernels are imported; a user's setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from .errors import AlgorithmMismatchError, HashFormatError, HashmatchError, ImageError
from .fingerprint import ALGORITHMS, Fingerprint
from .hashing import FileFingerprints, hash_file, hash_files, hash_image

__version__ = "0.2.0"

# After __version__: modules below may import it from the package.
from .cluster import Cluster, ClusterMember, cluster  # noqa: E402
from .index import Index, Match, QueryResult  # noqa: E402

__all__ = [
    "ALGORITHMS",
    "AlgorithmMismatchError",
    "Cluster",
    "ClusterMember",
    "FileFingerprints",
    "Fingerprint",
    "HashFormatError",
    "HashmatchError",
    "ImageError",
    "Index",
    "Match",
    "QueryResult",
    "__version__",
    "cluster",
    "hash_file",
    "hash_files",
    "hash_image",
]
