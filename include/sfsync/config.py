"""sfsync's configuration: one YAML file users edit, validated with errors that name the key.

The file is ``config/sfsync.yaml`` (or the path in ``SFSYNC_CONFIG``); every key is optional and
falls back to the defaults below. On a deployment with several workers (Celery, Kubernetes) the
Airflow Variable ``sfsync_config`` holds the same YAML (or JSON) instead, so every worker reads
one configuration without a shared disk: when it exists, it is the configuration and the file is
not read (``load_config``). ``python -m include.sfsync.config`` checks the file without
Salesforce; the names it gives are checked against the org after describe (``catalog``), at
every run's ``prepare`` step and by ``python -m include.sfsync.admin fields``.
``python -m include.sfsync.admin config`` prints the effective configuration;
``python -m include.sfsync.admin mapping`` (with a reachable org) prints every field mapping
the sync would use, ready to paste under ``mappings:``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from include.sfsync.errors import ConfigError
from include.sfsync.standardize import value_map_problem

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = PROJECT_ROOT / "config" / "sfsync.yaml"
VARIABLE = "sfsync_config"  # the Airflow Variable that, when set, replaces the file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyncFilter(_Strict):
    """Records whose ``field`` equals ``skip_when`` stay out of the marketing database."""

    object: str
    field: str
    skip_when: bool | str | float | None = True


class DedupeRule(_Strict):
    """People sharing the normalised values of ``columns`` are reported as duplicates."""

    name: str
    columns: list[str] = Field(min_length=1)
    # lower: trim + lower-case; email: lower-case, trimmed (gmail dots kept); digits: digits only
    normalize: Literal["lower", "email", "digits", "exact"] = "lower"


class FormulaFields(_Strict):
    """Formula fields change without bumping SystemModstamp, so they are excluded by default.

    Those listed in ``include`` (``Object.Field``) are synced and re-read every
    ``refresh_minutes`` by the incremental DAG.
    """

    include: list[str] = []
    refresh_minutes: int = Field(1440, ge=5)


Winner = Literal["marketing", "salesforce"]


class ConflictPolicy(_Strict):
    """Who wins when both sides changed the same field since the last sync.

    The reference system's rule is the default: leads, marketing wins; contacts, Salesforce
    wins. ``fields`` overrides it per ``Object.Field``.
    """

    objects: dict[str, Winner] = {"Lead": "marketing", "Contact": "salesforce",
                                  "Campaign": "salesforce", "CampaignMember": "salesforce"}
    fields: dict[str, Winner] = {}

    @field_validator("fields")
    @classmethod
    def _field_keys(cls, value: dict[str, Winner]) -> dict[str, Winner]:
        for key in value:
            if key.count(".") != 1 or not all(key.split(".")):
                raise ValueError(f"conflict field {key!r} must look like 'Object.Field'")
        return value

    def winner(self, sf_object: str, sf_field: str) -> Winner:
        return self.fields.get(f"{sf_object}.{sf_field}") or self.objects.get(sf_object,
                                                                               "salesforce")


class ActivityPush(_Strict):
    """Marketing activities (rows of ``marketing_activity``) logged to Salesforce as Tasks.

    Only the configured types are logged, at most once per person, type and day, and at most
    ``max_per_cycle`` Tasks per cycle (the rest wait for the next one).
    """

    # activity_type as stored -> the Task's Subject prefix.
    types: dict[str, str] = {"form_filled": "Filled out form",
                             "email_clicked": "Clicked link in e-mail"}
    max_per_cycle: int = Field(500, ge=1)


class PushSettings(_Strict):
    """The push (marketing database -> Salesforce) of people, campaigns and members."""

    enabled: bool = True
    # Which new people become Leads: "flagged", only rows whose ``sync_to_salesforce`` column is
    # true (the reference system's "Sync Person to SFDC"; "sync now" too), or "all", every row
    # inserted into ``person``. Either way a new person whose e-mail a lead or contact has is
    # linked to it, never duplicated.
    create_leads: Literal["all", "flagged"] = "flagged"
    # Required lead fields, filled on a lead's first push only and only when empty.
    lead_defaults: dict[str, str] = {"LastName": "[not provided]", "Company": "[not provided]"}
    # Above this many updates (or deletes) of one object, Bulk API 2.0 ingest is used.
    bulk_threshold: int = Field(2000, ge=1)
    # A record whose push failed this many times (with changes in between) is quarantined.
    quarantine_after: int = Field(3, ge=1)
    # Retries, within the cycle, of records that failed for a transient reason (row locks).
    transient_retries: int = Field(2, ge=0, le=10)
    activities: ActivityPush = ActivityPush()
    # The External ID field the admin adds to Lead, Contact and Campaign (README: "Set up the
    # org"): creates are upserts on it, so a create retried after a crash finds the record the
    # lost call made. Where it is missing, a retried create first looks for what it sent.
    create_key_field: str | None = Field("Sfsync_Key__c", pattern=r"^[A-Za-z][A-Za-z0-9_]*__c$")
    # Value maps applied before writing, per "Object.Field": a built-in map's name
    # (us_states, countries) or {"value as stored": "value Salesforce accepts"}.
    value_maps: dict[str, str | dict[str, str]] = {
        "Lead.State": "us_states", "Lead.Country": "countries",
        "Contact.MailingState": "us_states", "Contact.MailingCountry": "countries"}

    @field_validator("value_maps")
    @classmethod
    def _value_maps(cls, value: dict[str, str | dict[str, str]]) -> dict[str, str | dict[str, str]]:
        for key, spec in value.items():
            problem = value_map_problem(key, spec)
            if problem:
                raise ValueError(f"value map {key!r}: {problem}")
        return value


class Retention(_Strict):
    """How long the bookkeeping keeps its history (``store.retention``, pruned by every
    incremental cycle's ``maintain`` task in batches of ``batch_size`` rows, each batch its own
    short transaction) and when a change still waiting for Salesforce is flagged stale.

    ``days``: finished runs and their staging, record errors (not those of changes still
    failed or quarantined), captured changes folded into the outbox, conflicts, duplicate
    findings that no longer hold, overlap-window entries far behind their cursor; at least 7,
    the week of runs the console's API usage chart reads.
    ``count_days``: the per-run, per-object counts (the console's history of New / Updated /
    Deleted), kept longer. ``stale_after_hours``: a pending change older than this is flagged
    stale (``admin status`` lists it); it is still pushed every cycle, never dropped.
    """

    days: int = Field(30, ge=7, le=36_500)
    count_days: int = Field(400, ge=7, le=36_500)
    stale_after_hours: int = Field(24, ge=1, le=8_760)
    batch_size: int = Field(5000, ge=1, le=100_000)


class SyncConfig(_Strict):
    salesforce_conn_id: str = "salesforce_default"
    marketing_conn_id: str = "marketing_db"
    # Custom objects to sync (one table each), as API names: opted in, none by default.
    custom_objects: list[str] = []
    # Re-read changes this far behind the cursor: late-committing transactions and ties.
    overlap_seconds: int = Field(300, ge=60, le=86_400)
    # Above this many records an extract uses Bulk API 2.0 instead of REST pages.
    bulk_threshold: int = Field(10_000, ge=1)
    query_batch_size: int = Field(2000, ge=200, le=2000)
    # Seconds simple-salesforce sleeps before its first Bulk job poll.
    bulk_poll_seconds: float = Field(2.0, ge=0, le=60)
    # Fields never synced, per object: {"Lead": ["Description"]}.
    hidden_fields: dict[str, list[str]] = {}
    # "Block updates": marketing columns Salesforce values never overwrite once set,
    # per table: {"person": ["lead_score"]}.
    block_updates: dict[str, list[str]] = {}
    formula_fields: FormulaFields = FormulaFields()
    # Records kept out of the marketing database, by a field the admin chooses (none by
    # default): e.g. {object: Lead, field: Do_Not_Sync_Marketing__c, skip_when: true}.
    sync_filters: list[SyncFilter] = []
    # Field mapping overrides, "Object.Field": "column" (null or "" = do not sync the field).
    mappings: dict[str, str | None] = {}
    dedupe_rules: list[DedupeRule] = [DedupeRule(name="same_email", columns=["email"],
                                                 normalize="email")]
    # Id-set reconciliation (finds records purged beyond the deleted endpoint's window).
    reconcile_hours: int = Field(24, ge=1)
    conflicts: ConflictPolicy = ConflictPolicy()
    push: PushSettings = PushSettings()
    retention: Retention = Retention()

    @field_validator("mappings")
    @classmethod
    def _mapping_keys(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        for key, column in value.items():
            if key.count(".") != 1 or not all(key.split(".")):
                raise ValueError(f"mapping key {key!r} must look like 'Object.Field'")
            if column and not column.replace("_", "").isalnum():
                raise ValueError(f"mapping {key!r}: column {column!r} must be letters, digits "
                                 "and underscores")
        return value

    @field_validator("custom_objects")
    @classmethod
    def _custom_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.endswith("__c"):
                raise ValueError(f"custom object {name!r} must be an API name ending in __c")
        return value

    @field_validator("formula_fields")
    @classmethod
    def _formula_keys(cls, value: FormulaFields) -> FormulaFields:
        for key in value.include:
            if key.count(".") != 1:
                raise ValueError(f"formula field {key!r} must look like 'Object.Field'")
        return value


def config_path() -> Path:
    return Path(os.environ.get("SFSYNC_CONFIG") or DEFAULT_PATH)


def airflow_variable() -> str | None:
    """The Airflow Variable ``sfsync_config``, or None when it is not set.

    Asked only in a process that has Airflow's Task SDK loaded already (task processes on any
    worker, the DAG processor's callbacks, the api-server): there ``Variable.get`` goes through
    the secrets backends (``AIRFLOW_VAR_SFSYNC_CONFIG``, a Vault or AWS backend, ...) and then the
    metadata database by the Execution API. Elsewhere (the command line, scripts, tests) only the
    environment variable form is read, so that plain Python never pays Airflow's import.
    """
    if "airflow.sdk" not in sys.modules:
        return os.environ.get("AIRFLOW_VAR_" + VARIABLE.upper())
    from airflow.sdk import Variable

    return Variable.get(VARIABLE, default=None)


def load_config(path: Path | str | None = None, overrides: dict[str, Any] | None = None
                ) -> SyncConfig:
    """Read and validate the configuration: ``path`` if given, else the Airflow Variable
    ``sfsync_config`` when it is set (:func:`airflow_variable`), else the file (a missing file
    means all defaults)."""
    variable = None if path else airflow_variable()
    if variable is not None:
        return _validated(_parsed(variable, f"Airflow Variable {VARIABLE!r}"),
                          f"Airflow Variable {VARIABLE!r}", overrides)
    path = Path(path) if path else config_path()
    data: dict[str, Any] = {}
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text: byte {exc.object[exc.start:exc.start + 1]!r}"
                              f" at position {exc.start}; save the file as UTF-8") from None
        except OSError as exc:  # a directory, no permission to read it
            raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None
        data = _parsed(text, str(path))
    return _validated(data, str(path), overrides)


def _parsed(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        # one line: PyYAML's message spans several, with the offending text
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{source}: not valid YAML: {where}{problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings")
    return data


def _validated(data: dict[str, Any], source: str, overrides: dict[str, Any] | None
               ) -> SyncConfig:
    data = {**data, **(overrides or {})}
    try:
        return SyncConfig(**data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}: {message}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def main() -> int:
    """``python -m include.sfsync.config``: the file checked (not yet against the org); a
    mistake is one line on stderr naming the key, exit status 2."""
    path = config_path()
    try:
        load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: valid" if path.exists() else f"{path}: no such file: the defaults apply")
    print("The objects, fields and columns it names are checked against the org by every run's "
          "prepare step and by `python -m include.sfsync.admin fields`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
