"""analyze (SPEC 3): once per ready asset, with iconik's headers and path; retried on 429/5xx/network only."""
from __future__ import annotations

import copy

from tests.conftest import base_config, load_fixture
from tests.jobs.conftest import settle

ASSET = "2b45a8ca-f0b4-11e7-a36b-0a580a00054a"


def create_for(asset_id: str) -> dict:
    payload = copy.deepcopy(load_fixture("iconik", "create__asset"))
    payload["object_id"] = asset_id
    return payload


def proxy_for(asset_id: str) -> dict:
    payload = copy.deepcopy(load_fixture("iconik", "proxy__closed"))
    payload["object_id"] = payload["data"]["asset_id"] = asset_id
    return payload


def iconik_config(api_url: str, **options: object) -> dict:
    config = base_config()
    config["sources"]["iconik"].update({"api_url": api_url} | options)
    return config


def test_one_request_per_asset_with_iconik_headers_after_duplicates_and_disorder(start_listener, recorder):
    iconik = recorder()
    live = start_listener(iconik_config(iconik.url))
    other = "c521e01a-f0a2-11e7-b528-0a580a000257"
    # Out of order (the proxy first for one asset, the create first for the other), each delivered twice.
    deliveries = [("/proxy", proxy_for(other)), ("/create", create_for(ASSET)), ("/proxy", proxy_for(other)),
                  ("/create", create_for(ASSET)), ("/proxy", proxy_for(ASSET)), ("/create", create_for(other)),
                  ("/proxy", proxy_for(ASSET)), ("/create", create_for(other))]
    for path, payload in deliveries:
        assert live.post(path, payload).status_code == 200
    actions = settle(live.runtime)
    assert [(a["kind"], a["status"], a["attempts"]) for a in actions] == [("analyze", "done", 1)] * 2
    assert sorted(iconik.paths()) == sorted(f"/API/transcode/v1/analyze/assets/{asset}/" for asset in (ASSET, other))
    for request in iconik.requests:
        assert request.method == "POST"
        assert request.headers["App-ID"] == "app-id-1"
        assert request.headers["Auth-Token"] == "iconik-auth-secret"
    # Delivered again once analysed: nothing more.
    live.post("/create", create_for(ASSET))
    live.post("/proxy", proxy_for(ASSET))
    settle(live.runtime)
    assert len(iconik.requests) == 2


def test_server_error_is_retried_then_submitted(start_listener, recorder):
    iconik = recorder()
    iconik.queue([(500, {"errors": ["try later"]})])
    live = start_listener(iconik_config(iconik.url))
    live.post("/create", create_for(ASSET))
    live.post("/proxy", proxy_for(ASSET))
    [action] = settle(live.runtime)
    assert (action["status"], action["attempts"], action["error"]) == ("done", 2, None)
    assert len(iconik.requests) == 2


def test_rate_limit_is_retried(start_listener, recorder):
    iconik = recorder()
    iconik.queue([(429, {"errors": ["slow down"]}), (503, {})])
    live = start_listener(iconik_config(iconik.url))
    live.post("/create", create_for(ASSET))
    live.post("/proxy", proxy_for(ASSET))
    [action] = settle(live.runtime)
    assert (action["status"], action["attempts"]) == ("done", 3)


def test_forbidden_fails_at_once_with_iconik_message(start_listener, recorder):
    iconik = recorder()
    iconik.queue([(403, {"errors": ["App-ID is not allowed to analyze"]})])
    live = start_listener(iconik_config(iconik.url))
    live.post("/create", create_for(ASSET))
    live.post("/proxy", proxy_for(ASSET))
    [action] = settle(live.runtime)
    assert (action["status"], action["attempts"]) == ("failed", 1)
    assert "iconik answered 403" in action["error"] and "App-ID is not allowed to analyze" in action["error"]
    assert len(iconik.requests) == 1


def test_unreachable_iconik_is_retried_on_the_schedule_then_failed(start_listener):
    live = start_listener(iconik_config("http://127.0.0.1:9"))  # nothing listens on the discard port
    live.post("/create", create_for(ASSET))
    live.post("/proxy", proxy_for(ASSET))
    [action] = settle(live.runtime)
    assert (action["status"], action["attempts"]) == ("failed", 3)
    assert "cannot reach iconik" in action["error"]
    assert action["finished_at"] is not None


def test_the_older_videointel_path_is_a_config_value_away(start_listener, recorder):
    iconik = recorder()
    live = start_listener(iconik_config(iconik.url, analysis_path="/API/transcode/v1/videointel/assets/{asset_id}/"))
    live.post("/create", create_for(ASSET))
    live.post("/proxy", proxy_for(ASSET))
    settle(live.runtime)
    assert iconik.paths() == [f"/API/transcode/v1/videointel/assets/{ASSET}/"]
