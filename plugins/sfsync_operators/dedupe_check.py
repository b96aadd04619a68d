"""DedupeCheckOperator: report duplicate people, never merge them."""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseOperator, Context


class DedupeCheckOperator(BaseOperator):
    """Find people who are probably the same human (same normalised e-mail across leads and
    contacts, plus the ``dedupe_rules`` of the configuration) and record each pair in
    ``sfsync_duplicate`` with the rule and the reason. Nothing is merged automatically.

    :param run_key: the sync run (templated; default: DAG id + run id).
    """

    template_fields: Sequence[str] = ("run_key",)
    ui_color = "#fdf1e6"

    def __init__(self, *, run_key: str = "{{ dag.dag_id }}:{{ run_id }}", **kwargs):
        super().__init__(**kwargs)
        self.run_key = run_key

    def execute(self, context: Context) -> dict:
        from include.sfsync.pipeline import dedupe_people

        found = dedupe_people(self.run_key)
        for rule, count in found.items():
            self.log.info("dedupe rule %s: %d new duplicate(s) recorded", rule, count)
        return found
