"""FieldFilterOperator: the field and record filters between extract and load."""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import Context

from include.sfsync.airflow_glue import announce_retry
from sfsync_operators.base import SyncRunOperator


class FieldFilterOperator(SyncRunOperator):
    """Apply sfsync's field filters to one object's staged records.

    Records caught by a sync filter (e.g. ``Do_Not_Sync_Marketing__c``) are dropped and counted
    as Skipped; hidden and formula fields are stripped; "block updates" columns are enforced by
    the load. Works on the durable staging only, so a retry never calls Salesforce.

    :param sf_object: the Salesforce object whose staged records to filter (templated).
    :param run_key: the sync run the staging belongs to (templated; default: DAG id + run id).
    """

    template_fields: Sequence[str] = ("sf_object", "run_key")
    ui_color = "#e8f4fa"

    def __init__(self, *, sf_object: str, **kwargs):
        super().__init__(**kwargs)
        self.sf_object = sf_object

    @announce_retry
    def execute(self, context: Context) -> dict:
        from include.sfsync.pipeline import filter_object

        return filter_object(self.run_key, self.sf_object)  # Object | Kept | Skipped
