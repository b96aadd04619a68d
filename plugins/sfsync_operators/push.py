"""Push operators: marketing database -> Salesforce, after the pulls of the cycle."""

from __future__ import annotations

from airflow.sdk import Context

from include.sfsync.airflow_glue import announce_retry, fail_fast
from include.sfsync.steps import CREATE_PEOPLE, UPDATE_STEPS
from sfsync_operators.base import SyncRunOperator


class SalesforcePushOperator(SyncRunOperator):
    """Push one kind of local change to Salesforce: ``people`` (updates of people already in
    Salesforce), ``campaigns``, ``campaign_members`` or ``activities`` (logged as Tasks).

    Reads the changes captured by the database triggers (any writer, plain SQL), sends only
    fields the sync user may update, 200 records per collection and five collections per API
    call, and records every rejected record in ``sfsync_error``. An idle step makes no API call.

    :param step: what to push (see above).
    """

    STEPS = UPDATE_STEPS
    ui_color = "#e8f4ea"

    def __init__(self, *, step: str, **kwargs):
        super().__init__(**kwargs)
        if step not in self.STEPS:
            raise ValueError(f"step {step!r}: expected one of {', '.join(self.STEPS)}")
        self.step = step

    @announce_retry
    def execute(self, context: Context) -> dict:
        from include.sfsync.pipeline import push

        # logged as a table (airflow_glue.default_args)
        return fail_fast(lambda: push(self.run_key, self.step), self.run_key)


class DedupeOnWriteOperator(SyncRunOperator):
    """Before anything is created in Salesforce: people new to it are matched by stored id,
    then by e-mail (case-insensitive) against existing leads AND contacts, and linked to the
    match; a Lead is created only when nothing matches (required fields get the configured
    defaults on that first push only). The sync never creates a duplicate lead: an e-mail that
    another person row already holds is refused with a ``DUPLICATE_PERSON`` error.
    """

    ui_color = "#fdf1e6"

    @announce_retry
    def execute(self, context: Context) -> dict:
        from include.sfsync.pipeline import push

        return fail_fast(lambda: push(self.run_key, CREATE_PEOPLE), self.run_key)  # as a table
