"""The command line: ``python -m listener <command>``."""
from __future__ import annotations

import argparse
import json
import sys

from config import ConfigError, Settings, load_config, mask_secrets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m listener", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="web server, worker and (without REDIS_URL) an embedded Redis, in the foreground")
    worker = commands.add_parser("worker", help="an RQ worker with the scheduler and the outbox dispatcher")
    worker.add_argument("--burst", action="store_true", help="stop once the queue is empty")
    commands.add_parser("migrate", help="apply database migrations (the Procfile's release)")
    commands.add_parser("check-config", help="validate the config and print it with secrets masked")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    try:
        config = load_config(settings.config_path, settings.environ)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2

    if args.command == "check-config":
        print(json.dumps(mask_secrets(config.model_dump(mode="json")), indent=2))
        return 0
    if args.command == "migrate":
        from listener.migrate import upgrade

        upgrade(settings.database_url)
        return 0

    from listener.logs import configure_logging

    configure_logging(settings)
    if args.command == "worker":
        from listener.runtime import Runtime
        from listener.worker import run_worker

        run_worker(Runtime(settings=settings, config=config), burst=args.burst)
        return 0
    from listener.supervisor import run_all

    return run_all(settings)


if __name__ == "__main__":
    sys.exit(main())
