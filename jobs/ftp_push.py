"""Push a downloaded file to a workflow's FTP server (SPEC 4, seed 000's push-to-FTP).

Watch folders on the far side must never see a partial file, so the upload
goes to ``<name>.part`` (created with ``APPE`` when the server has none, see
``_open_upload``) and is renamed once its remote size matches; the final
name's size is checked again after the rename. A later attempt of the
same action resumes the ``.part`` with ``REST`` where the server accepts it,
and starts over where it does not. Passive mode unless the server says
``passive: false``; with ``tls: true``, explicit FTPS (``AUTH TLS``) with the
data channel protected too (``PROT P``).

At most ``max_connections`` pushes run at once per server, across every
worker (``jobs.ftp_slots``); a push that finds no free slot is postponed a
little without counting as an attempt.
"""
from __future__ import annotations

import ftplib
import logging
import os
import random
import socket
import ssl
from pathlib import Path
from typing import BinaryIO

from config import FtpServer
from jobs.context import ActionContext
from jobs.errors import ActionError, PermanentError, Postpone
from jobs.file_names import safe_file_name
from jobs.ftp_slots import NoSlot, ServerSlots
from listener.writeback import drop_read, read_ahead

log = logging.getLogger(__name__)

SLICE_BYTES = 1024 * 1024  # handed to sendfile() at a time; progress is reported between slices
# The file is read from the disk this far ahead of what is sent, and dropped from the page cache this far behind:
# a push of any size holds that much of the cache (listener.writeback says why). Not at once behind: sent bytes
# stay in the socket's buffers until the peer has them (on loopback, in the server's receive buffer), and a page
# in use there is not dropped. All of it is dropped once the server has the file (but the last pages the kernel
# still keeps for a retransmission, until the server's last acknowledgement).
READ_AHEAD_BYTES = 16 * 1024 * 1024
DROP_BEHIND_BYTES = 16 * 1024 * 1024
TLS_BLOCK_BYTES = 64 * 1024  # FTPS: sent by us, since Python's sendfile() falls back to 8 KiB sends over TLS
REASON_WAIT = 2.0  # seconds to wait for the server's reply after it broke off an upload
WAIT_FOR_SLOT = (1.0, 3.0)  # seconds before a postponed push tries again (random, to spread them)


def run(context: ActionContext) -> None:
    flow = context.config.workflow(context.action["workflow"] or "")
    if flow is None or not flow.ftp_server or flow.ftp_server not in context.config.ftp_servers:
        raise PermanentError(f"workflow {context.action['workflow']!r} is no longer configured with an FTP server")
    server = context.config.ftp_servers[flow.ftp_server]
    data = context.item["data"] or {}
    local = Path(str(data.get("local_path") or ""))
    if not data.get("local_path") or not local.is_file():
        raise PermanentError(f"no downloaded file for this item ({local or 'no local_path'}); an ftp_push "
                             "workflow acts on items once they are downloaded")
    name = safe_file_name(str(data.get("file_name") or local.name), fallback=local.name)
    holder = f"action-{context.action_id}-{context.action['attempts']}-{os.getpid()}"
    slots = ServerSlots(context.runtime.redis(), flow.ftp_server, server.max_connections)
    try:
        with slots.hold(holder):
            push(context, server, flow.ftp_server, local, flow.target_dir, name)
    except NoSlot as busy:
        raise Postpone(str(busy), random.uniform(*WAIT_FOR_SLOT)) from None


def push(context: ActionContext, server: FtpServer, server_name: str, local: Path, target_dir: str,
         name: str) -> None:
    where = f"FTP server {server_name} ({server.host}:{server.port})"
    total = local.stat().st_size
    try:
        ftp = connect(server)
    except ftplib.error_perm as error:
        if str(error).startswith("530"):
            raise PermanentError(f"{where} refused the login: {error}") from None
        raise ActionError(f"{where}: {error}") from None
    except (ftplib.Error, OSError, EOFError) as error:
        raise ActionError(f"cannot connect to {where}: {type(error).__name__}: {error}") from None
    try:
        _upload(context, ftp, where, local, total, target_dir, name)
    except (ftplib.Error, OSError, EOFError) as error:
        raise ActionError(f"{where}: {type(error).__name__}: {error}") from None
    finally:
        _close(ftp)


def connect(server: FtpServer) -> ftplib.FTP:
    """Connected and logged in; for ``tls: true`` the control and the data channel both encrypted."""
    if server.tls:
        ftp: ftplib.FTP = ftplib.FTP_TLS(context=_tls_context(server), timeout=server.timeout)  # noqa: S321
    else:
        ftp = ftplib.FTP(timeout=server.timeout)  # noqa: S321 - plain FTP is what `tls: false` asks for
    ftp.connect(server.host, server.port)
    ftp.login(server.username, server.password)  # FTP_TLS sends AUTH TLS first
    if isinstance(ftp, ftplib.FTP_TLS):
        ftp.prot_p()
    ftp.set_pasv(server.passive)
    return ftp


def _tls_context(server: FtpServer) -> ssl.SSLContext:
    if not server.verify_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=str(server.ca_file) if server.ca_file else None)


def _upload(context: ActionContext, ftp: ftplib.FTP, where: str, local: Path, total: int, target_dir: str,
            name: str) -> None:
    part = f"{name}.part"
    try:
        ftp.cwd(target_dir)
    except ftplib.error_perm as error:
        raise ActionError(f"{where}: cannot change to target_dir {target_dir}: {error}") from None
    ftp.voidcmd("TYPE I")  # SIZE answers in binary mode only on many servers
    have = _size(ftp, part)
    # Resume only our own earlier attempt: a .part left by someone else is overwritten.
    offset = _resume_offset(ftp, have, total) if context.action["attempts"] > 1 else 0
    if offset < total or total == 0:
        context.progress(offset, total, force=True, resumed_from=offset)
        with open(local, "rb") as file:
            try:
                _store(context, ftp, part, file, offset, total, new=have is None)
            except OSError as error:
                # The data connection broke. A server that aborts an upload (a full disk: 452/552) closes it
                # and says why on the control connection: that answer is what the transfer log should show.
                raise ActionError(f"{where}: {type(error).__name__}: {error}{_reason(ftp)}") from None
    remote = _size(ftp, part)
    if remote != total:
        raise ActionError(f"{where}: {part} is {remote} bytes after the upload, not {total}")
    ftp.rename(part, name)
    remote = _size(ftp, name)
    if remote != total:
        raise ActionError(f"{where}: {name} is {remote} bytes after the rename, not {total}")
    context.progress(total, total, force=True, resumed_from=offset)
    log.info("listener.ftp_push.done action=%s server=%s path=%s/%s bytes=%s resumed_from=%s",
             context.action_id, where, target_dir.rstrip("/"), name, total, offset)


def _store(context: ActionContext, ftp: ftplib.FTP, part: str, file: BinaryIO, offset: int, total: int, *,
           new: bool) -> None:
    """Upload the file from ``offset`` on, as ``ftplib.storbinary`` would; ``new``: the server has no ``part``.

    The bytes go with ``socket.sendfile()``: the kernel copies the file into the
    data connection, where ``storbinary`` read and sent it 64 KiB at a time in
    Python, which the benchmark showed slower than ``curl -T``.
    """
    sent = dropped = offset
    fd = file.fileno()
    read_ahead(fd, offset, READ_AHEAD_BYTES)
    with _open_upload(ftp, part, offset, new) as connection:
        while sent < total:
            read_ahead(fd, sent + READ_AHEAD_BYTES, SLICE_BYTES)
            moved = _send_slice(connection, file, sent, min(SLICE_BYTES, total - sent))
            if moved == 0:
                raise ActionError(f"{part}: the local file ended after {sent} of {total} bytes")
            sent += moved
            if sent - dropped >= DROP_BEHIND_BYTES + SLICE_BYTES:
                drop_read(fd, dropped, sent - DROP_BEHIND_BYTES - dropped)
                dropped = sent - DROP_BEHIND_BYTES
            context.progress(sent, total, resumed_from=offset)
        if isinstance(connection, ssl.SSLSocket):
            connection.unwrap()  # end TLS on the data connection cleanly, as storbinary does
    ftp.voidresp()
    drop_read(fd)


def _open_upload(ftp: ftplib.FTP, part: str, offset: int, new: bool) -> socket.socket:
    """The upload's data connection: ``APPE`` for a file the server does not have, else ``STOR`` from ``REST``.

    ``STOR`` truncates the file it opens, a new one too, and on ext4 a file
    truncated to nothing is written out to disk when it is closed
    (``auto_da_alloc``): vsftpd then answers the command after the upload only
    once all of it is on its disk, 0.3 s per GiB in the benchmark, a wait that
    gains nothing here. ``APPE`` to a file that does not exist creates it
    without the truncation. A server that refuses ``APPE`` (5xx) gets ``STOR``.
    """
    if new:
        try:
            return ftp.transfercmd(f"APPE {part}")
        except ftplib.error_perm as refused:
            log.info("listener.ftp_push.stor_instead %s refused APPE: %s", part, refused)
    return ftp.transfercmd(f"STOR {part}", rest=offset or None)


def _send_slice(connection: socket.socket, file: BinaryIO, offset: int, count: int) -> int:
    """Send ``count`` bytes of ``file`` from ``offset``; the number sent (fewer only at the file's end)."""
    if not isinstance(connection, ssl.SSLSocket):
        return connection.sendfile(file, offset, count)
    # No sendfile() through TLS: Python's own fallback would read and send 8 KiB at a time.
    file.seek(offset)
    sent = 0
    while sent < count:
        block = file.read(min(TLS_BLOCK_BYTES, count - sent))
        if not block:
            break
        connection.sendall(block)
        sent += len(block)
    return sent


def _resume_offset(ftp: ftplib.FTP, have: int | None, total: int) -> int:
    """How much of the ``.part`` (``have`` bytes) the server lets us append to (REST); 0 to start over."""
    if not have or have > total:
        return 0
    try:
        answer = ftp.sendcmd(f"REST {have}")
    except ftplib.Error:
        return 0  # no REST: upload it all again
    return have if answer.startswith("350") else 0


def _reason(ftp: ftplib.FTP) -> str:
    """The server's reply to a broken-off upload, if it sent one soon, as text to append to the error."""
    try:
        if ftp.sock is not None:
            ftp.sock.settimeout(REASON_WAIT)
        return f"; the server said: {ftp.getresp()}"
    except ftplib.Error as error:  # 4xx/5xx: the reason, which is the point
        return f"; the server said: {error}"
    except (OSError, EOFError):  # nothing came: the connection itself went
        return ""


def _size(ftp: ftplib.FTP, path: str) -> int | None:
    try:
        return ftp.size(path)
    except ftplib.error_perm:
        return None


def _close(ftp: ftplib.FTP) -> None:
    try:
        ftp.quit()
    except (ftplib.Error, OSError, EOFError):
        ftp.close()
