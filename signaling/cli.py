"""The `tally` command: serve, migrate, and a little administration."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys

from aiohttp import web
from pydantic import ValidationError

from bus import is_shared
from signaling.auth.sealing import SecretsKeysError, new_key
from signaling.settings import Settings
from telemetry.logs import configure as configure_logging


def _raise_open_file_limit() -> None:
    """Every viewer holds a socket: allow as many as the system's hard limit, not the usual soft 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# Collect the young generation after this many new container objects, not CPython's 700. A busy node
# holds millions of long-lived objects (connections, sessions); at the default, the in-flight objects
# each young collection promotes brought on a full collection every few seconds, a 100-400 ms pause
# that every chat client and viewer felt (it set the chat benchmark's p99). At this threshold a young
# collection comes every few seconds and takes ~25-35 ms with 2,200 clients, and full ones are rare.
GC_YOUNG_THRESHOLD = 50_000


def _tune_gc() -> None:
    """Leave what start-up made (modules, classes, the app) out of every later collection, and collect
    the young generation less often (see GC_YOUNG_THRESHOLD)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def settings_problems(exc: ValidationError) -> str:
    """What is wrong with the settings, without the values given: pydantic's own text quotes them, and
    for a check across settings that is all of them, secrets included."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]).upper()
        lines.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return f"{len(lines)} problem(s) with the settings:\n  " + "\n  ".join(lines)


def _serve(settings: Settings) -> None:
    from signaling.app import create_app

    _raise_open_file_limit()
    app = create_app(settings)
    _tune_gc()
    # web.run_app handles SIGINT and SIGTERM: it stops accepting, runs cleanup_ctx, and exits 0.
    tls = settings.https_tls() if settings.tls_cert else None
    web.run_app(app, host=settings.host, port=settings.port, access_log=None, print=None, ssl_context=tls,
                shutdown_timeout=10)  # NodeIdTaken (another process is this node) ends it at start


async def _migrate(settings: Settings) -> None:
    from signaling.db.database import Database
    from signaling.migrations.runner import upgrade

    db = Database(settings.resolved_database_url)
    try:
        await upgrade(db.engine)
    finally:
        await db.close()
    print(f"database at {db.engine.url.render_as_string(hide_password=True)} is up to date")


async def _set_role(settings: Settings, username: str, role: str) -> None:
    from signaling.accounts.service import AccountService
    from signaling.auth.access_tokens import AccessTokens, load_or_create_secret
    from signaling.auth.passwords import Passwords
    from signaling.auth.roles import Role
    from signaling.auth.sealing import settings_secret
    from signaling.db.database import Database

    secret = load_or_create_secret(settings_secret(settings, settings.jwt_secret, "JWT_SECRET"), settings.data_dir)
    db = Database(settings.resolved_database_url)
    try:
        accounts = AccountService(db, Passwords(1, 8), AccessTokens(secret, 60), 60, Role.VIEWER)
        user = await accounts.set_role(username, Role.parse(role))
        print(f"{user.username} is now {user.role}")
    finally:
        await db.close()


def _seal(settings: Settings) -> int:
    """`tally secrets seal`: standard input's value sealed, for a setting (JWT_SECRET=sealed:…)."""
    from signaling.auth.sealing import sealer_for

    value = sys.stdin.read().rstrip("\r\n")
    if not value:
        print("tally: give the value to seal on standard input", file=sys.stderr)
        return 2
    print(sealer_for(settings).seal(value))
    return 0


async def _rotate(settings: Settings) -> None:
    """`tally secrets rotate`: every secret in the database sealed under the newest key."""
    from signaling.auth.sealing import sealer_for
    from signaling.db.database import Database
    from signaling.db.sealed_columns import SealedColumns

    sealer = sealer_for(settings)
    db = Database(settings.resolved_database_url)
    try:
        counts = await SealedColumns(db, sealer).reseal()
    finally:
        await db.close()
    print("sealed under the newest key: " + ", ".join(f"{n} {label}" for label, n in counts.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tally", description="Tallylight live streaming platform")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the platform (embedded mode: everything in one process)")
    serve.add_argument("--media", choices=["on", "off"], default=None,
                       help="off: a front door only (API, pages, WHIP/WHEP, chat); media goes to `tally node`s")
    commands.add_parser("node", help="run a media node of a cluster (as `serve --media on`; meet on BUS_URL)")
    cluster = commands.add_parser("cluster", help="run a cluster on this machine: a front door and media nodes")
    cluster.add_argument("--nodes", type=int, default=None, help="media nodes (default: one per core)")
    commands.add_parser("worker", help="run a notification worker (the distributed mode; meet on DATABASE_URL and BUS_URL)")
    commands.add_parser("migrate", help="apply database migrations")
    role = commands.add_parser("set-role", help="change a user's role")
    role.add_argument("username")
    role.add_argument("role", choices=["viewer", "broadcaster", "moderator", "admin"])
    sealing = commands.add_parser("secrets", help="secrets at rest: keys, sealed settings, rotation")
    actions = sealing.add_subparsers(dest="action", required=True)
    actions.add_parser("new-key", help="print a fresh key for SECRETS_KEYS")
    actions.add_parser("seal", help="print the value on standard input sealed (for JWT_SECRET, TURN_SECRET, …)")
    actions.add_parser("rotate", help="re-seal every secret in the database under the newest key of SECRETS_KEYS")
    args = parser.parse_args(argv)
    if args.command == "secrets" and args.action == "new-key":  # needs no settings (SECRETS_KEYS may be wrong)
        print(new_key())
        return 0

    overrides: dict[str, bool] = {}
    if args.command == "node":
        overrides["media"] = True
    elif getattr(args, "media", None) is not None:
        overrides["media"] = args.media == "on"
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:  # say which setting is wrong, without a traceback
        print(f"tally: {settings_problems(exc)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, settings.resolved_node_id)
    if settings.log_level.upper() != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)  # its per-plugin start-up lines are noise
    if args.command == "node" and not is_shared(settings.bus_url):
        print("tally: a node meets its cluster on the bus: set BUS_URL to the cluster's Redis", file=sys.stderr)
        return 2
    if args.command in ("serve", "node"):
        from cluster import NodeIdTaken
        from signaling.app import PortTaken

        try:
            _serve(settings)
        except NodeIdTaken as exc:
            print(f"tally: {exc}", file=sys.stderr)
            return 3  # it would fail the same way again: supervisors do not start it again
        except (PortTaken, SecretsKeysError) as exc:
            print(f"tally: {exc}", file=sys.stderr)
            return 2
    elif args.command == "cluster":
        import os

        from signaling.local_cluster import run_cluster

        nodes = args.nodes or len(os.sched_getaffinity(0))
        if not 1 <= nodes <= 256:
            print("tally: --nodes is between 1 and 256", file=sys.stderr)
            return 2
        return asyncio.run(run_cluster(settings, nodes))
    elif args.command == "worker":
        from signaling.worker_process import run_worker

        try:
            return asyncio.run(run_worker(settings))
        except SecretsKeysError as exc:
            print(f"tally: {exc}", file=sys.stderr)
            return 2
    elif args.command == "migrate":
        asyncio.run(_migrate(settings))
    elif args.command == "set-role":
        try:
            asyncio.run(_set_role(settings, args.username, args.role))
        except Exception as exc:  # an operator command: say what went wrong, no traceback
            print(f"tally: {exc}", file=sys.stderr)
            return 1
    elif args.command == "secrets":
        try:
            if args.action == "seal":
                return _seal(settings)
            asyncio.run(_rotate(settings))
        except SecretsKeysError as exc:
            print(f"tally: {exc}", file=sys.stderr)
            return 2 if args.action == "seal" else 1
        except Exception as exc:  # an operator command: say what went wrong, no traceback
            print(f"tally: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
