"""ftp_push (SPEC 4, seed 000): a downloaded file goes to every matching workflow's FTP server, safely."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import redis
from rq import Queue

from jobs.ftp_slots import ServerSlots
from tests.conftest import base_config, rows, run_jobs
from tests.jobs.conftest import scoopa_file, settle
from tests.support.files import make_file
from tests.support.pagecache import cached_bytes, device_read_ahead, skip_unless_pages_drop


def push_config(tmp_path: Path, servers: dict, workflows: list[dict], **scoopa: object) -> dict:
    config = base_config(download_dir=str(tmp_path / "downloads"), ftp_servers=servers, workflows=workflows)
    config["sources"]["scoopa"].update({"allow_private_hosts": True} | scoopa)
    return config


def push_to(name: str, server: str, target_dir: str = "/incoming", **flow: object) -> dict:
    return {"name": name, "source": "scoopa", "action": "ftp_push", "ftp_server": server,
            "target_dir": target_dir} | flow


def pushes(runtime) -> list[dict]:
    return rows(runtime, "actions", kind="ftp_push")


def push_one_file(start_listener, file_server, tmp_path: Path, ftp, name: str, size: int,  # noqa: ANN001
                  **server: object) -> tuple[dict, bytes]:
    """A ``size``-byte file ``name`` downloaded, then pushed to the root of ``ftp`` (its config with ``server``
    overrides) by one workflow; the settled push action and the file's content."""
    content = make_file(file_server.root / name, size)
    live = start_listener(push_config(tmp_path, {"target": ftp.config(**server)}, [push_to("push", "target", "/")]))
    live.post("/scoopa", scoopa_file(1, name, size, file_server.url("ranged", name)))
    settle(live.runtime)
    [push] = pushes(live.runtime)
    return push, content


class Watcher:
    """Looks at the target folder as a watch folder would, and notes every size seen under the final name."""

    def __init__(self, folder: Path, name: str) -> None:
        self.path = folder / name
        self.seen: set[int] = set()
        self.part_seen = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        part = self.path.with_name(self.path.name + ".part")
        while not self._stop.is_set():
            if self.path.exists():
                self.seen.add(self.path.stat().st_size)
            if part.exists():
                self.part_seen = True
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_file_appears_under_its_final_name_only_when_whole(start_listener, file_server, ftp_server, tmp_path):
    content = make_file(file_server.root / "clip_NEWS_.mov", 400_000)
    # Four times the server's limit a second: pyftpdlib pauses the upload from the second second's worth on,
    # so it lasts long enough to be seen (sent with sendfile(), it is otherwise over in a millisecond).
    ftp = ftp_server("playout", read_limit=100_000)
    (ftp.root / "incoming").mkdir()
    live = start_listener(push_config(tmp_path, {"playout": ftp.config()}, [push_to("news", "playout")]))
    watcher = Watcher(ftp.root / "incoming", "clip_NEWS_.mov")
    live.post("/scoopa", scoopa_file(1, "clip_NEWS_.mov", len(content), file_server.url("ranged", "clip_NEWS_.mov")))
    actions = settle(live.runtime)
    watcher.stop()
    assert [(a["kind"], a["status"], a["attempts"]) for a in actions] == [("download", "done", 1),
                                                                          ("ftp_push", "done", 1)]
    assert (ftp.root / "incoming" / "clip_NEWS_.mov").read_bytes() == content
    assert sorted(p.name for p in (ftp.root / "incoming").iterdir()) == ["clip_NEWS_.mov"]
    assert watcher.part_seen and watcher.seen == {len(content)}  # never seen half-written under its name
    # A new .part is created by APPE: STOR would truncate it, which makes some servers write it out on close.
    assert ftp.record.uploads() == [("APPE", "clip_NEWS_.mov.part")]
    assert (ftp.record.args_of("RNFR"), ftp.record.args_of("RNTO")) == (["clip_NEWS_.mov.part"], ["clip_NEWS_.mov"])
    assert ftp.record.args_of("PASV") == [""] or ftp.record.args_of("EPSV") == [""]  # passive by default
    [push] = pushes(live.runtime)
    assert push["bytes_done"] == push["bytes_total"] == len(content)
    assert push["speed_bps"] > 0 and push["target"] == "playout:/incoming"
    assert rows(live.runtime, "items")[0]["state"] == "downloaded"


def test_every_matching_workflow_pushes_and_others_do_not(start_listener, file_server, ftp_server, tmp_path):
    content = make_file(file_server.root / "a_NEWS_.mov", 1000)
    make_file(file_server.root / "b.mov", 1000)
    news, archive = ftp_server("news"), ftp_server("archive")
    workflows = [push_to("news", "news", "/", folders=[62251], filter="_NEWS_"),
                 push_to("archive", "archive", "/", folders="all"),
                 push_to("other-folder", "news", "/", folders=[1])]
    live = start_listener(push_config(tmp_path, {"news": news.config(), "archive": archive.config()}, workflows))
    live.post("/scoopa", scoopa_file(1, "a_NEWS_.mov", 1000, file_server.url("ranged", "a_NEWS_.mov")))
    live.post("/scoopa", scoopa_file(2, "b.mov", 1000, file_server.url("ranged", "b.mov")))
    settle(live.runtime)
    assert sorted((a["workflow"], a["status"]) for a in pushes(live.runtime)) == [
        ("archive", "done"), ("archive", "done"), ("news", "done")]
    assert (news.root / "a_NEWS_.mov").read_bytes() == content
    assert not (news.root / "b.mov").exists()
    assert sorted(p.name for p in archive.root.iterdir()) == ["a_NEWS_.mov", "b.mov"]


def test_active_mode_when_the_server_says_passive_false(start_listener, file_server, ftp_server, tmp_path):
    ftp = ftp_server("active")
    push, content = push_one_file(start_listener, file_server, tmp_path, ftp, "active.mov", 100_000, passive=False)
    assert push["status"] == "done", push["error"]
    assert (ftp.root / "active.mov").read_bytes() == content
    commands = {command for command, _ in ftp.record.commands}
    assert "PORT" in commands or "EPRT" in commands
    assert not {"PASV", "EPSV"} & commands


def test_refused_first_connection_is_delivered_on_a_later_attempt(start_listener, file_server, ftp_server, tmp_path):
    ftp = ftp_server("busy", refuse_first=1)
    push, content = push_one_file(start_listener, file_server, tmp_path, ftp, "late.mov", 5000)
    assert (push["status"], push["attempts"], push["error"]) == ("done", 2, None)
    assert (ftp.root / "late.mov").read_bytes() == content
    assert ftp.record.total_connections == 1  # the refused one is not counted as served


def test_failed_attempt_is_recorded_before_the_retry(start_listener, file_server, ftp_server, tmp_path):
    make_file(file_server.root / "late.mov", 5000)
    ftp = ftp_server("busy", refuse_first=10)
    config = push_config(tmp_path, {"busy": ftp.config()}, [push_to("late", "busy", "/", retry=[0.2])])
    live = start_listener(config)
    live.post("/scoopa", scoopa_file(1, "late.mov", 5000, file_server.url("ranged", "late.mov")))
    settle(live.runtime)
    [push] = pushes(live.runtime)
    assert (push["status"], push["attempts"]) == ("failed", 2)  # the workflow's own schedule: one retry
    assert "421" in push["error"] and "FTP server busy" in push["error"]
    assert push["started_at"] and push["finished_at"]


def test_cut_upload_resumes_with_rest(start_listener, file_server, ftp_server, tmp_path):
    size = 2_000_000
    ftp = ftp_server("cutting", cut_first_uploads=1, cut_at=size // 2)
    push, content = push_one_file(start_listener, file_server, tmp_path, ftp, "big.mxf", size)
    assert (push["status"], push["attempts"]) == ("done", 2)
    assert (ftp.root / "big.mxf").read_bytes() == content
    [offset] = [int(arg) for arg in ftp.record.args_of("REST") if arg != "0"][-1:]
    assert size // 2 <= offset < size
    assert ftp.record.uploads() == [("APPE", "big.mxf.part"), ("STOR", "big.mxf.part")]  # the second from REST
    assert ftp.record.bytes_received < 1.6 * size  # the second attempt sent the rest, not everything again


def test_the_file_is_read_ahead_of_the_upload_and_dropped_from_the_page_cache_behind_it(
        start_listener, file_server, ftp_server, tmp_path, monkeypatch):
    """The download left the file out of the cache: the push reads it from the disk a few MiB ahead and drops it a
    few MiB behind, so a push of any size holds that much of the cache, and next to none once done
    (listener.writeback)."""
    import jobs.ftp_push

    skip_unless_pages_drop(tmp_path)
    cached_after_each_drop, asked_ahead, dropped = [], [], []
    drop, ahead = jobs.ftp_push.drop_read, jobs.ftp_push.read_ahead

    def measured(fd: int, start: int = 0, length: int = 0) -> None:
        drop(fd, start, length)
        dropped.append((start, length))
        cached_after_each_drop.append(cached_bytes(Path(os.readlink(f"/proc/self/fd/{fd}"))))

    def noted(fd: int, start: int, length: int) -> None:
        asked_ahead.append((start, length))
        ahead(fd, start, length)

    monkeypatch.setattr(jobs.ftp_push, "drop_read", measured)
    monkeypatch.setattr(jobs.ftp_push, "read_ahead", noted)
    size, slice_bytes = 64 * 1024 * 1024, jobs.ftp_push.SLICE_BYTES
    window, behind = jobs.ftp_push.READ_AHEAD_BYTES, jobs.ftp_push.DROP_BEHIND_BYTES
    ftp = ftp_server("playout")
    push, content = push_one_file(start_listener, file_server, tmp_path, ftp, "big.mxf", size)
    assert (push["status"], push["attempts"]) == ("done", 1)
    assert (ftp.root / "big.mxf").read_bytes() == content
    # The first window, then a slice past the window before each slice is sent.
    assert asked_ahead == [(0, window)] + [(sent + window, slice_bytes) for sent in range(0, size, slice_bytes)]
    # Behind: each slice once it is that far behind what was sent, then the whole file.
    assert dropped == [(start, slice_bytes) for start in range(0, size - behind, slice_bytes)] + [(0, 0)]
    # What is asked for ahead, what is kept behind, and what the kernel reads ahead of a sequential reader by itself
    # (its window and the next, up to twice the device's read_ahead_kb): bounded whatever the file's size.
    bound = window + behind + slice_bytes + 2 * device_read_ahead(tmp_path)
    assert bound < size, "too small a file to tell a bounded cache from none"
    assert max(cached_after_each_drop) <= bound
    # Once done, less than the distance kept behind, which would stay without the final drop: what the socket
    # may still hold for a retransmission (the data sent last stays in its queue until the server's last
    # acknowledgement, which may come after its answer to the upload), in whole folios (2 MiB each on ext4).
    assert cached_after_each_drop[-1] < behind


def test_a_part_left_by_someone_else_is_overwritten_not_appended_to(start_listener, file_server, ftp_server,
                                                                      tmp_path):
    ftp = ftp_server("playout")
    (ftp.root / "clip.mov.part").write_bytes(b"x" * 70_000)  # an older, larger upload by another sender
    push, content = push_one_file(start_listener, file_server, tmp_path, ftp, "clip.mov", 50_000)
    assert (push["status"], push["attempts"], push["error"]) == ("done", 1, None)
    assert (ftp.root / "clip.mov").read_bytes() == content
    assert ftp.record.uploads() == [("STOR", "clip.mov.part")]
    assert ftp.record.args_of("REST") == []


def test_a_server_that_refuses_appe_gets_stor(start_listener, file_server, ftp_server, tmp_path):
    ftp = ftp_server("strict", refuse_append=True)
    push, content = push_one_file(start_listener, file_server, tmp_path, ftp, "clip.mov", 50_000)
    assert (push["status"], push["attempts"], push["error"]) == ("done", 1, None)
    assert (ftp.root / "clip.mov").read_bytes() == content
    assert ftp.record.uploads() == [("APPE", "clip.mov.part"), ("STOR", "clip.mov.part")]
    assert sorted(p.name for p in ftp.root.iterdir()) == ["clip.mov"]


def test_ftps_with_a_protected_data_channel(start_listener, file_server, ftp_server, certificate, tmp_path):
    content = make_file(file_server.root / "secret.mov", 300_000)
    ftp = ftp_server("secure", tls=certificate)  # refuses USER before AUTH and transfers without PROT P
    servers = {"secure": ftp.config(tls=True, ca_file=str(certificate[0]))}
    live = start_listener(push_config(tmp_path, servers, [push_to("secure", "secure", "/")]))
    live.post("/scoopa", scoopa_file(1, "secret.mov", len(content), file_server.url("ranged", "secret.mov")))
    settle(live.runtime)
    [push] = pushes(live.runtime)
    assert (push["status"], push["attempts"]) == ("done", 1), push["error"]
    assert (ftp.root / "secret.mov").read_bytes() == content
    assert ftp.record.args_of("AUTH") == ["TLS"] and ftp.record.args_of("PROT") == ["P"]


def test_ftps_certificate_is_checked(start_listener, file_server, ftp_server, certificate, tmp_path):
    make_file(file_server.root / "secret.mov", 1000)
    ftp = ftp_server("secure", tls=certificate)
    servers = {"secure": ftp.config(tls=True)}  # the test certificate is not in the system's CAs
    live = start_listener(push_config(tmp_path, servers, [push_to("secure", "secure", "/", retry=[])]))
    live.post("/scoopa", scoopa_file(1, "secret.mov", 1000, file_server.url("ranged", "secret.mov")))
    settle(live.runtime)
    [push] = pushes(live.runtime)
    assert push["status"] == "failed" and "CERTIFICATE_VERIFY_FAILED" in push["error"]
    assert not (ftp.root / "secret.mov").exists()


def test_wrong_password_fails_at_once(start_listener, file_server, ftp_server, tmp_path):
    make_file(file_server.root / "x.mov", 1000)
    ftp = ftp_server("locked")
    servers = {"locked": ftp.config(password="wrong")}
    live = start_listener(push_config(tmp_path, servers, [push_to("x", "locked", "/")]))
    live.post("/scoopa", scoopa_file(1, "x.mov", 1000, file_server.url("ranged", "x.mov")))
    settle(live.runtime)
    [push] = pushes(live.runtime)
    assert (push["status"], push["attempts"]) == ("failed", 1)
    assert "refused the login" in push["error"] and "530" in push["error"]


def test_a_busy_server_postpones_the_push_without_using_an_attempt(start_listener, file_server, ftp_server,
                                                                     tmp_path, redis_url):
    content = make_file(file_server.root / "wait.mov", 1000)
    ftp = ftp_server("single")
    servers = {"single": ftp.config(max_connections=1)}
    live = start_listener(push_config(tmp_path, servers, [push_to("wait", "single", "/")]))
    slots = ServerSlots(redis.Redis.from_url(redis_url), "single", 1)
    assert slots.take("another-worker")
    live.post("/scoopa", scoopa_file(1, "wait.mov", 1000, file_server.url("ranged", "wait.mov")))
    run_jobs(live.runtime)  # the download, then the push, which finds the server's only slot taken
    [push] = pushes(live.runtime)
    assert (push["status"], push["attempts"], push["error"]) == ("queued", 0, None)
    assert push["not_before"] is not None
    assert Queue("listener-test", connection=redis.Redis.from_url(redis_url)).scheduled_job_registry.count == 1
    assert ftp.record.total_connections == 0
    slots.give_back("another-worker")
    settle(live.runtime)
    [push] = pushes(live.runtime)
    assert (push["status"], push["attempts"]) == ("done", 1)
    assert (ftp.root / "wait.mov").read_bytes() == content
    assert slots.holders() == []  # given back after the transfer


def test_missing_target_dir_is_an_error_naming_it(start_listener, file_server, ftp_server, tmp_path):
    make_file(file_server.root / "x.mov", 10)
    ftp = ftp_server("plain")
    live = start_listener(push_config(tmp_path, {"plain": ftp.config()}, [push_to("x", "plain", "/nowhere", retry=[])]))
    live.post("/scoopa", scoopa_file(1, "x.mov", 10, file_server.url("ranged", "x.mov")))
    settle(live.runtime)
    [push] = pushes(live.runtime)
    assert push["status"] == "failed" and "cannot change to target_dir /nowhere" in push["error"]
