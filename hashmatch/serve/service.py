"""The state one worker process serves from: its in-memory Index (loaded in the background,
synced incrementally from the store by a thread), the banks and tokens (:mod:`.settings`),
and the few operations the routes share (hash lookups, hashing uploads)."""
from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass

from PIL import Image

from .. import decode as decoding
from ..errors import HashFormatError, ImageError
from ..fingerprint import Fingerprint
from ..store import StoreError
from .errors import ApiError, unavailable
from .settings import Settings

log = logging.getLogger("hashmatch.serve")

HMA_PDQ_RADIUS = 31  # HMA's PDQ index threshold (PDQ_CONFIDENT_MATCH_THRESHOLD)
HMA_QUALITY_THRESHOLD = 50  # HMA's PdqSignal.QUALITY_THRESHOLD: below it no hash is given


@dataclass
class ServeConfig:
    db: str
    sync_interval: float = 0.5  # seconds between this worker's syncs with the store
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    request_timeout: float = 30.0
    max_batch: int = 10_000  # hashes per /v1/lookup/hashes request
    create: bool = True


@dataclass(frozen=True)
class Hit:
    """One stored item a hash lookup found."""

    item_id: int
    distance: int
    labels: tuple


class Service:
    def __init__(self, config: ServeConfig):
        self.config = config
        self.index = None
        self.settings: Settings | None = None
        self.lock = threading.Lock()  # the Index is not thread-safe: one user at a time
        self.load_error: str | None = None
        self.started_at = time.time()
        self.last_sync_ok: float | None = None  # time.time() of the last successful sync
        self.store_ok = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hashmatch-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self.lock:
            if self.index is not None:
                try:
                    self.index.close()
                except Exception:  # noqa: BLE001 - shutting down; the store stays the truth
                    log.warning("closing the index failed", exc_info=True)
                self.index = None

    @property
    def ready(self) -> bool:
        return self.index is not None and self.settings is not None

    def _run(self) -> None:
        from ..index import Index

        while not self._stop.is_set() and self.index is None:
            try:
                index = Index.open(self.config.db, create=self.config.create)
                settings = Settings(index.store)
                settings.refresh()
                self.settings, self.index = settings, index
                self.last_sync_ok = time.time()
                self.load_error = None
                log.info("index loaded: %d items", len(index))
            except Exception as exc:  # noqa: BLE001 - reported on /readyz, retried
                self.load_error = f"{type(exc).__name__}: {exc}"
                log.warning("cannot load the index yet: %s", self.load_error)
                self._stop.wait(2.0)
        while not self._stop.wait(self.config.sync_interval):
            self.sync_once()

    def sync_once(self) -> int:
        try:
            with self.lock:
                applied = self.index.sync()
            self.settings.refresh()
            self.last_sync_ok = time.time()
            self.store_ok = True
            return applied
        except Exception as exc:  # noqa: BLE001 - the store may be down: serve from memory
            if self.store_ok:
                log.warning("sync with the store failed: %s", type(exc).__name__)
            self.store_ok = False
            return 0

    def require_index(self):
        if not self.ready:
            raise unavailable("index not yet ready")
        return self.index

    # -- lookups -----------------------------------------------------------------------------
    def lookup_codes(self, fingerprints: list[Fingerprint], max_distance: int,
                     dihedral: bool = False) -> list[list[Hit]]:
        """Every stored item within ``max_distance`` of each fingerprint: the one place the
        service searches hashes (HMA raw lookups, /v1 batch lookups). Today through
        ``Index.query_hashes``; ``Index.search_codes`` (arrays in, arrays out) can replace
        the body without touching any route."""
        self.require_index()
        if not fingerprints:
            return []
        with self.lock:
            return self._lookup_locked(fingerprints, max_distance, dihedral)

    def query_image(self, data: bytes, **options):
        """The full robust query (``Index.query``) of uploaded bytes."""
        index = self.require_index()
        self.check_image(data)
        try:
            with self.lock:
                return index.query(data, **options)
        except ImageError as exc:
            raise image_error(exc) from None

    async def lookup_async(self, fingerprints, max_distance: int, dihedral: bool = False):
        """:meth:`lookup_codes` from the event loop: inline when the index is free (a
        lookup takes well under a millisecond; a thread hop would cost as much), else in the
        thread pool, so a sync holding the index never blocks the loop."""
        from starlette.concurrency import run_in_threadpool

        self.require_index()
        try:
            if self.lock.acquire(blocking=False):
                try:
                    return self._lookup_locked(fingerprints, max_distance, dihedral)
                finally:
                    self.lock.release()
            return await run_in_threadpool(self.lookup_codes, fingerprints, max_distance,
                                           dihedral)
        except StoreError:
            raise unavailable("the store is unavailable; retry shortly") from None

    def _lookup_locked(self, fingerprints, max_distance, dihedral):
        index = self.index
        by_algorithm: dict[str, list[int]] = {}
        for k, fp in enumerate(fingerprints):
            by_algorithm.setdefault(fp.algorithm, []).append(k)
        out: list[list[Hit]] = [[] for _ in fingerprints]
        for algorithm, positions in by_algorithm.items():
            results = index.query_hashes([fingerprints[k] for k in positions],
                                         algorithm=algorithm, max_distance=max_distance,
                                         dihedral=dihedral)
            for k, matches in zip(positions, results):
                out[k] = [Hit(m.item_id, int(m.distance), tuple(m.labels)) for m in matches]
        return out

    def in_memory_sizes(self) -> dict[str, int]:
        """Fingerprints held in memory per algorithm (no store access)."""
        index = self.index
        if index is None:
            return {}
        sizes: dict[str, int] = {}
        # Index has no public accessor for its in-memory shards yet; read their lengths.
        for (algorithm, _), shard in list(getattr(index, "_shards", {}).items()):
            sizes[algorithm] = sizes.get(algorithm, 0) + len(shard)
        return sizes

    # -- writes (each audited with the token's name, in the write's own transaction) --------
    def _sync_after_write(self) -> None:
        with self.lock:
            self.index.sync()

    def add_records(self, records, action: str, detail: dict) -> list[int]:
        index = self.require_index()
        stored = index.store.add_items(records, action=action, detail=detail)
        try:
            self._sync_after_write()
        except StoreError:
            pass  # committed; the sync thread brings it into memory once the store answers
        return [s.item_id for s in stored]

    def add_hash_to_bank(self, fp: Fingerprint, bank: str, meta: dict, token: str) -> int:
        from ..store import ItemRecord
        from .settings import bank_label

        record = ItemRecord(path=None, sha256=None, labels=[bank_label(bank)],
                            source=f"hashmatch serve: bank {bank}", meta=meta,
                            fingerprints=[(fp.algorithm, fp.nbits, "full", "original",
                                           fp.bits.tobytes(), fp.quality)])
        return self.add_records([record], "bank-add-signal",
                                {"bank": bank, "token": token})[0]

    def add_image_to_bank(self, data: bytes, bank: str, meta: dict, token: str):
        """Store an uploaded picture in ``bank`` as :meth:`Index.add_files` stores a file
        (full frame + regions), without keeping the pixels. Returns (item id, full PDQ)."""
        import hashlib

        from ..regions import storage_fingerprints
        from ..store import ItemRecord
        from .settings import bank_label

        fp, decoded = self.hma_pdq(data)
        if (fp.quality or 0) < HMA_QUALITY_THRESHOLD:
            raise ApiError(400, f"Invalid pdq signal: image quality {fp.quality} is below "
                                f"{HMA_QUALITY_THRESHOLD} (too flat to match reliably)")
        rows = [(fp.algorithm, fp.nbits, "full", "original", fp.bits.tobytes(), fp.quality)]
        if self.index.regions:
            rows += [(r.algorithm, r.nbits, name, "original", r.bits.tobytes(), r.quality)
                     for name, r in storage_fingerprints(decoded.image, full=fp,
                                                         config=self.index.region_config)[1:]]
        width, height = decoded.original_size
        meta = {**meta, "upload": {"sha256": hashlib.sha256(data).hexdigest(),
                                   "bytes": len(data), "format": decoded.format,
                                   "width": width, "height": height}}
        # sha256=None: the same picture may sit in several banks (HMA allows it), each its own
        # bank content; the upload's SHA-256 is kept in meta as evidence.
        record = ItemRecord(path=None, sha256=None, labels=[bank_label(bank)],
                            source=f"hashmatch serve: bank {bank}", meta=meta, fingerprints=rows)
        item_id = self.add_records([record], "bank-add-content",
                                   {"bank": bank, "token": token})[0]
        return item_id, fp

    def bank_item(self, item_id: int, bank: str, with_signals: bool):
        from .settings import bank_label

        index = self.require_index()
        item = index.store.get_items([item_id]).get(item_id)
        if item is None or item.removed or bank_label(bank) not in item.labels:
            return None, None
        signals = None
        if with_signals:
            codes = index.store.load_codes_for_items([item_id]).get(("pdq", 256))
            if codes is not None:
                for k in range(len(codes)):
                    if codes.regions[k] == "full" and codes.variants[k] == "original":
                        signals = {"pdq": Fingerprint("pdq", codes.codes[k]).hex()}
                        break
        return item, signals

    def remove_from_bank(self, item_id: int, bank: str, token: str) -> int:
        item, _ = self.bank_item(item_id, bank, False)
        if item is None:
            return 0
        removed = self.index.store.remove_items([item_id], detail={"bank": bank, "token": token})
        try:
            self._sync_after_write()
        except StoreError:
            pass
        return removed

    def remove_items(self, item_ids, token: str) -> int:
        index = self.require_index()
        removed = index.store.remove_items(item_ids, detail={"token": token})
        try:
            self._sync_after_write()
        except StoreError:
            pass
        return removed

    def delete_bank(self, bank: str, token: str) -> int:
        """Remove every live item of ``bank`` (a scan of the store's items: banks are deleted
        rarely), then the bank itself."""
        from .settings import bank_label

        index = self.require_index()
        label = bank_label(bank)
        ids = sorted({int(i) for i in index.fingerprint_rows("pdq").item_ids})
        members = []
        for start in range(0, len(ids), 5000):
            items = index.store.get_items(ids[start:start + 5000])
            members += [i for i, item in items.items()
                        if not item.removed and label in item.labels]
        removed = 0
        if members:
            removed = index.store.remove_items(members, detail={"bank": bank, "token": token,
                                                                "reason": "bank deleted"})
        self.settings.delete_bank(bank, token, removed)
        try:
            self._sync_after_write()
        except StoreError:
            pass
        return removed

    # -- uploads -----------------------------------------------------------------------------
    def check_image(self, data: bytes) -> tuple[int, int]:
        """Refuse what is not an image, or has more pixels than allowed, from its header
        alone (before anything is decoded)."""
        if not data:
            raise ApiError(400, "empty upload")
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except Image.DecompressionBombError:
            raise ApiError(413, "image too large (decompression bomb)") from None
        except Exception:  # noqa: BLE001 - Pillow raises many kinds for garbage
            raise ApiError(400, "not an image (or a format hashmatch cannot read)") from None
        if width * height > self.config.max_pixels:
            raise ApiError(413, f"image too large: {width} x {height} pixels "
                                f"(limit {self.config.max_pixels})")
        return width, height

    def decode_upload(self, data: bytes):
        """Decode uploaded bytes at full resolution (RGB), with the decode limits."""
        self.check_image(data)
        try:
            return decoding.decode(data, mode="RGB", max_pixels=self.config.max_pixels,
                                   max_bytes=self.config.max_upload_bytes)
        except ImageError as exc:
            raise image_error(exc) from None

    def hma_pdq(self, data: bytes) -> tuple[Fingerprint, object]:
        """PDQ as HMA computes it: exact (bit-identical to pdqhash.compute) on the full
        image. Returns (fingerprint, decoded image). hashmatch applies EXIF orientation
        first (HMA does not), so a phone photo hashes as it is shown."""
        from ..hashers import compute

        decoded = self.decode_upload(data)
        return compute(decoded.image, "pdq", exact=True, full_size=decoded.full_size), decoded


def image_error(exc: ImageError) -> ApiError:
    """An unreadable upload as a 4xx (the reason only: the detail can quote the bytes)."""
    return ApiError(413 if exc.reason == "too large" else 400,
                    f"cannot read the image: {exc.reason}")


def parse_pdq(value, what: str = "signal") -> Fingerprint:
    if not isinstance(value, str):
        raise ApiError(400, f"invalid {what}: a PDQ hash is a string of 64 hex digits")
    try:
        return Fingerprint.from_hex(value.strip(), "pdq")
    except HashFormatError:
        raise ApiError(400, f"invalid {what}: not a PDQ hash (64 hex digits)") from None


def store_errors_as_503(exc: Exception) -> ApiError:
    return unavailable("the store is unavailable; retry shortly")


__all__ = ["ServeConfig", "Service", "Hit", "parse_pdq", "StoreError"]
