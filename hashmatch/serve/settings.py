"""Banks and API tokens, kept in the store's meta key/value table (no schema change).

Keys: ``serve.bank.<NAME>`` -> ``{"name", "matching_enabled_ratio", "created_at"}`` and
``serve.token.<name>`` -> ``{"name", "role", "sha256", "created_at"}``. A token itself is
never stored: only the SHA-256 of it (tokens are 32 random bytes, so a plain hash is enough;
no salt or slow hash is needed against guessing).

A bank NAME is the item label ``bank:NAME`` (see README, "Run it as a service"): items keep
a list of labels, so one image can sit in several banks, and investigators' own labels
(``hashmatch index --label ...``) never collide with banks.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from datetime import datetime, timezone

from .errors import ApiError

BANK_PREFIX = "serve.bank."
TOKEN_PREFIX = "serve.token."
BANK_LABEL_PREFIX = "bank:"
ROLES = ("match", "curate")  # curate can do everything match can
_BANK_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")  # HMA: UPPER_WITH_UNDERSCORE
_TOKEN_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
TOKEN_BYTES = 32


def bank_label(name: str) -> str:
    return BANK_LABEL_PREFIX + name


def banks_of(labels) -> list[str]:
    return [label[len(BANK_LABEL_PREFIX):] for label in labels
            if isinstance(label, str) and label.startswith(BANK_LABEL_PREFIX)]


def valid_bank_name(name) -> bool:
    return isinstance(name, str) and len(name) <= 200 and bool(_BANK_NAME.fullmatch(name))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# -- tokens (the CLI's `hashmatch token ...` and the service) ------------------------------
def create_token(store, name: str, role: str) -> str:
    """Make a token for ``name`` with ``role``; returns it (the only time it is seen)."""
    if not _TOKEN_NAME.fullmatch(name or ""):
        raise ValueError("a token name is 1-64 letters, digits or . _ - @")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if store.get_meta_value(TOKEN_PREFIX + name) is not None:
        raise ValueError(f"a token named {name!r} exists already (revoke it first)")
    token = "hm_" + secrets.token_urlsafe(TOKEN_BYTES)
    record = {"name": name, "role": role, "sha256": token_digest(token), "created_at": _now()}
    store.set_meta_value(TOKEN_PREFIX + name, json.dumps(record), action="token-create",
                         detail={"token": name, "role": role})
    return token


def list_tokens(store) -> list[dict]:
    out = []
    for value in store.list_meta_prefix(TOKEN_PREFIX).values():
        record = _json(value)
        if record:
            out.append({k: record.get(k) for k in ("name", "role", "created_at")})
    return out


def revoke_token(store, name: str) -> bool:
    return store.delete_meta_value(TOKEN_PREFIX + name, action="token-revoke",
                                   detail={"token": name})


def _json(value) -> dict | None:
    try:
        record = json.loads(value)
    except (TypeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class Settings:
    """This worker's copy of the banks and tokens, refreshed from the store by the sync
    thread (so a request never waits on the store for them, and they keep working while the
    store is briefly down); this worker's own changes apply at once."""

    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()
        self.banks: dict[str, dict] = {}
        self.tokens: list[tuple[bytes, str, str]] = []  # (digest, name, role)
        self.loaded_at = 0.0

    def refresh(self) -> None:
        banks, tokens = {}, []
        for value in self.store.list_meta_prefix(BANK_PREFIX).values():
            record = _json(value)
            if record and valid_bank_name(record.get("name")):
                banks[record["name"]] = record
        for value in self.store.list_meta_prefix(TOKEN_PREFIX).values():
            record = _json(value)
            if record and record.get("role") in ROLES and isinstance(record.get("sha256"), str):
                tokens.append((bytes.fromhex(record["sha256"]), record["name"], record["role"]))
        with self._lock:
            self.banks, self.tokens = banks, tokens
            self.loaded_at = time.monotonic()

    # -- tokens ----------------------------------------------------------------------------
    def verify(self, token: str) -> tuple[str, str] | None:
        """(name, role) of a valid token, else None. Compares against every stored digest in
        constant time (no early exit), so timing tells nothing about which is close."""
        digest = bytes.fromhex(token_digest(token))
        found = None
        for stored, name, role in self.tokens:
            if hmac.compare_digest(stored, digest):
                found = (name, role)
        return found

    # -- banks -----------------------------------------------------------------------------
    def bank(self, name: str) -> dict | None:
        return self.banks.get(name)

    def create_bank(self, name: str, ratio: float, actor: str) -> dict:
        if not valid_bank_name(name):
            raise ApiError(400, "Bank names must be UPPER_WITH_UNDERSCORE")
        if self.store.get_meta_value(BANK_PREFIX + name) is not None:
            raise ApiError(403, "Bank already exists")
        record = {"name": name, "matching_enabled_ratio": ratio, "created_at": _now()}
        self.store.set_meta_value(BANK_PREFIX + name, json.dumps(record), action="bank-create",
                                  detail={"bank": name, "token": actor})
        with self._lock:
            self.banks = {**self.banks, name: record}
        return record

    def update_bank(self, name: str, ratio: float, actor: str) -> dict:
        record = {**self.banks[name], "matching_enabled_ratio": ratio}
        self.store.set_meta_value(BANK_PREFIX + name, json.dumps(record), action="bank-update",
                                  detail={"bank": name, "matching_enabled_ratio": ratio,
                                          "token": actor})
        with self._lock:
            self.banks = {**self.banks, name: record}
        return record

    def delete_bank(self, name: str, actor: str, removed: int) -> None:
        if valid_bank_name(name):
            self.store.delete_meta_value(BANK_PREFIX + name, action="bank-delete",
                                         detail={"bank": name, "token": actor,
                                                 "removed_items": removed})
        with self._lock:
            self.banks = {k: v for k, v in self.banks.items() if k != name}
