"""The pull (Salesforce -> marketing database): extract, filters, load, people, conflicts,
duplicates."""
