"""Work is scheduled durably (SPEC 2): Redis down at answer time, handed over once it is back."""
from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

import pytest
import redis
from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.utils import utcparse
from sqlalchemy.exc import OperationalError

import jobs.runner
from listener.outbox import JOB_FUNCTION, Dispatcher, Outbox, Pending, _job_options
from tests.conftest import LiveListener, asset_events, config_for, iconik_path, rows, run_jobs
from tests.support.backends import RedisServer
from tests.support.processes import ListenerProcesses

ADMIN = "admin-e2e-token"


@pytest.fixture
def own_redis():
    server = RedisServer().start()
    yield server
    server.stop()


def _what_a_hand_over_leaves(connection: redis.Redis, hand_over) -> dict:  # noqa: ANN001 - a callable
    """Every key a hand-over of action 7 leaves in an empty Redis, with its type, TTL and contents; the job's
    two timestamps checked for RQ's format and left out, its data as RQ's zlib.decompress reads it."""
    connection.flushdb()
    hand_over()
    left = {}
    for key in sorted(connection.scan_iter()):
        kind = connection.type(key).decode()
        contents = {"hash": connection.hgetall, "list": lambda k: connection.lrange(k, 0, -1),
                    "set": connection.smembers}[kind](key)
        if kind == "hash":
            for stamp in (b"created_at", b"enqueued_at"):
                utcparse(contents.pop(stamp).decode())
            contents[b"data"] = zlib.decompress(contents[b"data"])
        left[key.decode()] = (kind, connection.ttl(key), contents)
    return left


def test_a_job_handed_over_is_the_job_rqs_enqueue_call_makes(redis_url):
    connection = redis.Redis.from_url(redis_url)
    outbox = Outbox(connection, "outbox-test")
    ours = _what_a_hand_over_leaves(connection, lambda: outbox.hand_over([Pending(7)]))

    def rqs() -> None:
        with connection.pipeline() as pipe:
            outbox.queue.enqueue_call(JOB_FUNCTION, pipeline=pipe, **_job_options(Pending(7)))
            pipe.execute()

    assert ours == _what_a_hand_over_leaves(connection, rqs)
    assert set(ours) == {"rq:job:action-7-0", "rq:queue:outbox-test", "rq:queues"}
    job = Job.fetch("action-7-0", connection=connection)
    assert (job.func_name, job.args, job.kwargs, job.origin, job.timeout, job.result_ttl, job.failure_ttl) == \
        (JOB_FUNCTION, (7,), {}, "outbox-test", 6 * 3600, 0, 7 * 86400)


def test_a_job_handed_over_has_its_data_compressed_with_a_small_window(redis_url):
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    Outbox(connection, "outbox-test").hand_over([Pending(7)])
    data = connection.hget("rq:job:action-7-0", "data")
    # zlib's header: the window is 2 ** (8 + its first byte's high nibble); 512 bytes, where zlib.compress's 32 KiB
    # window cost a webhook 71 µs of setting up.
    assert (data[0] >> 4, zlib.decompress(data)) == (1, Job.fetch("action-7-0", connection=connection).data)


def test_request_path_hands_over_after_commit(start_listener, iconik_api):
    live = start_listener(config_for(iconik_api))
    create, proxy = asset_events("asset-1")
    live.post("/create", create)
    live.post("/proxy", proxy)
    [action] = rows(live.runtime, "actions")
    queue = Queue(live.runtime.settings.queue_name, connection=live.runtime.redis())
    assert queue.job_ids == [f"action-{action['id']}-0"]
    run_jobs(live.runtime)
    assert iconik_api.paths() == ["/API/transcode/v1/analyze/assets/asset-1/"]
    [action] = rows(live.runtime, "actions")
    assert (action["status"], action["attempts"]) == ("done", 1)


def test_redis_down_then_back_hands_every_action_over_once(start_listener, iconik_api, own_redis):
    live = start_listener(config_for(iconik_api), redis_url=own_redis.url)
    own_redis.stop()
    for index in range(5):
        for event in asset_events(f"asset-{index}"):
            answer = live.post(iconik_path(event), event)
            assert answer.status_code == 200, answer.text
    assert [a["status"] for a in rows(live.runtime, "actions")] == ["queued"] * 5

    own_redis.start()
    connection = redis.Redis.from_url(own_redis.url)
    dispatcher = Dispatcher(live.runtime.engine, Outbox(connection, live.runtime.settings.queue_name), grace=0)
    assert dispatcher.run_once() == 5
    assert dispatcher.run_once() == 0  # already handed over: not again
    assert len(Queue(live.runtime.settings.queue_name, connection=connection).job_ids) == 5
    run_jobs(live.runtime)
    assert sorted(iconik_api.paths()) == [f"/API/transcode/v1/analyze/assets/asset-{i}/" for i in range(5)]
    assert [(a["status"], a["attempts"]) for a in rows(live.runtime, "actions")] == [("done", 1)] * 5


def test_dispatcher_leaves_fresh_actions_to_the_request_path(start_listener, iconik_api, own_redis):
    live = start_listener(config_for(iconik_api), redis_url=own_redis.url)
    own_redis.stop()
    for event in asset_events("asset-x"):
        live.post(iconik_path(event), event)
    own_redis.start()
    dispatcher = Dispatcher(live.runtime.engine, Outbox(redis.Redis.from_url(own_redis.url), "listener-test"),
                            grace=3600)
    assert dispatcher.run_once() == 0


def test_processes_redis_down_every_200_gets_its_work_once(tmp_path, database_url, iconik_api, own_redis, clean):
    """The Procfile's web and worker as processes; Redis stopped while events arrive, then started."""
    processes = ListenerProcesses(tmp_path, database_url, own_redis.url, config_for(iconik_api), ADMIN,
                                  mode="procfile").start()
    try:
        own_redis.stop()
        acknowledged = 0
        for index in range(10):
            for event in asset_events(f"asset-{index}"):
                path = iconik_path(event)
                answer = processes_post(processes, path, event)
                assert answer.status_code == 200, answer.text
                acknowledged += 1
        assert acknowledged == 20
        assert iconik_api.paths() == []
        own_redis.start()
        processes.wait_for(lambda: len(iconik_api.paths()) >= 10, timeout=30)
        done = processes.wait_for(lambda: all_done(processes, 10), timeout=15)
        assert sorted(iconik_api.paths()) == sorted(f"/API/transcode/v1/analyze/assets/asset-{i}/" for i in range(10))
        assert {(a["status"], a["attempts"]) for a in done} == {("done", 1)}
    finally:
        processes.stop()


def processes_post(processes: ListenerProcesses, path: str, body: dict):
    import requests

    return requests.post(processes.url + path, json=body, timeout=10,
                         headers={"Authorization": "Bearer iconik-hook-secret"})


def all_done(processes: ListenerProcesses, count: int) -> list[dict] | None:
    actions = processes.admin("/api/actions?kind=analyze")["items"]
    return actions if len(actions) == count and all(a["status"] == "done" for a in actions) else None


def test_an_action_whose_job_failed_before_claiming_it_is_handed_over_again(start_listener, iconik_api,
                                                                            monkeypatch):
    live = start_listener(config_for(iconik_api))
    for event in asset_events("asset-1"):
        live.post(iconik_path(event), event)
    claim = jobs.runner.claim

    def unreachable(*_args):
        raise OperationalError("UPDATE actions ...", {}, Exception("connection refused"))

    monkeypatch.setattr(jobs.runner, "claim", unreachable)
    run_jobs(live.runtime)  # the job fails: the database refused the claim
    queue = Queue(live.runtime.settings.queue_name, connection=live.runtime.redis())
    [action] = rows(live.runtime, "actions")
    assert (action["status"], action["attempts"]) == ("queued", 0)
    assert queue.failed_job_registry.get_job_ids() == [f"action-{action['id']}-0"]

    monkeypatch.setattr(jobs.runner, "claim", claim)
    dispatcher = Dispatcher(live.runtime.engine, Outbox(live.runtime.redis(), live.runtime.settings.queue_name),
                            grace=0)
    assert dispatcher.run_once() == 1
    assert dispatcher.run_once() == 0  # queued again: not twice
    run_jobs(live.runtime)
    assert iconik_api.paths() == ["/API/transcode/v1/analyze/assets/asset-1/"]
    [action] = rows(live.runtime, "actions")
    assert (action["status"], action["attempts"]) == ("done", 1)


class Clock:
    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


def take_like_a_worker(queue: Queue) -> str:
    """What a worker's BLMOVE does: the job at the queue's head moves to its intermediate list."""
    return queue.connection.lmove(queue.key, queue.intermediate_queue_key).decode()


def analyses_one_taken(start_listener, iconik_api, *assets: str) -> tuple[LiveListener, Queue, str]:  # noqa: ANN001
    """A listener with the assets' analyses queued, the first of them taken from the queue by a worker."""
    live = start_listener(config_for(iconik_api))
    for asset in assets:
        for event in asset_events(asset):
            live.post(iconik_path(event), event)
    queue = Queue(live.runtime.settings.queue_name, connection=live.runtime.redis())
    return live, queue, take_like_a_worker(queue)


def timed_dispatcher(live: LiveListener) -> tuple[Dispatcher, Clock]:
    clock = Clock()
    outbox = Outbox(live.runtime.redis(), live.runtime.settings.queue_name)
    return Dispatcher(live.runtime.engine, outbox, clock=clock, stranded_after=5), clock


def test_a_job_taken_by_a_worker_that_never_started_it_is_put_back_once(start_listener, iconik_api):
    live, queue, stranded = analyses_one_taken(start_listener, iconik_api, "asset-1", "asset-2")  # worker gone
    queue.intermediate_queue.set_first_seen(stranded)  # RQ's maintenance saw it there too
    dispatcher, clock = timed_dispatcher(live)
    assert dispatcher.run_once() == 0  # seen taken, not yet for long
    clock.advance(4.9)
    assert dispatcher.run_once() == 0
    clock.advance(0.1)
    assert dispatcher.run_once() == 1
    assert queue.job_ids[0] == stranded  # at the front: it has waited longest
    assert queue.intermediate_queue.get_job_ids() == []
    assert queue.intermediate_queue.get_first_seen(stranded) is None  # RQ would fail it when taken again
    assert take_like_a_worker(queue) == stranded  # taken again, by another worker that is lost too
    clock.advance(1)
    assert dispatcher.run_once() == 0  # timed afresh, from this sweep
    clock.advance(5)
    assert dispatcher.run_once() == 1
    clock.advance(60)
    assert dispatcher.run_once() == 0  # not twice
    assert len(queue.job_ids) == 2
    run_jobs(live.runtime)
    assert sorted(iconik_api.paths()) == [f"/API/transcode/v1/analyze/assets/asset-{i}/" for i in (1, 2)]
    assert [(a["status"], a["attempts"]) for a in rows(live.runtime, "actions")] == [("done", 1)] * 2


def test_a_job_a_worker_starts_late_is_not_put_back(start_listener, iconik_api):
    live, queue, taken = analyses_one_taken(start_listener, iconik_api, "asset-1")
    dispatcher, clock = timed_dispatcher(live)
    assert dispatcher.run_once() == 0
    queue.connection.lrem(queue.intermediate_queue_key, 1, taken)  # the worker starts it, as RQ's
    clock.advance(10)                                               # prepare_job_execution does
    assert dispatcher.run_once() == 0
    assert not dispatcher.outbox.put_back(taken)  # nor if the sweep had read the list just before
    assert queue.job_ids == []
    assert queue.intermediate_queue.get_job_ids() == []


def test_a_job_taken_and_started_is_left_to_its_worker(start_listener, iconik_api):
    live, queue, taken = analyses_one_taken(start_listener, iconik_api, "asset-1")
    with queue.connection.pipeline() as pipe:  # as a worker started it
        queue.started_job_registry.add_execution(Execution("execution-1", taken, queue.connection), pipe, ttl=600)
        pipe.execute()
    dispatcher, clock = timed_dispatcher(live)
    assert dispatcher.run_once() == 0
    clock.advance(10)
    assert dispatcher.run_once() == 0  # a worker of several queues leaves it in the list while it runs
    assert queue.job_ids == []
