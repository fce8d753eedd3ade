"""Operating it: the worker pool restarts a worker that dies; LOG_FORMAT=json gives JSON lines."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import requests

from tests.conftest import TOKENS, base_config, config_for, load_fixture
from tests.support.processes import ROOT, ListenerProcesses


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_worker_pool_restarts_a_killed_worker_and_stops_on_sigterm(tmp_path, database_url, redis_url, clean):
    config = tmp_path / "listener.yaml"
    import yaml

    config.write_text(yaml.safe_dump(base_config()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTENER_", "REDIS_", "DATABASE_"))}
    env |= {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "LISTENER_CONFIG": str(config),
            "LISTENER_QUEUE": "listener-pool-test"}
    pool = subprocess.Popen([sys.executable, "-m", "listener", "worker", "--processes", "2"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while len(children_of(pool.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = children_of(pool.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = children_of(pool.pid)
            if len(now) == 2 and workers[0] not in now:
                break
            time.sleep(0.1)
        assert len(children_of(pool.pid)) == 2 and workers[0] not in children_of(pool.pid)
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(40) == 0
    finally:
        if pool.poll() is None:
            pool.kill()
    output = pool.stdout.read().decode()
    assert "starting it again" in output


def test_json_log_lines_for_events_and_action_attempts(tmp_path, database_url, redis_url, clean, iconik_api):
    config = config_for(iconik_api)
    processes = ListenerProcesses(tmp_path, database_url, redis_url, config, "admin-x", mode="procfile",
                                  extra_env={"LOG_FORMAT": "json"}).start()
    try:
        headers = {"Authorization": f"Bearer {TOKENS['iconik']}"}
        requests.post(processes.url + "/create", json=load_fixture("iconik", "create__asset"), headers=headers,
                      timeout=10)
        proxy = load_fixture("iconik", "proxy__closed")
        proxy["object_id"] = "2b45a8ca-f0b4-11e7-a36b-0a580a00054a"
        requests.post(processes.url + "/proxy", json=proxy, headers=headers, timeout=10)
        requests.post(processes.url + "/create", json={"realm": 3}, headers=headers, timeout=10)
        processes.wait_for(lambda: "listener.action.done" in (tmp_path / "worker.log").read_text(), timeout=20)
    finally:
        processes.stop()
    lines = []
    for name in ("web.log", "worker.log"):
        for line in (tmp_path / name).read_text().splitlines():
            if line.strip():
                lines.append(json.loads(line))  # every line is one JSON object
    by_key = {}
    for entry in lines:
        by_key.setdefault(entry.get("log_key"), []).append(entry)
    [accepted_create, accepted_proxy] = by_key["listener.iconik.accepted"]
    assert accepted_create["endpoint"] == "/create" and accepted_proxy["endpoint"] == "/proxy"
    assert accepted_create["key"] == "2b45a8ca-f0b4-11e7-a36b-0a580a00054a"
    assert by_key["listener.iconik.rejected"][0]["reason"].startswith("realm")
    [done] = by_key["listener.action.done"]
    assert (done["kind"], done["source"], done["attempt"]) == ("analyze", "iconik", "1")
    assert done["action"].isdigit()
    access = [entry for entry in lines if entry["logger"] == "gunicorn.access"]
    assert access and all("token" not in entry["message"] for entry in access)


def test_gunicorn_refuses_oversized_headers_before_the_app(tmp_path, database_url, redis_url, clean):
    processes = ListenerProcesses(tmp_path, database_url, redis_url, base_config(), "admin-x",
                                  mode="procfile").start()
    try:
        headers = {"Authorization": f"Bearer {TOKENS['iconik']}"}
        big = requests.post(processes.url + "/create", json=load_fixture("iconik", "create__asset"),
                            headers=headers | {"X-Padding": "x" * 20000}, timeout=10)
        assert big.status_code == 431  # Request Header Fields Too Large
        many = requests.post(processes.url + "/create", json=load_fixture("iconik", "create__asset"),
                             headers=headers | {f"X-H{n}": "1" for n in range(150)}, timeout=10)
        assert many.status_code == 431  # Request Header Fields Too Large
        assert processes.admin("/api/events")["items"] == []
        ok = requests.post(processes.url + "/create", json=load_fixture("iconik", "create__asset"), headers=headers,
                           timeout=10)
        assert ok.status_code == 200
    finally:
        processes.stop()
