"""Plain-text tables of what the sync did: the counts table (``admin status``, the demo) and a
task's result as a small table (the last lines of every sync task's log, ``airflow_glue``).

One place for both, so a task log, the command line and the demo read the same way:
Object | New | Updated | Deleted | Skipped | Failed, numbers right-aligned, a total row.
"""

from __future__ import annotations

from collections.abc import Mapping

from tabulate import SEPARATING_LINE, tabulate

from include.sfsync.store.ledger import COUNT_KEYS

# The columns a task's result may carry, in display order (count columns in the ledger's order).
COLUMNS = {"mode": "Mode", "rows": "Rows", "kept": "Kept", "copied": "Copied",
           "pushed": "Pushed", "suppressed": "Suppressed", "ignored": "Ignored",
           **{k: k.capitalize() for k in COUNT_KEYS}, "waiting": "Waiting",
           "api_calls": "API calls",
           # per-object mappings of a result, as columns
           "objects": "Plan", "cursor_started": "Cursor started",
           "recopied": "Fields re-copied", "formulas": "Formulas refreshed",
           "reconciled": "Flagged deleted"}
# Whole-run values of a result, as lines under the table.
FOOTER = {"api_calls": "Salesforce API calls", "pending": "Still queued",
          "stopped": "Push stopped", "disabled": "Push disabled", "people_linked": "People linked",
          "reloaded": "People re-read", "not_found": "Not found", "warnings": "Warnings",
          # maintenance's retention: rows deleted per table; pending changes flagged stale
          "pruned": "Pruned", "stale": "Stale pending changes"}
# What names a result rather than counts it.
_NAMES = {"object", "step", "table", "run_key", "people", "custom_objects"}


def counts_table(counts: dict[str, dict[str, int]], *, title: str | None = None,
                 api_calls: int | None = None) -> str:
    """Object | New | Updated | Deleted | Skipped | Failed, with a total row."""
    rows = [[name] + [f"{c.get(k, 0):,}" for k in COUNT_KEYS] for name, c in counts.items()]
    totals = ["Total"] + [f"{sum(c.get(k, 0) for c in counts.values()):,}" for k in COUNT_KEYS]
    table = tabulate([*rows, SEPARATING_LINE, totals],
                     headers=["Object"] + [k.capitalize() for k in COUNT_KEYS],
                     colalign=("left",) + ("right",) * len(COUNT_KEYS), disable_numparse=True)
    out = ([title] if title else []) + [table]
    if api_calls is not None:
        out.append(f"Salesforce API calls: {api_calls:,}")
    return "\n".join(out)


def result_table(result, *, label: str | None = None) -> str | None:
    """A sync task's return value as a small table; None for nothing (None, a plain value).

    Rows come from, in this order: ``counts`` ({object: {new, updated, ...}}: finish, the push
    steps, the initial copy), sync now's ``push`` ({step: {counts: ...}}, rows "Lead (push)"),
    and per-object mappings (``objects``: the plan; ``cursor_started``; maintenance's
    ``recopied`` ...), which become columns. A result without any of these is one object's own
    row (extract, filter, load, copy, activities): named by its ``object``, else ``label`` (the
    task's ``sf_object``), else its ``step``. Whole-run values (API calls, still queued, ...)
    follow the table, one line each. A list of mappings (the initial copy's plan) is a row
    each; a list of names is one line.
    """
    if isinstance(result, (list, tuple)):
        if result and all(isinstance(item, Mapping) for item in result):
            rows = {str(item.get("sf_object") or item.get("object") or i): {
                k: v for k, v in item.items() if k not in ("sf_object", "object")}
                for i, item in enumerate(result, 1)}
            return _table(rows, _ordered({k for row in rows.values() for k in row}))
        return "Returned: " + (", ".join(str(item) for item in result) or "nothing")
    if not isinstance(result, Mapping) or not result:
        return None
    rows: dict[str, dict] = {}
    sources, first = False, "Object"
    if isinstance(result.get("counts"), Mapping):
        sources = True
        for name, counts in result["counts"].items():
            rows[name] = {k: counts.get(k, 0) for k in COUNT_KEYS}
    if isinstance(result.get("push"), Mapping):  # sync now: every push step's counts
        sources = True
        for step in result["push"].values():
            for name, counts in ((step or {}).get("counts") or {}).items():
                row = rows.setdefault(f"{name} (push)", dict.fromkeys(COUNT_KEYS, 0))
                for k in COUNT_KEYS:
                    row[k] += counts.get(k, 0)
    for key, values in result.items():
        if key not in ("counts", "push", *FOOTER) and isinstance(values, Mapping) and all(
                _is_scalar(v) for v in values.values()):
            sources = True
            for name, value in values.items():
                rows.setdefault(name, {})[key] = value
    columns_in_rows = set()
    if not sources:  # one object's own result
        row = {k: v for k, v in result.items()
               if _is_scalar(v) and k not in _NAMES and (k in COLUMNS or k not in FOOTER)}
        name = result.get("object") or label or result.get("step")
        if not name and row and not set(row) & set(COLUMNS):  # {name: count}, e.g. dedupe rules
            rows, first = {key: {"count": value} for key, value in row.items()}, ""
        else:
            rows[str(name or "")] = row
            columns_in_rows = set(row)
    columns = _ordered({k for row in rows.values() for k in row})
    lines = [_table(rows, columns, first) if rows and columns else "Nothing to count."]
    for key, title in FOOTER.items():
        value = result.get(key)
        if key in columns_in_rows or value is None or value is False or value in ([], (), ""):
            continue  # (0 is shown)
        if isinstance(value, Mapping):  # {name: count}: the ones that are not zero
            value = ", ".join(f"{k} {_cell(v)}" for k, v in value.items() if v)
            if not value:
                continue
        elif isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        elif value is True:
            value = "yes"
        lines.append(f"{title}: {_cell(value)}")
    return "\n".join(lines)


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _ordered(keys: set[str]) -> list[str]:
    return [k for k in COLUMNS if k in keys] + sorted(k for k in keys if k not in COLUMNS)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _table(rows: dict[str, dict], columns: list[str], first: str = "Object") -> str:
    body = [[name] + [_cell(row.get(k)) for k in columns] for name, row in rows.items()]
    numeric = []
    for k in columns:
        values = [row[k] for row in rows.values() if row.get(k) is not None]
        numeric.append(bool(values) and all(_numeric(v) for v in values))
    if len(rows) > 1 and any(numeric):
        body += [SEPARATING_LINE, ["Total"] + [
            _cell(sum(row.get(k) or 0 for row in rows.values())) if is_numeric else ""
            for k, is_numeric in zip(columns, numeric, strict=True)]]
    headers = [first] + [
        COLUMNS.get(k, k.replace("_", " ").capitalize()) for k in columns]
    return tabulate(body, headers=headers, disable_numparse=True,
                    colalign=("left",) + tuple("right" if n else "left" for n in numeric))
