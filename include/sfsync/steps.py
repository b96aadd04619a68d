"""The push steps, by name: the one registry the DAGs, the operators and the pipeline read
(standard library only: DAG files import it at parse time)."""

from __future__ import annotations

# Dedupe on write: people new to Salesforce are linked or created before anything else.
CREATE_PEOPLE = "create_people"
# After the pulls of the cycle, in this order: new people first, then updates; members after
# people and campaigns, whose ids they need.
PUSH_STEPS = (CREATE_PEOPLE, "people", "campaigns", "campaign_members", "activities")
# The steps the push operator runs (the dedupe step has its own operator).
UPDATE_STEPS = PUSH_STEPS[1:]
