"""DedupeCheckOperator: report duplicate people, never merge them."""

from __future__ import annotations

from airflow.sdk import Context

from include.sfsync.airflow_glue import announce_retry
from sfsync_operators.base import SyncRunOperator


class DedupeCheckOperator(SyncRunOperator):
    """Find people who are probably the same human (same normalised e-mail across leads and
    contacts, plus the ``dedupe_rules`` of the configuration) and record each pair in
    ``sfsync_duplicate`` with the rule and the reason. Nothing is merged automatically.
    """

    ui_color = "#fdf1e6"

    @announce_retry
    def execute(self, context: Context) -> dict:
        from include.sfsync.pipeline import dedupe_people

        found = dedupe_people(self.run_key)
        for rule, count in found.items():
            self.log.info("dedupe rule %s: %d new duplicate(s) recorded", rule, count)
        return found
