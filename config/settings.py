"""Settings read from the environment, once, in one place (SPEC 5)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _normalise_database_url(url: str) -> str:
    """Use the psycopg 3 driver whatever scheme a PaaS hands us."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def sqlite_pragmas(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """SQLite tuning from the environment: durability level and how long a writer waits for the lock."""
    env = os.environ if environ is None else environ
    return {
        # NORMAL in WAL mode: a commit survives the process dying (what a 200 promises);
        # only an OS crash or power cut can lose the last commits. FULL survives those too.
        "synchronous": (env.get("SQLITE_SYNCHRONOUS") or "NORMAL").upper(),
        "busy_timeout": str(int(env.get("SQLITE_BUSY_TIMEOUT_MS") or 10000)),
    }


@dataclass(frozen=True)
class Settings:
    var_dir: Path = PROJECT_ROOT / "var"
    database_url: str = ""
    redis_url: str | None = None
    config_path: Path = PROJECT_ROOT / "config" / "listener.yaml"
    admin_token: str | None = None
    port: int = 8000
    log_format: str = "text"
    log_level: str = "INFO"
    queue_name: str = "listener"
    heartbeat_seconds: float = 10.0  # a running job refreshes its action this often; 3 missed: abandoned
    worker_processes: int = 1  # worker processes of `run` and of `worker` (the pool)
    proxy_hops: int = 0  # how many proxies in front set X-Forwarded-For (a PaaS router: 1)
    # Everything the YAML file may refer to as ${NAME}.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        var_dir = Path(env.get("LISTENER_VAR_DIR") or PROJECT_ROOT / "var")
        database_url = env.get("DATABASE_URL") or f"sqlite:///{var_dir / 'listener.db'}"
        config_path = Path(env.get("LISTENER_CONFIG") or PROJECT_ROOT / "config" / "listener.yaml")
        if not config_path.is_absolute():
            config_path = Path.cwd() / config_path
        return cls(
            var_dir=var_dir,
            database_url=_normalise_database_url(database_url),
            redis_url=env.get("REDIS_URL") or None,
            config_path=config_path,
            admin_token=env.get("LISTENER_ADMIN_TOKEN") or None,
            port=int(env.get("PORT") or 8000),
            log_format=(env.get("LOG_FORMAT") or "text").lower(),
            log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
            queue_name=env.get("LISTENER_QUEUE") or "listener",
            proxy_hops=int(env.get("LISTENER_PROXY_HOPS") or 0),
            worker_processes=max(1, int(env.get("WORKER_PROCESSES") or 1)),
            heartbeat_seconds=float(env.get("LISTENER_HEARTBEAT_SECONDS") or 10.0),
            environ=env,
        )

    @property
    def embedded_redis_socket(self) -> Path:
        """Where the embedded Redis of ``listener run`` listens when REDIS_URL is unset."""
        return self.var_dir / "redis.sock"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"unix://{self.embedded_redis_socket}"
