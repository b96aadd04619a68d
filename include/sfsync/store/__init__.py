"""The marketing database: engine, bookkeeping tables, run ledger, synced-table schema, change
capture and the push outbox."""
