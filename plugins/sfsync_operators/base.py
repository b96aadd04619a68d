"""What every sfsync operator shares: the sync run its work belongs to."""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseOperator

RUN_KEY = "{{ dag.dag_id }}:{{ run_id }}"  # airflow_glue.run_key_of, as a template


class SyncRunOperator(BaseOperator):
    """An operator working for one sync run.

    :param run_key: the sync run (templated; default: DAG id + run id).
    """

    template_fields: Sequence[str] = ("run_key",)

    def __init__(self, *, run_key: str = RUN_KEY, **kwargs):
        super().__init__(**kwargs)
        self.run_key = run_key
