"""Faults injected into real processes (issue: reliability): a 200 means the event and its work survive."""
from __future__ import annotations

import signal
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import select

from listener.db import get_engine
from listener.models import items
from tests.conftest import TOKENS, asset_events, base_config, config_for, load_fixture
from tests.support.backends import POSTGRES_URL
from tests.support.processes import ListenerProcesses
from tests.support.tcp_proxy import TcpProxy

ADMIN = "admin-faults"


def test_web_killed_under_load_loses_no_acknowledged_event(tmp_path, database_url, redis_url, clean):
    processes = ListenerProcesses(tmp_path, database_url, redis_url, base_config(), ADMIN, mode="procfile").start()
    acknowledged: list[str] = []
    lock, stop = threading.Lock(), threading.Event()

    def client(number: int) -> None:
        session = requests.Session()
        for index in range(5000):  # bounded; the kill ends it much sooner
            if stop.is_set():
                return
            media = f"c{number}-{index}"
            try:
                answer = session.get(processes.url + "/screen9", timeout=5, params={
                    "mediaid": media, "status": "success", "token": TOKENS["screen9"]})
            except requests.RequestException:
                continue
            if answer.status_code == 200:
                with lock:
                    acknowledged.append(media)

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        processes.wait_for(lambda: len(acknowledged) >= 200, timeout=30, interval=0.02)
        processes.stop("web", sig=signal.SIGKILL)  # master and workers, mid-request
        stop.set()
        for thread in threads:
            thread.join(10)
    finally:
        stop.set()
        processes.stop()
    with get_engine(database_url).connect() as conn:
        stored = set(conn.execute(select(items.c.key).where(items.c.source == "screen9")).scalars())
    missing = set(acknowledged) - stored
    print(f"acknowledged {len(acknowledged)}, stored {len(stored)}, missing {len(missing)}")
    assert not missing


def test_database_unreachable_is_503_then_works_again_without_restart(tmp_path, database_url, redis_url, clean):
    proxy, lock_holder = None, None
    env = {}
    if database_url.startswith("sqlite"):
        env["SQLITE_BUSY_TIMEOUT_MS"] = "300"
        url = database_url
    else:
        proxy = TcpProxy("127.0.0.1", 5432).start()
        url = POSTGRES_URL.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    processes = ListenerProcesses(tmp_path, url, redis_url, base_config(), ADMIN, mode="procfile",
                                  extra_env=env).start()
    headers = {"Authorization": f"Bearer {TOKENS['iconik']}"}
    create = load_fixture("iconik", "create__asset")
    try:
        assert requests.post(processes.url + "/create", json=create, headers=headers, timeout=10).status_code == 200
        if proxy:
            proxy.stop()  # PostgreSQL unreachable: connections cut and refused
        else:
            lock_holder = sqlite3.connect(database_url.split("///", 1)[1])
            lock_holder.execute("BEGIN EXCLUSIVE")  # SQLite cannot take a write
        down = [requests.post(processes.url + "/proxy", json=load_fixture("iconik", "proxy__closed"),
                              headers=headers, timeout=20) for _ in range(3)]
        assert [a.status_code for a in down] == [503] * 3
        assert all(a.headers["Retry-After"] == "5" for a in down)
        assert all("database unavailable" in a.json()["message"] for a in down)
        if proxy:
            proxy.start()
        else:
            lock_holder.rollback()
        back = requests.post(processes.url + "/proxy", json=load_fixture("iconik", "proxy__closed"),
                             headers=headers, timeout=20)
        assert back.status_code == 200 and back.json()["status"] == "accepted"
        assert "Traceback" not in (tmp_path / "web.log").read_text().split("database_unavailable")[0][-2000:]
    finally:
        if lock_holder:
            lock_holder.close()
        processes.stop()
        if proxy:
            proxy.stop()
    with get_engine(database_url).connect() as conn:
        assert len(conn.execute(select(items)).all()) == 2  # the refused deliveries left nothing behind


def test_burst_of_one_delivery_from_many_senders_gives_one_item_and_one_action(tmp_path, database_url, redis_url,
                                                                                clean, iconik_api):
    processes = ListenerProcesses(tmp_path, database_url, redis_url, config_for(iconik_api), ADMIN,
                                  mode="procfile", extra_env={"WEB_CONCURRENCY": "4"}).start()
    create, proxy = asset_events("burst-asset")
    barrier = threading.Barrier(16)

    def send(number: int) -> dict:
        barrier.wait()
        path, body = ("/create", create) if number % 2 else ("/proxy", proxy)
        answer = requests.post(processes.url + path, json=body, timeout=20,
                               headers={"Authorization": f"Bearer {TOKENS['iconik']}"})
        return answer.json() | {"code": answer.status_code}

    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(send, range(16)))
        assert {a["code"] for a in answers} == {200}
        assert sorted(a["status"] for a in answers).count("accepted") == 2
        processes.wait_for(lambda: iconik_api.requests, timeout=20)
        actions = processes.wait_for(
            lambda: processes.admin("/api/actions?kind=analyze&status=done")["items"], timeout=20)
        items_ = processes.admin("/api/items")["items"]
    finally:
        processes.stop()
    assert len(items_) == 1 and items_[0]["state"] == "ready"
    assert len(actions) == 1 and len(iconik_api.requests) == 1
