"""sfsync's custom operators (the plugins folder is on sys.path in every Airflow process)."""

from sfsync_operators.dedupe_check import DedupeCheckOperator
from sfsync_operators.field_filter import FieldFilterOperator
from sfsync_operators.push import DedupeOnWriteOperator, SalesforcePushOperator

__all__ = ["DedupeCheckOperator", "DedupeOnWriteOperator", "FieldFilterOperator",
           "SalesforcePushOperator"]
