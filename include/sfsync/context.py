"""What every step works with: the configuration, the marketing database's engine and tables,
the catalog, and a Salesforce client made only when a step needs one.

``open_context`` builds it from what the ``prepare`` step stored (no Salesforce call);
``sync_schema`` is how ``prepare`` gets there: org lock, one describe call, schema evolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.sfsync.catalog import Catalog, build_catalog
from include.sfsync.config import SyncConfig, load_config
from include.sfsync.errors import NotPreparedError
from include.sfsync.objects import object_names
from include.sfsync.salesforce.client import SalesforceClient
from include.sfsync.store.engine import engine_for
from include.sfsync.store.ledger import check_org
from include.sfsync.store.schema import (
    build_tables,
    ensure_schema,
    forget_lost_tables,
    match_database,
    store_describes,
    stored_describes,
)
from include.sfsync.store.tables import BOOKS, ensure_bookkeeping


@dataclass
class SyncContext:
    config: SyncConfig
    engine: Engine
    catalog: Catalog
    tables: dict[str, sa.Table]
    books: dict[str, sa.Table]
    client: SalesforceClient | None = None

    def salesforce(self) -> SalesforceClient:
        if self.client is None:
            self.client = new_client(self.config)
        return self.client


def new_client(config: SyncConfig) -> SalesforceClient:
    return SalesforceClient.from_connection(config.salesforce_conn_id,
                                            bulk_poll_seconds=config.bulk_poll_seconds)


def connect(config: SyncConfig | None = None, engine: Engine | None = None
            ) -> tuple[SyncConfig, Engine]:
    """The configuration (loaded unless given) and the marketing database, bookkeeping ready."""
    config = config or load_config()
    engine = engine or engine_for(config.marketing_conn_id)
    ensure_bookkeeping(engine)
    return config, engine


def open_context(config: SyncConfig | None = None, *, engine: Engine | None = None,
                 client: SalesforceClient | None = None) -> SyncContext:
    """The context of a step that works from what ``prepare`` stored (no Salesforce call)."""
    config, engine = connect(config, engine)
    describes = stored_describes(engine)
    if not describes:
        raise NotPreparedError("no Salesforce schema stored yet: the prepare step has not run")
    catalog = build_catalog(describes, config)
    tables = match_database(engine, build_tables(catalog))
    return SyncContext(config, engine, catalog, tables, BOOKS, client)


def sync_schema(engine: Engine, client: SalesforceClient, config: SyncConfig, *,
                describes: dict[str, dict] | None = None) -> Catalog:
    """Org lock, then describe every object in one call and evolve the tables to match.
    ``describes``: the answers, when the caller asked for them along with other sub-requests."""
    check_org(engine, client)
    if describes is None:
        describes = client.describe_all(object_names(config.custom_objects))
    store_describes(engine, describes)
    catalog = build_catalog(describes, config)
    catalog.warnings.extend(forget_lost_tables(engine, catalog))  # before it recreates them
    ensure_schema(engine, catalog)
    return catalog
