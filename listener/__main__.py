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
    worker.add_argument("--processes", type=int, help="worker processes on this machine (default $WORKER_PROCESSES"
                        " or 1); more than one runs a pool that restarts a worker that dies")
    commands.add_parser("migrate", help="apply database migrations (the Procfile's release)")
    commands.add_parser("check-config", help="validate the config and print it with secrets masked")
    for what, filters in (("items", ("source", "state", "key")), ("actions", ("source", "kind", "status")),
                          ("events", ("source", "status", "endpoint"))):
        lister = commands.add_parser(what, help=f"list {what}, newest first")
        for name in filters:
            lister.add_argument(f"--{name}")
        lister.add_argument("--limit", type=int, default=50)
        lister.add_argument("--before", type=int, help="page: only ids below this one")
        lister.add_argument("--json", action="store_true", help="the admin API's JSON instead of a table")
        lister.add_argument("--url", help="a running listener (default: this machine's database and Redis)")
    retry = commands.add_parser("retry", help="retry a failed action")
    retry.add_argument("id", type=int)
    replay = commands.add_parser("replay", help="run a recorded event through its handler again")
    replay.add_argument("id", type=int)
    for command in (retry, replay):
        command.add_argument("--url", help="a running listener (default: this machine's database and Redis)")
    send = commands.add_parser("send-fixture", help="post a sample payload to a running listener")
    send.add_argument("source")
    send.add_argument("name", help="a file name under tests/fixtures/<source>/, without .json")
    send.add_argument("--url", help="the listener (default http://127.0.0.1:$PORT)")
    watch = commands.add_parser("watch", help="live transfers with progress bars")
    watch.add_argument("--url", help="a running listener (default: this machine's database and Redis)")
    watch.add_argument("--interval", type=float, default=1.0)
    watch.add_argument("--once", action="store_true", help="print once and stop")
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

    if args.command in ("items", "actions", "events", "retry", "replay", "watch", "send-fixture"):
        return _operator_command(args, settings, config)

    from listener.logs import configure_logging

    configure_logging(settings)
    if args.command == "worker" and (args.processes or settings.worker_processes) > 1 and not args.burst:
        from listener.supervisor import run_pool

        return run_pool(settings, args.processes or settings.worker_processes)
    if args.command == "worker":
        from listener.runtime import Runtime
        from listener.worker import run_worker

        run_worker(Runtime(settings=settings, config=config), burst=args.burst)
        return 0
    from listener.supervisor import run_all

    return run_all(settings)


def _operator_command(args: argparse.Namespace, settings: Settings, config) -> int:  # noqa: ANN001
    from listener import cli

    if args.command == "send-fixture":
        return cli.send_fixture(settings, config, args.source, args.name, args.url, sys.stdout)
    client = cli.AdminClient(settings, config, args.url)
    if args.command == "retry":
        return cli.post_command(client, f"/api/actions/{args.id}/retry", sys.stdout)
    if args.command == "replay":
        return cli.post_command(client, f"/api/events/{args.id}/replay", sys.stdout)
    if args.command == "watch":
        return cli.watch(client, sys.stdout, interval=args.interval, rounds=1 if args.once else None)
    filters = {name: getattr(args, name, None) for name in ("source", "state", "key", "kind", "status", "endpoint")}
    filters |= {"limit": args.limit, "before": args.before}
    return cli.list_command(client, args.command, filters, args.json, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
