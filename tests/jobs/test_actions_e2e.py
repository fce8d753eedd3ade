"""Actions end to end: the Procfile's web and two workers as real processes, real peers around them.

One set of processes per database serves the whole module: a file server
(ranges, no ranges, cut half-way), three pyftpdlib servers (throttled with one
connection allowed, one refusing its first connection, FTPS), a stand-in for
iconik and a notify sink. Retries are shortened through the config.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import requests

from jobs.ftp_slots import ServerSlots
from tests.conftest import TOKENS, load_fixture, reset_state
from tests.jobs.conftest import scoopa_file
from tests.support.files import FileServer, make_file
from tests.support.ftp import TestFtpServer, make_test_certificate
from tests.support.peers import RecordingServer
from tests.support.processes import ListenerProcesses

ADMIN = "admin-actions-e2e"
DOWNLOAD_ONLY = 400  # a scoopa folder no workflow acts on: downloaded (download: true), pushed nowhere


@dataclass
class Setup:
    processes: ListenerProcesses
    files: FileServer
    plain: TestFtpServer
    flaky: TestFtpServer
    secure: TestFtpServer
    iconik: RecordingServer
    sink: RecordingServer
    downloads: Path

    def post(self, path: str, body: dict[str, Any], source: str) -> dict[str, Any]:
        answer = requests.post(self.processes.url + path, json=body,
                               headers={"Authorization": f"Bearer {TOKENS[source]}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def admin_post(self, path: str) -> requests.Response:
        return requests.post(self.processes.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)

    def settled(self, source: str, key: str, kinds: set[str], timeout: float = 30) -> dict[str, Any]:
        """The item with its actions, once it has actions of ``kinds`` and none is queued or running."""

        def check() -> dict[str, Any] | None:
            found = self.processes.admin(f"/api/items?source={source}&key={quote(key)}")["items"]
            if not found:
                return None
            item = self.processes.admin(f"/api/items/{found[0]['id']}")
            done = all(action["status"] in ("done", "failed") for action in item["actions"])
            return item if done and {action["kind"] for action in item["actions"]} >= kinds else None

        return self.processes.wait_for(check, timeout)


@pytest.fixture(scope="module")
def setup(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("actions-e2e")
    reset_state(database_url, redis_url)
    certificate = make_test_certificate(tmp)
    files = FileServer(tmp / "served")
    plain = TestFtpServer(tmp / "ftp-plain", read_limit=2_000_000)  # 2 MB/s: a 1 MB push takes half a second
    flaky = TestFtpServer(tmp / "ftp-flaky", refuse_first=1)
    secure = TestFtpServer(tmp / "ftp-secure", tls=certificate)
    iconik = RecordingServer()
    sink = RecordingServer(default=(200, {"ok": True}))
    downloads = tmp / "downloads"

    def push(name: str, server: str, folder: int) -> dict[str, Any]:
        return {"name": name, "source": "scoopa", "folders": [folder], "action": "ftp_push", "ftp_server": server,
                "target_dir": "/"}

    config = {
        "download_dir": str(downloads),
        "retry": [0.2, 0.2, 0.2],
        "sources": {
            "iconik": {"token": TOKENS["iconik"], "api_url": iconik.url, "app_id": "app-e2e",
                       "auth_token": "auth-e2e-secret"},
            "scoopa": {"token": TOKENS["scoopa"], "download": True, "allow_private_hosts": True},
            # The same handler on /scoopa-strict, with the default refusal of private addresses.
            "scoopa_strict": {"token": TOKENS["scoopa"], "handler": "tests.jobs.strict_scoopa", "download": True},
            "brightcove": {"token": TOKENS["brightcove"]},
            "screen9": {"token": TOKENS["screen9"]},
        },
        "ftp_servers": {
            "plain": plain.config(max_connections=1),
            "flaky": flaky.config(),
            "secure": secure.config(tls=True, ca_file=str(certificate[0])),
        },
        "workflows": [
            push("to-plain", "plain", 100),
            push("to-flaky", "flaky", 200),
            push("to-secure", "secure", 300),
            {"name": "tell-cms", "source": "brightcove", "on": ["ingested", "failed"], "action": "notify",
             "url": f"{sink.url}/brightcove", "headers": {"Authorization": "Bearer cms-e2e-secret"}},
            {"name": "tell-site", "source": "screen9", "on": ["ready", "deleted", "updated"], "action": "notify",
             "url": f"{sink.url}/screen9"},
        ],
    }
    processes = ListenerProcesses(tmp, database_url, redis_url, config, ADMIN, mode="procfile",
                                  extra_env={"LISTENER_QUEUE": "actions-e2e"})
    processes.start()
    processes.start_worker("worker2")  # two worker processes: the FTP limit must hold across them
    try:
        yield Setup(processes, files, plain, flaky, secure, iconik, sink, downloads)
    finally:
        processes.stop()
        for server in (files, plain, flaky, secure, iconik, sink):
            server.close()


def test_cut_download_resumes_with_range_and_arrives_byte_identical(setup):
    content = make_file(setup.files.root / "cut.mxf", 3_000_000)
    setup.post("/scoopa", scoopa_file(1001, "cut.mxf", len(content), setup.files.url("cut", "cut.mxf"),
                                      folder_id=DOWNLOAD_ONLY), "scoopa")
    item = setup.settled("scoopa", "mediapool:1001", {"download"})
    [download] = item["actions"]
    assert (download["status"], download["attempts"]) == ("done", 2)
    assert download["bytes_done"] == download["bytes_total"] == len(content)
    assert item["state"] == "downloaded"
    assert Path(item["data"]["local_path"]).read_bytes() == content
    first, second = setup.files.served("cut.mxf")
    assert second.status == 206 and second.range.startswith("bytes=")
    resumed_at = int(second.range.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= first.bytes_sent < len(content)
    assert second.bytes_sent == len(content) - resumed_at  # no second full download


def test_cut_download_without_ranges_restarts_cleanly(setup):
    content = make_file(setup.files.root / "cut-plain.mov", 1_000_000)
    setup.post("/scoopa", scoopa_file(1002, "cut-plain.mov", len(content), setup.files.url("cut-plain",
                                                                                          "cut-plain.mov"),
                                      folder_id=DOWNLOAD_ONLY), "scoopa")
    item = setup.settled("scoopa", "mediapool:1002", {"download"})
    assert [(a["status"], a["attempts"]) for a in item["actions"]] == [("done", 2)]
    assert Path(item["data"]["local_path"]).read_bytes() == content
    assert [request.status for request in setup.files.served("cut-plain.mov")] == [200, 200]


def test_pushed_file_appears_under_its_final_name_only_when_whole(setup):
    content = make_file(setup.files.root / "news.mov", 1_000_000)
    final = setup.plain.root / "news.mov"
    sizes: set[int] = set()
    stop = threading.Event()

    def watch() -> None:  # as the playout's watch folder would
        while not stop.is_set():
            if final.exists():
                sizes.add(final.stat().st_size)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    setup.post("/scoopa", scoopa_file(1003, "news.mov", len(content), setup.files.url("ranged", "news.mov"),
                                      folder_id=100), "scoopa")
    item = setup.settled("scoopa", "mediapool:1003", {"download", "ftp_push"})
    stop.set()
    watcher.join()
    assert [(a["kind"], a["status"]) for a in item["actions"]] == [("ftp_push", "done"), ("download", "done")]
    assert final.read_bytes() == content
    assert sizes == {len(content)}
    assert "news.mov.part" in setup.plain.record.upload_names()
    assert "news.mov" not in setup.plain.record.upload_names()
    push = item["actions"][0]
    assert push["bytes_done"] == push["bytes_total"] == len(content) and push["speed_bps"] > 0


def test_server_refusing_the_first_connection_gets_the_file_on_a_later_attempt(setup):
    content = make_file(setup.files.root / "flaky.mov", 200_000)
    setup.post("/scoopa", scoopa_file(1004, "flaky.mov", len(content), setup.files.url("ranged", "flaky.mov"),
                                      folder_id=200), "scoopa")
    item = setup.settled("scoopa", "mediapool:1004", {"download", "ftp_push"})
    push = next(a for a in item["actions"] if a["kind"] == "ftp_push")
    assert (push["status"], push["attempts"]) == ("done", 2)
    assert (setup.flaky.root / "flaky.mov").read_bytes() == content


def test_ftps_push_with_a_test_certificate(setup):
    content = make_file(setup.files.root / "secure.mov", 500_000)
    setup.post("/scoopa", scoopa_file(1005, "secure.mov", len(content), setup.files.url("ranged", "secure.mov"),
                                      folder_id=300), "scoopa")
    item = setup.settled("scoopa", "mediapool:1005", {"download", "ftp_push"})
    push = next(a for a in item["actions"] if a["kind"] == "ftp_push")
    assert (push["status"], push["attempts"]) == ("done", 1), push["error"]
    assert (setup.secure.root / "secure.mov").read_bytes() == content
    assert setup.secure.record.args_of("PROT") == ["P"]  # the server also refuses unprotected data channels


def test_max_connections_holds_across_worker_processes(setup, redis_url):
    with setup.plain.record.lock:
        setup.plain.record.peak_connections = 0
        connections_before = setup.plain.record.total_connections
    # Another transfer holds the server's only slot while the files arrive.
    slots = ServerSlots(redis.Redis.from_url(redis_url), "plain", 1)
    assert slots.take("a-transfer-elsewhere")
    contents = {}
    for index in range(4):
        name = f"burst-{index}.mov"
        contents[name] = make_file(setup.files.root / name, 600_000)
        setup.post("/scoopa", scoopa_file(1100 + index, name, 600_000, setup.files.url("ranged", name),
                                          folder_id=100), "scoopa")

    def pushes_waiting() -> bool:
        found = setup.processes.admin("/api/actions?kind=ftp_push&workflow=to-plain&status=queued")["items"]
        waiting = [a for a in found if a["not_before"] and a["attempts"] == 0 and a["started_at"]]
        return len(waiting) == 4

    setup.processes.wait_for(pushes_waiting, timeout=20)  # each tried, found no slot, and waits
    assert setup.plain.record.total_connections == connections_before
    slots.give_back("a-transfer-elsewhere")
    for index in range(4):
        item = setup.settled("scoopa", f"mediapool:{1100 + index}", {"download", "ftp_push"})
        push = next(a for a in item["actions"] if a["kind"] == "ftp_push")
        assert (push["status"], push["attempts"]) == ("done", 1)  # waiting for the slot used no attempt
    for name, content in contents.items():
        assert (setup.plain.root / name).read_bytes() == content
    assert setup.plain.record.peak_connections == 1  # four pushes, two workers, one connection at a time


def _iconik_events(asset_id: str) -> tuple[dict, dict]:
    create = copy.deepcopy(load_fixture("iconik", "create__asset"))
    create["object_id"] = asset_id
    proxy = copy.deepcopy(load_fixture("iconik", "proxy__closed"))
    proxy["object_id"] = proxy["data"]["asset_id"] = asset_id
    return create, proxy


def test_iconik_analysis_once_per_asset_then_retried_then_refused(setup):
    first, second = "asset-e2e-1", "asset-e2e-2"
    create_1, proxy_1 = _iconik_events(first)
    create_2, proxy_2 = _iconik_events(second)
    for path, body in (("/proxy", proxy_1), ("/create", create_2), ("/create", create_1), ("/proxy", proxy_1),
                       ("/proxy", proxy_2), ("/create", create_2), ("/create", create_1)):
        setup.post(path, body, "iconik")
    for asset in (first, second):
        item = setup.settled("iconik", asset, {"analyze"})
        assert [(a["status"], a["attempts"]) for a in item["actions"]] == [("done", 1)]
    assert sorted(r.path for r in setup.iconik.requests) == [f"/API/transcode/v1/analyze/assets/{a}/"
                                                               for a in (first, second)]
    assert {(r.headers["App-ID"], r.headers["Auth-Token"]) for r in setup.iconik.requests} == {
        ("app-e2e", "auth-e2e-secret")}

    setup.iconik.queue([(500, {"errors": ["internal"]})])  # then the default 201
    create, proxy = _iconik_events("asset-e2e-3")
    setup.post("/create", create, "iconik")
    setup.post("/proxy", proxy, "iconik")
    [analyze] = setup.settled("iconik", "asset-e2e-3", {"analyze"})["actions"]
    assert (analyze["status"], analyze["attempts"], analyze["error"]) == ("done", 2, None)

    setup.iconik.queue([(403, {"errors": ["You do not have permission to analyze"]})])
    create, proxy = _iconik_events("asset-e2e-4")
    setup.post("/create", create, "iconik")
    setup.post("/proxy", proxy, "iconik")
    [analyze] = setup.settled("iconik", "asset-e2e-4", {"analyze"})["actions"]
    assert (analyze["status"], analyze["attempts"]) == ("failed", 1)
    assert "iconik answered 403" in analyze["error"] and "You do not have permission" in analyze["error"]

    # Retried by hand through the web process: submitted now. A second retry of the done action: 409.
    assert setup.admin_post(f"/api/actions/{analyze['id']}/retry").status_code == 200
    setup.processes.wait_for(lambda: setup.processes.admin(f"/api/items/{analyze['item_id']}")["actions"][0]
                             ["status"] == "done")
    assert setup.admin_post(f"/api/actions/{analyze['id']}/retry").status_code == 409
    requests_before = len(setup.iconik.requests)
    event_id = setup.processes.admin(f"/api/events?item_id={analyze['item_id']}")["items"][-1]["id"]
    replay = setup.admin_post(f"/api/events/{event_id}/replay").json()
    assert replay["status"] == "accepted" and replay["actions"] == []
    time.sleep(1)
    assert len(setup.iconik.requests) == requests_before  # a done analysis never runs twice


def test_notify_sink_receives_brightcove_and_screen9_states(setup):
    for note in load_fixture("brightcove", "ingest__sequence"):
        setup.post("/dynamic-ingest", note, "brightcove")
    failed = load_fixture("brightcove", "title_create__failed") | {"videoId": "77", "entity": "77"}
    setup.post("/dynamic-ingest", failed, "brightcove")
    for name in ("upload__success", "update__metadata", "update__deleted"):
        params = load_fixture("screen9", name) | {"token": TOKENS["screen9"]}
        assert requests.get(setup.processes.url + "/screen9", params=params, timeout=10).status_code == 200
    setup.settled("brightcove", "57838016001:5660367449001", {"notify"})
    setup.settled("brightcove", "57838016001:77", {"notify"})
    setup.settled("screen9", "hAHlHXzOLgOQI2La-hWFpg", {"notify"})
    setup.settled("screen9", "-YBpbhPLZ7vQJnvYVBk-wh", {"notify"})
    setup.processes.wait_for(lambda: len(setup.sink.requests) >= 5)
    time.sleep(0.5)
    sent = sorted((r.path, r.json()["item"]["key"], r.json()["state"]) for r in setup.sink.requests)
    assert sent == [
        ("/brightcove", "57838016001:5660367449001", "ingested"),
        ("/brightcove", "57838016001:77", "failed"),
        ("/screen9", "-YBpbhPLZ7vQJnvYVBk-wh", "deleted"),
        ("/screen9", "-YBpbhPLZ7vQJnvYVBk-wh", "updated"),
        ("/screen9", "hAHlHXzOLgOQI2La-hWFpg", "ready"),
    ]
    brightcove = [r for r in setup.sink.requests if r.path == "/brightcove"]
    assert {r.headers["Authorization"] for r in brightcove} == {"Bearer cms-e2e-secret"}
    assert "cms-e2e-secret" not in setup.processes.logs()


def test_hostile_names_and_private_addresses_are_refused_with_a_clear_error(setup):
    content = make_file(setup.files.root / "evil.mov", 1000)
    hostile = scoopa_file(1201, "../../../evil\r\n.mov", len(content), setup.files.url("ranged", "evil.mov"),
                          folder_id=DOWNLOAD_ONLY)
    setup.post("/scoopa", hostile, "scoopa")
    item = setup.settled("scoopa", "mediapool:1201", {"download"})
    assert item["actions"][0]["status"] == "done"
    assert Path(item["data"]["local_path"]) == setup.downloads / "evil.mov"
    assert (setup.downloads / "evil.mov").read_bytes() == content

    requests_before = len(setup.files.requests)
    for file_id, url in ((1202, setup.files.url("ranged", "evil.mov")),
                         (1203, "http://169.254.169.254/latest/meta-data/iam/"),
                         (1204, "http://localhost:9/file.mov")):
        setup.post("/scoopa-strict", scoopa_file(file_id, "x.mov", 1000, url), "scoopa")
        [download] = setup.settled("scoopa_strict", f"mediapool:{file_id}", {"download"})["actions"]
        assert (download["status"], download["attempts"]) == ("failed", 1)
        assert "private, loopback, link-local or reserved address" in download["error"]
        assert "allow_private_hosts: true" in download["error"]
    assert len(setup.files.requests) == requests_before  # refused before connecting
