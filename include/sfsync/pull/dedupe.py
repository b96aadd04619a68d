"""Duplicate people: same normalised values of a rule's columns (by default the e-mail), across
leads and contacts. Findings go to ``sfsync_duplicate`` with the rule and the reason; nothing is
ever merged automatically."""

from __future__ import annotations

import re
from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.sfsync.config import DedupeRule
from include.sfsync.store.engine import utcnow


def normalise(value, how: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if how == "digits":
        text = re.sub(r"\D", "", text)
    elif how in {"lower", "email"}:
        text = text.lower()
    return text or None


def find_duplicates(engine: Engine, person: sa.Table, duplicate_t: sa.Table,
                    rules: list[DedupeRule]) -> dict[str, int]:
    """Record every pair of live people sharing a rule's values; returns new findings per rule.

    Each person is paired with the lowest person id of its group (the "original"), so a group
    of n people yields n-1 rows. Findings that no longer hold are removed.
    """
    found: dict[str, int] = {}
    with engine.begin() as conn:
        for rule in rules:
            cols = [person.c[c] for c in rule.columns]
            groups: dict[tuple, list[int]] = defaultdict(list)
            query = sa.select(person.c.id, *cols).where(
                person.c.sfdc_is_deleted.is_(False), *[c.is_not(None) for c in cols])
            for row in conn.execute(query):
                key = tuple(normalise(row._mapping[c], rule.normalize) for c in rule.columns)
                if all(key):
                    groups[key].append(row.id)
            pairs = set()
            for key, ids in groups.items():
                if len(ids) > 1:
                    first = min(ids)
                    reason = f"same {' + '.join(rule.columns)}: {' / '.join(key)}"
                    pairs.update((pid, first, reason) for pid in ids if pid != first)
            existing = {(r.person_id, r.duplicate_of_person_id) for r in conn.execute(
                sa.select(duplicate_t.c.person_id, duplicate_t.c.duplicate_of_person_id)
                .where(duplicate_t.c.rule == rule.name))}
            current = {(p, d) for p, d, _ in pairs}
            stale = existing - current
            for person_id, dup_of in stale:
                conn.execute(duplicate_t.delete().where(
                    duplicate_t.c.rule == rule.name, duplicate_t.c.person_id == person_id,
                    duplicate_t.c.duplicate_of_person_id == dup_of))
            new = [{"rule": rule.name, "person_id": p, "duplicate_of_person_id": d, "reason": r,
                    "detected_at": utcnow()} for p, d, r in pairs if (p, d) not in existing]
            if new:
                conn.execute(duplicate_t.insert(), new)
            found[rule.name] = len(new)
    return found
