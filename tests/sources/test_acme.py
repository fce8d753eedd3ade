"""A source added from outside handlers/ by naming its module in the config: no edit to listener/ or jobs/."""
from __future__ import annotations

from tests.conftest import base_config, load_fixture, rows


def acme_config(**source: object) -> dict:
    config = base_config(workflows=[{"name": "tell", "source": "acme", "action": "notify",
                                     "url": "http://127.0.0.1:9/hook"}])
    config["sources"]["acme"] = {"handler": "tests.support.acme_handler", "token": "acme-secret", **source}
    return config


def test_configured_module_gets_its_endpoint_and_workflows(start_listener):
    live = start_listener(acme_config(label="studio-b"))
    answer = live.post("/acme", load_fixture("acme", "job__finished"), token="acme-secret")
    assert answer.json()["status"] == "accepted"
    [item] = rows(live.runtime, "items")
    assert (item["source"], item["key"], item["state"]) == ("acme", "job-42", "finished")
    assert item["data"]["label"] == "studio-b"
    [action] = rows(live.runtime, "actions")
    assert (action["kind"], action["workflow"]) == ("notify", "tell")
    again = live.post("/acme", load_fixture("acme", "job__finished"), token="acme-secret")
    assert again.json()["status"] == "duplicate"


def test_its_token_and_validation_apply(start_listener):
    live = start_listener(acme_config())
    assert live.post("/acme", load_fixture("acme", "job__finished"), token=None).status_code == 401
    answer = live.post("/acme", {"state": "finished"}, token="acme-secret")
    assert answer.status_code == 400 and answer.json()["message"] == "job: missing"
