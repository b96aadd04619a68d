"""Push operators: marketing database -> Salesforce, after the pulls of the cycle."""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseOperator, Context


class SalesforcePushOperator(BaseOperator):
    """Push one kind of local change to Salesforce: ``people`` (updates of people already in
    Salesforce), ``campaigns``, ``campaign_members`` or ``activities`` (logged as Tasks).

    Reads the changes captured by the database triggers (any writer, plain SQL), sends only
    fields the sync user may update, 200 records per collection and five collections per API
    call, and records every rejected record in ``sfsync_error``. An idle step makes no API call.

    :param step: what to push (see above).
    :param run_key: the sync run (templated; default: DAG id + run id).
    """

    STEPS = ("people", "campaigns", "campaign_members", "activities")
    template_fields: Sequence[str] = ("run_key",)
    ui_color = "#e8f4ea"

    def __init__(self, *, step: str, run_key: str = "{{ dag.dag_id }}:{{ run_id }}", **kwargs):
        super().__init__(**kwargs)
        if step not in self.STEPS:
            raise ValueError(f"step {step!r}: expected one of {', '.join(self.STEPS)}")
        self.step = step
        self.run_key = run_key

    def execute(self, context: Context) -> dict:
        from include.sfsync.pipeline import push

        result = push(self.run_key, self.step)
        self.log.info("push %s: %s", self.step, result)
        return result


class DedupeOnWriteOperator(BaseOperator):
    """Before anything is created in Salesforce: people new to it are matched by stored id,
    then by e-mail (case-insensitive) against existing leads AND contacts, and linked to the
    match; a Lead is created only when nothing matches (required fields get the configured
    defaults on that first push only). The sync never creates a duplicate lead: an e-mail that
    another person row already holds is refused with a ``DUPLICATE_PERSON`` error.

    :param run_key: the sync run (templated; default: DAG id + run id).
    """

    template_fields: Sequence[str] = ("run_key",)
    ui_color = "#fdf1e6"

    def __init__(self, *, run_key: str = "{{ dag.dag_id }}:{{ run_id }}", **kwargs):
        super().__init__(**kwargs)
        self.run_key = run_key

    def execute(self, context: Context) -> dict:
        from include.sfsync.pipeline import push

        result = push(self.run_key, "create_people")
        self.log.info("dedupe on write: %s", result)
        return result
