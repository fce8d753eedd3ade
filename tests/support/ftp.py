"""A real FTP server (pyftpdlib) in a thread, with the misbehaviours the tests need.

Each server records the commands it receives (and when), the most connections
it had at once, and can: refuse its first connections (421), cut its first
uploads part-way (426, or ``cut_reply``: a 552 for a disk filling up), answer
its first uploads as a full server would (452 or 552, ``full_first_stors``),
refuse APPE (``refuse_append``),
throttle uploads (a limit a test can change while it runs), and speak
explicit FTPS with a test certificate (control and data channel both required
to be protected).
"""
from __future__ import annotations

import datetime
import ipaddress
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

with warnings.catch_warnings():
    # pyftpdlib is built on asyncore/asynchat, deprecated in Python 3.11: not our concern here.
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import DTPHandler, FTPHandler, ThrottledDTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

USER = "pusher"
PASSWORD = "ftp-secret"
FULL_REPLY = "452 Insufficient storage space in system (test server)."
CUT_REPLY = "426 Connection closed by the test server; transfer aborted."


def make_test_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost; returns (certificate, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "listener test FTP server")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "ftp-test.crt", directory / "ftp-test.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class ServerRecord:
    commands: list[tuple[str, str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # time.time() of each command, in step with commands
    connections: int = 0
    peak_connections: int = 0
    total_connections: int = 0
    bytes_received: int = 0
    refuse_next: int = 0
    cut_next_uploads: int = 0
    cut_at: int = 0
    cut_reply: str = CUT_REPLY
    full_next_stors: int = 0
    full_reply: str = FULL_REPLY
    lock: threading.Lock = field(default_factory=threading.Lock)

    def args_of(self, command: str) -> list[str]:
        with self.lock:
            return [arg for cmd, arg in self.commands if cmd == command]

    def times_of(self, *commands: str) -> list[float]:
        with self.lock:
            return [at for (cmd, _), at in zip(self.commands, self.times, strict=True) if cmd in commands]

    def uploads(self) -> list[tuple[str, str]]:
        """Every upload command (STOR or APPE) and its file name, in order."""
        with self.lock:
            return [(cmd, arg) for cmd, arg in self.commands if cmd in ("STOR", "APPE")]

    def upload_names(self) -> list[str]:
        return [arg for _, arg in self.uploads()]

    def upload_times(self) -> list[float]:
        return self.times_of("STOR", "APPE")


class TestFtpServer:
    """``root`` is served for user ``pusher``; ``tls=(cert, key)`` makes it an FTPS server."""

    __test__ = False  # not a pytest test class

    def __init__(self, root: Path, *, tls: tuple[Path, Path] | None = None, refuse_first: int = 0,
                 cut_first_uploads: int = 0, cut_at: int = 0, cut_reply: str = CUT_REPLY,
                 read_limit: int | None = None, full_first_stors: int = 0, full_reply: str = FULL_REPLY,
                 refuse_append: bool = False) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.record = ServerRecord(refuse_next=refuse_first, cut_next_uploads=cut_first_uploads, cut_at=cut_at,
                                   cut_reply=cut_reply, full_next_stors=full_first_stors, full_reply=full_reply)
        record = self.record
        authorizer = DummyAuthorizer()
        # refuse_append: no "a" permission, so APPE is answered 550 (as a server that does not allow it).
        authorizer.add_user(USER, PASSWORD, str(root), perm="elrdfmwMT" if refuse_append else "elradfmwMT")

        dtp_base = ThrottledDTPHandler if read_limit else DTPHandler
        if tls:
            from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler

            handler_base, dtp_base = TLS_FTPHandler, TLS_DTPHandler
        else:
            handler_base = FTPHandler

        class CuttingDTP(dtp_base):  # type: ignore[misc, valid-type]
            def handle_read(self) -> None:
                before = self.tot_bytes_received
                super().handle_read()
                with record.lock:
                    record.bytes_received += self.tot_bytes_received - before
                    cut = record.cut_next_uploads > 0 and self.tot_bytes_received >= record.cut_at
                    if cut:
                        record.cut_next_uploads -= 1
                if cut and not self._closed:
                    self._resp = (record.cut_reply, lambda *_: None)
                    self.close()

            if not tls:  # DTPHandler aliases the two; TLS_DTPHandler has its own (no cutting over TLS)
                handle_read_event = handle_read

        if read_limit:
            CuttingDTP.read_limit = read_limit  # type: ignore[attr-defined] - bytes per second

        class Handler(handler_base):  # type: ignore[misc, valid-type]
            def handle(self) -> None:
                with record.lock:
                    refuse = record.refuse_next > 0
                    if refuse:
                        record.refuse_next -= 1
                if refuse:
                    self.handle_max_cons()
                    return
                with record.lock:
                    record.connections += 1
                    record.total_connections += 1
                    record.peak_connections = max(record.peak_connections, record.connections)
                self._counted = True
                super().handle()

            def on_disconnect(self) -> None:
                if getattr(self, "_counted", False):
                    self._counted = False
                    with record.lock:
                        record.connections -= 1

            def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
                with record.lock:
                    record.commands.append((cmd, arg))
                    record.times.append(time.time())
                super().pre_process_command(line, cmd, arg)

            def ftp_STOR(self, file: str, mode: str = "w") -> str | None:  # noqa: N802 - pyftpdlib's name
                with record.lock:
                    full = record.full_next_stors > 0
                    if full:
                        record.full_next_stors -= 1
                if full:  # refused before any data moves, as a server out of space answers
                    self._restart_position = 0
                    self.respond(record.full_reply)
                    return None
                return super().ftp_STOR(file, mode)

        Handler.authorizer = authorizer
        Handler.dtp_handler = CuttingDTP
        self._dtp = CuttingDTP
        Handler.banner = "listener test FTP server"
        Handler.permit_foreign_addresses = False
        Handler.auth_failed_timeout = 0  # answer a wrong password at once (pyftpdlib waits 3 s by default)
        if tls:
            Handler.certfile, Handler.keyfile = str(tls[0]), str(tls[1])
            Handler.tls_control_required = True
            Handler.tls_data_required = True
        self.server = FTPServer(("127.0.0.1", 0), Handler, ioloop=IOLoop())
        self.port = self.server.address[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"ftp-{self.port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.server.serve_forever(timeout=0.02, blocking=False, handle_exit=False)
        self.server.close_all()

    def set_read_limit(self, bytes_per_second: int) -> None:
        """Change the upload limit (bytes a second) of a server started with ``read_limit``; it applies at once."""
        self._dtp.read_limit = bytes_per_second

    def config(self, **overrides: object) -> dict[str, object]:
        """This server as an entry of ``ftp_servers`` in the listener's config."""
        return {"host": "127.0.0.1", "port": self.port, "username": USER, "password": PASSWORD,
                "timeout": 10} | overrides

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
