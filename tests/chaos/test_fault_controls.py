"""The emulator's fault controls the chaos run relies on: faults drawn with a probability from
a seeded sequence, faults on creates only, and ``slow_answer`` (the call runs and commits, its
answer waits: a client killed meanwhile never learns what it created)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
from simple_salesforce.exceptions import SalesforceGeneralError

from include.salesforce_emulator.errors import ApiError
from include.salesforce_emulator.store import Fault

pytestmark = pytest.mark.integration


def _firings(emu, seed: int, calls: int = 60) -> list[bool]:
    """Which of ``calls`` queries a 30 % fault (seeded) hit."""
    sf = emu.salesforce()
    emu.control("POST", "/faults", json={"kind": "http_500", "endpoint": "query",
                                          "count": 1000, "probability": 0.3, "seed": seed})
    hits = []
    for _ in range(calls):
        try:
            sf.query("SELECT Id FROM User LIMIT 1")
            hits.append(False)
        except SalesforceGeneralError:
            hits.append(True)
    emu.control("DELETE", "/faults")
    return hits


def test_probability_faults_fire_as_their_seed_draws(fresh_emulator):
    first, again, other = (_firings(fresh_emulator, 7), _firings(fresh_emulator, 7),
                           _firings(fresh_emulator, 8))
    assert first == again  # the same requests in the same order fire alike
    assert first != other
    assert 5 <= sum(first) <= 35  # about 30 %
    with pytest.raises(ApiError, match="probability"):
        fresh_emulator.server.org.add_fault(Fault(endpoint="*", kind="http_500", probability=1.5))


def test_a_fault_armed_on_creates_only_spares_other_calls(fresh_emulator):
    emu = fresh_emulator
    sf = emu.salesforce()
    fault = emu.control("POST", "/faults", json={"kind": "http_503", "endpoint": "*",
                                                  "creates_only": True, "count": 1})
    sf.query("SELECT Id FROM Lead LIMIT 1")  # a query: not a create
    lead = sf.query("SELECT Id FROM Lead LIMIT 1")["records"][0]["Id"]
    sf.Lead.update(lead, {"Title": "not a create"})
    assert [f["id"] for f in emu.control("GET", "/faults")] == [fault["id"]]
    with pytest.raises(SalesforceGeneralError):
        sf.Lead.create({"LastName": "Held", "Company": "Acme"})
    assert emu.control("GET", "/faults") == []


def test_slow_answer_commits_the_create_before_it_answers(fresh_emulator):
    """The kill the chaos run aims at: the record exists while its creator still waits."""
    emu = fresh_emulator
    sf = emu.salesforce()
    emu.control("POST", "/faults", json={"kind": "slow_answer", "endpoint": "*",
                                          "creates_only": True, "count": 1,
                                          "delay_seconds": 2.0})
    answers = {}

    def create():
        answers["result"] = sf.restful("composite", method="POST", json={"compositeRequest": [{
            "method": "POST", "url": "/services/data/v59.0/composite/sobjects",
            "referenceId": "new", "body": {"allOrNone": False, "records": [
                {"attributes": {"type": "Lead"}, "LastName": "Slow answer", "Company": "Acme"}]}}]})

    started = time.monotonic()
    thread = threading.Thread(target=create)
    thread.start()
    deadline = time.monotonic() + 10
    found = []
    while time.monotonic() < deadline and not found:
        found = [r for r in emu.control("GET", "/export?objects=Lead")["Lead"]
                 if r["LastName"] == "Slow answer"]
        time.sleep(0.05)
    assert found and "result" not in answers  # created, and the creator is still waiting
    other = emu.salesforce()
    other.query("SELECT Id FROM Lead LIMIT 1")  # the org serves others meanwhile
    thread.join(10)
    assert time.monotonic() - started >= 2.0
    body = answers["result"]["compositeResponse"][0]["body"]
    assert body[0]["id"] == found[0]["Id"]


def test_replication_endpoints_to_the_second_on_request(fresh_emulator):
    """Salesforce's updated/deleted endpoints work in whole minutes; the chaos run, whose
    cycles are seconds apart on the real clock, has them work to the second."""
    emu = fresh_emulator
    sf = emu.salesforce()
    now = datetime.fromisoformat(emu.control("POST", "/clock", json={"frozen": True})["now"]
                                 .replace("Z", "+00:00"))
    if now.second == 0:
        now = datetime.fromisoformat(emu.control("POST", "/clock", json={
            "advance_seconds": 7})["now"].replace("Z", "+00:00"))

    def latest() -> datetime:
        found = sf.Lead.updated(now - timedelta(hours=1), now + timedelta(minutes=5))
        return datetime.fromisoformat(found["latestDateCovered"].replace("+0000", "+00:00"))

    assert latest() == now.replace(second=0, microsecond=0)  # the minute, as Salesforce
    emu.control("PATCH", "/settings", json={"replication_granularity_seconds": 1})
    assert latest() == now.replace(microsecond=0)
