"""The store's small key/value settings (meta table) that `hashmatch serve` keeps banks and
tokens in: both backends, same contract."""
from __future__ import annotations

import pytest

from hashmatch.serve.settings import Settings, create_token, list_tokens, revoke_token
from hashmatch.store import StoreError, open_store


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        location = str(tmp_path / "m.hmdb")
    else:
        location = request.getfixturevalue("pg").new_database("meta")
    s = open_store(location, create=True)
    yield s
    s.close()


def test_meta_values(store):
    assert store.get_meta_value("serve.bank.A") is None
    store.set_meta_value("serve.bank.A", '{"x": 1}', action="bank-create", detail={"token": "t"})
    store.set_meta_value("serve.bank.B", "2")
    store.set_meta_value("serve.bank.A", "3")  # replaces
    store.set_meta_value("serve.token.z", "4")
    assert store.get_meta_value("serve.bank.A") == "3"
    assert store.list_meta_prefix("serve.bank.") == {"serve.bank.A": "3", "serve.bank.B": "2"}
    assert store.list_meta_prefix("serve.bank.%") == {}  # the prefix is text, not a pattern
    assert store.delete_meta_value("serve.bank.A", action="bank-delete") is True
    assert store.delete_meta_value("serve.bank.A") is False
    assert store.get_meta_value("serve.bank.A") is None
    actions = [(e.action, e.detail.get("token")) for e in store.audit_log(10)]
    assert ("bank-create", "t") in actions and ("bank-delete", None) in actions
    for key in ("store_uuid", "schema_version", "format", "created_at", ""):
        with pytest.raises(StoreError):
            store.set_meta_value(key, "x")
        with pytest.raises(StoreError):
            store.delete_meta_value(key)
    with pytest.raises(StoreError):
        store.set_meta_value("serve.x", "nul\x00")
    assert store.integrity_check() == []


def test_tokens_are_stored_hashed_and_verified(store):
    token = create_token(store, "alice", "curate")
    assert all(token not in v for v in store.list_meta_prefix("").values())
    settings = Settings(store)
    settings.refresh()
    assert settings.verify(token) == ("alice", "curate")
    assert settings.verify(token + "x") is None and settings.verify("") is None
    assert [t["name"] for t in list_tokens(store)] == ["alice"]
    with pytest.raises(ValueError):
        create_token(store, "alice", "match")
    with pytest.raises(ValueError):
        create_token(store, "bad name!", "match")
    assert revoke_token(store, "alice")
    settings.refresh()
    assert settings.verify(token) is None
