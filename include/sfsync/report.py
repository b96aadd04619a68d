"""Plain-text tables of sync results, for logs and the command line."""

from __future__ import annotations

from include.sfsync.load import COUNT_KEYS


def counts_table(counts: dict[str, dict[str, int]], *, title: str | None = None,
                 api_calls: int | None = None) -> str:
    """Object | New | Updated | Deleted | Skipped | Failed, with a total row."""
    headers = ["Object"] + [k.capitalize() for k in COUNT_KEYS]
    rows = [[name] + [f"{c.get(k, 0):,}" for k in COUNT_KEYS] for name, c in counts.items()]
    totals = ["Total"] + [f"{sum(c.get(k, 0) for c in counts.values()):,}" for k in COUNT_KEYS]
    widths = [max(len(r[i]) for r in [headers, totals, *rows]) for i in range(len(headers))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    rule = "  ".join("-" * w for w in widths)
    out = ([title] if title else []) + [line(headers), rule, *map(line, rows), rule, line(totals)]
    if api_calls is not None:
        out.append(f"Salesforce API calls: {api_calls:,}")
    return "\n".join(out)
