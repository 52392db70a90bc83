"""Pure helpers the stores share for curating items (labels, sources, file times).

Kept out of the backends so SQLite and PostgreSQL apply the very same rule.
"""
from __future__ import annotations


def relabelled(labels, source, meta, add=(), remove=(), new_source=None):
    """(labels, source, meta, changed) after adding/removing labels and adding a source.

    Labels keep their order; an added label already present is not repeated. An item has one
    ``source`` (the first it was given); further sources are kept, all of them in order, in
    ``meta["sources"]``.
    """
    labels = list(labels or [])
    meta = dict(meta or {})
    before = (list(labels), source, meta.get("sources"))
    labels = [label for label in labels if label not in set(remove)]
    for label in add:
        if label not in labels:
            labels.append(label)
    if new_source:
        if not source:
            source = new_source
        elif new_source != source:
            sources = list(meta.get("sources") or [source])
            if new_source not in sources:
                sources.append(new_source)
                meta["sources"] = sources
    changed = (labels, source, meta.get("sources")) != before
    return labels, source, meta, changed


def check_labels(where: str, values) -> list[str]:
    from .store.base import StoreError

    values = [values] if isinstance(values, str) else list(values or ())
    if not all(isinstance(v, str) and v for v in values):
        raise StoreError(f"{where}: labels must be non-empty strings")
    return values
