"""`python -m listener run` as a real process tree: seed payloads in, results out of the admin API."""
from __future__ import annotations

import copy
import signal

import requests

from tests.conftest import TOKENS, config_for, load_fixture
from tests.support.processes import ListenerProcesses

ADMIN = "admin-e2e-token"
ASSET = "2b45a8ca-f0b4-11e7-a36b-0a580a00054a"


def post(processes: ListenerProcesses, path: str, body: dict, source: str) -> dict:
    answer = requests.post(processes.url + path, json=body, headers={"X-Listener-Token": TOKENS[source]}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_run_command_with_embedded_redis_processes_the_seed_payloads(tmp_path, database_url, iconik_api, clean):
    config = config_for(iconik_api)
    # No REDIS_URL: `run` starts its embedded Redis under the var directory.
    processes = ListenerProcesses(tmp_path, database_url, None, config, ADMIN, mode="run").start()
    try:
        proxy = copy.deepcopy(load_fixture("iconik", "proxy__closed"))
        proxy["object_id"] = proxy["data"]["asset_id"] = ASSET
        assert post(processes, "/proxy", proxy, "iconik")["status"] == "accepted"  # out of order on purpose
        assert post(processes, "/create", load_fixture("iconik", "create__asset"), "iconik")["status"] == "accepted"
        assert post(processes, "/create", load_fixture("iconik", "create__asset"), "iconik")["status"] == "duplicate"
        assert post(processes, "/scoopa", load_fixture("scoopa", "validation__probe"), "scoopa")["status"] == "ignored"
        assert post(processes, "/scoopa", load_fixture("scoopa", "new_file__video"), "scoopa")["status"] == "accepted"
        for note in load_fixture("brightcove", "ingest__sequence"):
            assert post(processes, "/dynamic-ingest", note, "brightcove")["status"] == "accepted"
        for name in ("upload__success", "update__deleted", "update__metadata"):
            params = load_fixture("screen9", name) | {"token": TOKENS["screen9"]}
            assert requests.get(processes.url + "/screen9", params=params, timeout=10).json()["status"] == "accepted"

        states = {(i["source"], i["key"]): i["state"] for i in processes.admin("/api/items?limit=100")["items"]}
        assert states == {
            ("iconik", ASSET): "ready",
            ("scoopa", "mediapool:535986"): "received",
            ("brightcove", "57838016001:5660367449001"): "published",
            ("screen9", "hAHlHXzOLgOQI2La-hWFpg"): "ready",
            ("screen9", "-YBpbhPLZ7vQJnvYVBk-wh"): "updated",
        }
        events = processes.admin("/api/events?limit=100")["items"]
        assert len(events) == 3 + 2 + 17 + 3
        assert sorted({e["status"] for e in events}) == ["accepted", "duplicate", "ignored"]

        processes.wait_for(lambda: iconik_api.requests, timeout=20)
        [action] = processes.wait_for(
            lambda: [a for a in processes.admin("/api/actions?kind=analyze&status=done")["items"]], timeout=20)
        assert action["attempts"] == 1
        [request] = iconik_api.requests
        assert request.path == f"/API/transcode/v1/analyze/assets/{ASSET}/"
        assert request.headers["App-ID"] == "app-id-1"
        assert request.headers["Auth-Token"] == "iconik-auth-secret"
    finally:
        codes = processes.stop(sig=signal.SIGINT)  # Ctrl-C
    assert codes == {"run": 0}
    assert not (tmp_path / "var" / "redis.sock").exists() or _socket_dead(tmp_path / "var" / "redis.sock")
    logs = processes.logs(tail=None)
    assert "Traceback" not in logs
    for secret in (*TOKENS.values(), "iconik-auth-secret", ADMIN):  # tokens went in headers and ?token=
        assert secret not in logs


def _socket_dead(path) -> bool:
    import redis

    try:
        redis.Redis(unix_socket_path=str(path), socket_connect_timeout=1).ping()
    except redis.RedisError:
        return True
    return False
