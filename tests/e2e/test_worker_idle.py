"""An idle worker waits for jobs as long as it takes.

RQ's worker blocks on the queue for minutes at a time (its dequeue timeout),
and raises its Redis client's socket timeout above that, but only for
connections its client makes afterwards. The dispatcher thread shared that
client and had opened a connection first, with the runtime's 30 s socket
timeout: the worker's blocking pop came back on it, timed out after 30 s idle,
and the worker quit ("Redis connection timeout"), taking `listener run` down.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import yaml

from tests.conftest import base_config
from tests.support.processes import ROOT, ListenerProcesses

# The runtime's 30 s socket timeout shortened to 1 s, and the dispatcher's first pass made before the worker's
# first dequeue, every time (the two used to race): what took 30 s of idling takes a second.
WORKER = """
from listener import runtime
from listener.outbox import Dispatcher
from listener.worker import run_worker

redis = runtime.Runtime.redis
def short_timeout(self, *, fast_fail=False):
    client = redis(self, fast_fail=fast_fail)
    if not fast_fail:
        client.connection_pool.connection_kwargs["socket_timeout"] = 1
    return client
runtime.Runtime.redis = short_timeout

start = Dispatcher.start
def first_pass_then_start(self):
    self.run_once()
    return start(self)
Dispatcher.start = first_pass_then_start

run_worker(runtime.Runtime.load())
"""


def test_an_idle_worker_outlasts_its_redis_clients_socket_timeout(tmp_path, database_url, redis_url, clean):
    env = ListenerProcesses(tmp_path, database_url, redis_url, base_config(), "admin-x").env
    (tmp_path / "listener.yaml").write_text(yaml.safe_dump(base_config()))
    subprocess.run([sys.executable, "-m", "listener", "migrate"], cwd=ROOT, env=env, check=True)
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        worker = subprocess.Popen([sys.executable, "-c", WORKER], cwd=ROOT, env=env, stdout=output,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(5)  # five times the socket timeout, with nothing to do
        assert worker.poll() is None, log.read_text()
        assert "Redis connection timeout" not in log.read_text()
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
    assert code == 0, log.read_text()
