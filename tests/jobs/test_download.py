"""download (SPEC 3 and 4): streamed, resumed, checked, renamed, sanitised, and refused where it must be."""
from __future__ import annotations

import os
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from jobs.file_names import safe_file_name
from listener.models import items
from tests.conftest import base_config, rows
from tests.jobs.conftest import scoopa_file, settle
from tests.support.files import FileServer, make_file, make_large_file
from tests.support.pagecache import cached_bytes, skip_unless_pages_drop


def scoopa_config(tmp_path: Path, **scoopa: object) -> dict:
    config = base_config(download_dir=str(tmp_path / "downloads"))
    config["sources"]["scoopa"].update({"download": True, "allow_private_hosts": True} | scoopa)
    return config


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def download_one(start_listener, file_server, tmp_path: Path, number: int, name: str, size: int,  # noqa: ANN001
                 mode: str) -> tuple[bytes, dict]:
    """A scoopa file of ``size`` random bytes, served in ``mode`` and downloaded: its content and its action."""
    content = make_file(file_server.root / name, size)
    live = start_listener(scoopa_config(tmp_path))
    live.post("/scoopa", scoopa_file(number, name, len(content), file_server.url(mode, name)))
    [action] = settle(live.runtime)
    return content, action


def test_file_arrives_whole_and_the_item_is_downloaded(start_listener, file_server, tmp_path):
    content = make_file(file_server.root / "clip.mov", 300_000)
    live = start_listener(scoopa_config(tmp_path))
    live.post("/scoopa", scoopa_file(1, "clip.mov", len(content), file_server.url("ranged", "clip.mov")))
    [action] = settle(live.runtime)
    final = tmp_path / "downloads" / "clip.mov"
    assert final.read_bytes() == content
    assert files_in(tmp_path / "downloads") == ["clip.mov"]  # no partial file left behind
    assert (action["kind"], action["status"], action["attempts"]) == ("download", "done", 1)
    assert action["bytes_done"] == action["bytes_total"] == len(content)
    assert action["speed_bps"] > 0 and action["started_at"] and action["finished_at"]
    assert action["error"] is None
    [item] = rows(live.runtime, "items")
    assert item["state"] == "downloaded"
    assert item["data"]["local_path"] == str(final)


def test_a_body_sent_compressed_is_stored_as_the_file_it_encodes(start_listener, file_server, tmp_path):
    content, action = download_one(start_listener, file_server, tmp_path, 9, "packed.mov", 300_000, "gzip")
    assert (action["status"], action["attempts"]) == ("done", 1)
    assert (tmp_path / "downloads" / "packed.mov").read_bytes() == content
    [served] = file_server.served("packed.mov")
    assert 0 < served.bytes_sent != len(content)  # what crossed the wire was the compressed body


def test_interrupted_download_resumes_with_a_range_request(start_listener, file_server, tmp_path):
    content, action = download_one(start_listener, file_server, tmp_path, 2, "long.mxf", 1_000_000, "cut")
    assert (action["status"], action["attempts"]) == ("done", 2)
    assert (tmp_path / "downloads" / "long.mxf").read_bytes() == content
    first, second = file_server.served("long.mxf")
    assert first.range is None and first.bytes_sent == len(content) // 2
    # The second request asks for the rest of what arrived (the last read before the cut may be lost).
    assert second.status == 206 and second.range.startswith("bytes=")
    resumed_at = int(second.range.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= first.bytes_sent
    assert second.bytes_sent == len(content) - resumed_at  # never a second full download


def test_interrupted_download_restarts_cleanly_without_range_support(start_listener, file_server, tmp_path):
    content, action = download_one(start_listener, file_server, tmp_path, 3, "plain.mov", 600_000, "cut-plain")
    assert (action["status"], action["attempts"]) == ("done", 2)
    assert (tmp_path / "downloads" / "plain.mov").read_bytes() == content
    first, second = file_server.served("plain.mov")
    assert first.bytes_sent == len(content) // 2
    assert second.status == 200 and second.bytes_sent == len(content)


def test_short_file_is_never_renamed_and_fails_after_the_schedule(start_listener, file_server, tmp_path):
    make_file(file_server.root / "short.mov", 1000)
    live = start_listener(scoopa_config(tmp_path))
    live.post("/scoopa", scoopa_file(4, "short.mov", 2000, file_server.url("ranged", "short.mov")))
    [action] = settle(live.runtime)
    assert (action["status"], action["attempts"]) == ("failed", 3)  # the first try and two retries ([0.2, 0.2])
    assert "1000 of the announced 2000 bytes" in action["error"]
    assert "short.mov" not in files_in(tmp_path / "downloads")
    assert rows(live.runtime, "items")[0]["state"] == "received"


def test_longer_file_than_announced_is_refused(start_listener, file_server, tmp_path):
    make_file(file_server.root / "long.mov", 5000)
    config = scoopa_config(tmp_path, retry=[])
    live = start_listener(config)
    live.post("/scoopa", scoopa_file(5, "long.mov", 4000, file_server.url("plain", "long.mov")))
    [action] = settle(live.runtime)
    assert action["status"] == "failed"
    assert "more than the announced 4000 bytes" in action["error"]
    assert "long.mov" not in files_in(tmp_path / "downloads")


def test_memory_stays_flat_whatever_the_file_size(start_listener, file_server, tmp_path, monkeypatch):
    import jobs.download

    peaks = []
    stream = jobs.download._stream

    def measured(*args, **kwargs):
        # Python allocations from the first byte to the last (other threads of this test process are idle then).
        tracemalloc.start()
        try:
            return stream(*args, **kwargs)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    monkeypatch.setattr(jobs.download, "_stream", measured)
    size = 48 * 1024 * 1024
    make_large_file(file_server.root / "big.mxf", size)
    live = start_listener(scoopa_config(tmp_path))
    live.post("/scoopa", scoopa_file(61, "big.mxf", size, file_server.url("ranged", "big.mxf")))
    [action] = settle(live.runtime, timeout=60)
    assert action["status"] == "done"
    assert (tmp_path / "downloads" / "big.mxf").stat().st_size == size
    assert len(peaks) == 1 and peaks[0] < 2 * 1024 * 1024, f"peak {peaks} bytes allocated while streaming {size}"


def test_the_file_holds_two_steps_of_the_page_cache_at_most_and_none_once_done(start_listener, file_server,
                                                                               tmp_path, monkeypatch):
    """A large file is written out and dropped from the page cache a step behind the writing, so a media file
    of any size does not push the database's pages out of the cache (listener.writeback)."""
    import jobs.download

    skip_unless_pages_drop(tmp_path)
    cached_after_each_step = []
    drop = jobs.download.drop_written

    def measured(fd: int, start: int = 0, length: int = 0) -> None:
        drop(fd, start, length)
        cached_after_each_step.append(cached_bytes(Path(os.readlink(f"/proc/self/fd/{fd}"))))

    monkeypatch.setattr(jobs.download, "drop_written", measured)
    step, size = jobs.download.WRITEBACK_BYTES, 40 * 1024 * 1024
    make_large_file(file_server.root / "big.mxf", size)
    live = start_listener(scoopa_config(tmp_path))
    live.post("/scoopa", scoopa_file(62, "big.mxf", size, file_server.url("ranged", "big.mxf")))
    [action] = settle(live.runtime, timeout=60)
    assert action["status"] == "done"
    final = tmp_path / "downloads" / "big.mxf"
    assert final.read_bytes() == (file_server.root / "big.mxf").read_bytes()
    assert len(cached_after_each_step) == size // step  # a drop a step, and the whole file's at the end
    assert max(cached_after_each_step) <= step + jobs.download.CHUNK_BYTES  # the step written since
    assert cached_after_each_step[-1] == 0


def test_redirect_is_followed(start_listener, file_server, tmp_path):
    content = make_file(file_server.root / "moved.mov", 10_000)
    live = start_listener(scoopa_config(tmp_path))
    url = f"{file_server.base}/redirect/x?to={file_server.url('ranged', 'moved.mov')}"
    live.post("/scoopa", scoopa_file(7, "moved.mov", len(content), url))
    [action] = settle(live.runtime)
    assert action["status"] == "done"
    assert (tmp_path / "downloads" / "moved.mov").read_bytes() == content


def test_name_clash_gets_a_suffix(start_listener, file_server, tmp_path):
    first = make_file(file_server.root / "a" / "clip.mov", 2000)
    second = make_file(file_server.root / "b" / "clip.mov", 3000)
    live = start_listener(scoopa_config(tmp_path))
    live.post("/scoopa", scoopa_file(8, "clip.mov", 2000, file_server.url("ranged", "a/clip.mov")))
    settle(live.runtime)
    live.post("/scoopa", scoopa_file(9, "clip.mov", 3000, file_server.url("ranged", "b/clip.mov")))
    settle(live.runtime)
    downloads = tmp_path / "downloads"
    assert files_in(downloads) == ["clip (1).mov", "clip.mov"]
    assert (downloads / "clip.mov").read_bytes() == first
    assert (downloads / "clip (1).mov").read_bytes() == second
    paths = {item["key"]: item["data"]["local_path"] for item in rows(live.runtime, "items")}
    assert paths == {"mediapool:8": str(downloads / "clip.mov"), "mediapool:9": str(downloads / "clip (1).mov")}


@pytest.mark.parametrize(("hostile", "safe"), [
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\win.ini", "win.ini"),
    ("/absolute/path.mov", "path.mov"),
    ("line\r\nbreak\x00.mov", "linebreak.mov"),
    ("..", "fallback"),
    ("...hidden.mov", "hidden.mov"),
    ("a..b.mov", "a.b.mov"),
    ("folder/", "fallback"),
    ("\u202eevil\u200b.mov", "evil.mov"),
    ("..\uff0f..\uff0fsecret.mov", "secret.mov"),  # fullwidth solidus: a folding server would read "../"
    ("\uff0e\uff0e\uff0fup.mov", "up.mov"),  # fullwidth full stops too
    ("x" * 300 + ".mov", "x" * 196 + ".mov"),
])
def test_file_names_are_sanitised(hostile, safe):
    assert safe_file_name(hostile, fallback="fallback") == safe


def test_hostile_file_name_stays_inside_the_download_dir(start_listener, file_server, tmp_path):
    content = make_file(file_server.root / "escape.mov", 1234)
    live = start_listener(scoopa_config(tmp_path))
    live.post("/scoopa", scoopa_file(10, "../../escape.mov", len(content), file_server.url("ranged", "escape.mov")))
    [action] = settle(live.runtime)
    assert action["status"] == "done"
    assert files_in(tmp_path / "downloads") == ["escape.mov"]
    assert not (tmp_path / "escape.mov").exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "169.254.169.254", "10.1.2.3", "[::1]", "0.0.0.0"])
def test_private_addresses_are_refused_before_connecting(start_listener, file_server, tmp_path, host):
    port = file_server.port
    live = start_listener(scoopa_config(tmp_path, allow_private_hosts=False))
    live.post("/scoopa", scoopa_file(11, "x.mov", 10, f"http://{host}:{port}/ranged/x.mov"))
    [action] = settle(live.runtime)
    assert (action["status"], action["attempts"]) == ("failed", 1)  # refused: no retry can change that
    assert "private, loopback, link-local or reserved address" in action["error"]
    assert "allow_private_hosts" in action["error"]
    assert file_server.requests == []


def test_redirect_to_a_private_address_is_refused(start_listener, file_server, tmp_path, monkeypatch):
    import jobs.safe_url

    real = jobs.safe_url.is_public
    # The file server stands in for a public host; only its address is treated as public.
    monkeypatch.setattr(jobs.safe_url, "is_public", lambda address: address == "127.0.0.1" or real(address))
    live = start_listener(scoopa_config(tmp_path, allow_private_hosts=False))
    url = f"{file_server.base}/redirect/x?to=http://169.254.169.254/latest/meta-data/"
    live.post("/scoopa", scoopa_file(12, "x.mov", 10, url))
    [action] = settle(live.runtime)
    assert action["status"] == "failed"
    assert "169.254.169.254" in action["error"] and "allow_private_hosts" in action["error"]
    assert [request.mode for request in file_server.requests] == ["redirect"]


def test_allowed_hosts_are_checked_on_every_redirect(start_listener, file_server, tmp_path):
    make_file(file_server.root / "y.mov", 10)
    port = file_server.port
    live = start_listener(scoopa_config(tmp_path, allowed_hosts=["127.0.0.*"]))
    url = f"{file_server.base}/redirect/x?to=http://localhost:{port}/ranged/y.mov"
    live.post("/scoopa", scoopa_file(13, "y.mov", 10, url))
    [action] = settle(live.runtime)
    assert action["status"] == "failed"
    assert "host localhost is not in the source's allowed_hosts (127.0.0.*)" in action["error"]
    assert [request.mode for request in file_server.requests] == ["redirect"]


def test_allowed_hosts_refuse_other_hosts(start_listener, file_server, tmp_path):
    live = start_listener(scoopa_config(tmp_path, allowed_hosts=["*.amazonaws.com"]))
    live.post("/scoopa", scoopa_file(14, "x.mov", 10, file_server.url("ranged", "x.mov")))
    [action] = settle(live.runtime)
    assert (action["status"], action["attempts"]) == ("failed", 1)
    assert "host 127.0.0.1 is not in the source's allowed_hosts (*.amazonaws.com)" in action["error"]
    assert file_server.requests == []


def test_expired_link_fails_with_a_message_saying_so(start_listener, file_server, tmp_path):
    make_file(file_server.root / "old.mov", 10)
    live = start_listener(scoopa_config(tmp_path))
    live.post("/scoopa", scoopa_file(15, "old.mov", 10, file_server.url("ranged", "old.mov")))
    # A day and more has passed since the webhook (the job runs late, e.g. after an outage).
    expired = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    [item] = rows(live.runtime, "items")
    with live.runtime.engine.begin() as conn:
        conn.execute(update(items).where(items.c.id == item["id"])
                     .values(data=item["data"] | {"download_url_expires_at": expired}))
    [action] = settle(live.runtime)
    assert (action["status"], action["attempts"]) == ("failed", 1)
    assert "the download link expired at" in action["error"] and "valid for 24 h" in action["error"]
    assert file_server.requests == []


def test_missing_file_fails_at_once_and_a_server_error_is_retried(start_listener, file_server, tmp_path):
    live = start_listener(scoopa_config(tmp_path))
    live.post("/scoopa", scoopa_file(16, "gone.mov", 10, file_server.url("ranged", "gone.mov")))
    live.post("/scoopa", scoopa_file(17, "busy.mov", 10, f"{file_server.base}/status/503"))
    gone, busy = settle(live.runtime)
    assert (gone["status"], gone["attempts"]) == ("failed", 1)
    assert "answered 404" in gone["error"]
    assert (busy["status"], busy["attempts"]) == ("failed", 3)
    assert "answered 503" in busy["error"]


def test_https_connects_to_the_checked_address_and_still_checks_the_certificate(start_listener, certificate, tmp_path,
                                                                                 monkeypatch):
    import jobs.safe_url

    server = FileServer(tmp_path / "served-tls", tls=certificate)
    try:
        content = make_file(server.root / "tls.mov", 50_000)
        live = start_listener(scoopa_config(tmp_path, retry=[]))
        # By name: the connection goes to the address checked for "localhost", SNI and the check use the name.
        url = f"https://localhost:{server.port}/ranged/tls.mov"
        live.post("/scoopa", scoopa_file(20, "untrusted.mov", len(content), url))
        [untrusted] = settle(live.runtime)
        assert untrusted["status"] == "failed" and "CERTIFICATE_VERIFY_FAILED" in untrusted["error"]
        monkeypatch.setattr(jobs.safe_url, "CA_BUNDLE", str(certificate[0]))  # trust the test CA
        live.post("/scoopa", scoopa_file(21, "tls.mov", len(content), url))
        trusted = settle(live.runtime)[-1]
        assert trusted["status"] == "done", trusted["error"]
        assert (tmp_path / "downloads" / "tls.mov").read_bytes() == content
    finally:
        server.close()
