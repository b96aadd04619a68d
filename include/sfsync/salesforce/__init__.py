"""Salesforce: the counting client, the one SOQL builder, the one read loop, the writes."""
