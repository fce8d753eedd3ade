"""The per-server connection limit in Redis: counted, given back, and freed when a holder dies."""
from __future__ import annotations

import time

import pytest
import redis

from jobs.ftp_slots import NoSlot, ServerSlots


@pytest.fixture
def connection(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.delete("listener:ftp-slots:playout")
    yield client
    client.delete("listener:ftp-slots:playout")


def test_at_most_the_limit_is_taken_and_a_slot_given_back_is_free_again(connection):
    slots = ServerSlots(connection, "playout", 2)
    assert slots.take("a") and slots.take("b")
    assert not slots.take("c")
    assert slots.take("a")  # a holder taking again keeps its one slot
    slots.give_back("a")
    assert slots.take("c")
    assert sorted(slots.holders()) == ["b", "c"]


def test_a_dead_holders_slot_frees_itself_when_its_lease_runs_out(connection):
    slots = ServerSlots(connection, "playout", 1, lease=0.3)
    assert slots.take("killed-worker")
    assert not slots.take("other")
    time.sleep(0.4)
    assert slots.take("other")


def test_a_holder_keeps_its_slot_while_it_works(connection):
    slots = ServerSlots(connection, "playout", 1, lease=0.3)
    with slots.hold("worker-1"):
        time.sleep(0.5)  # longer than the lease: renewed in the background
        with pytest.raises(NoSlot, match="all 1 connections to FTP server playout are in use"), slots.hold("worker-2"):
            pass
    assert slots.holders() == []
    with slots.hold("worker-2"):
        assert slots.holders() == ["worker-2"]
