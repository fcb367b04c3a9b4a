"""`tally worker`: the composition root of a notification worker process (the distributed mode).

It takes jobs from the outbox in the shared database and tells people (in-app over the bus, webhooks);
any number of them may run, on any hosts: each job is leased to one. SIGTERM stops it within seconds:
jobs under way are cancelled and taken again by a worker once their leases run out.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from bus import open_bus
from signaling.auth.access_tokens import load_or_create_secret
from signaling.auth.sealing import sealer_for
from signaling.db.database import Database
from signaling.db.sealed_columns import SealedColumns
from signaling.notifications.parts import notification_parts
from signaling.settings import Settings

log = logging.getLogger(__name__)


async def run_worker(settings: Settings) -> int:
    sealer = sealer_for(settings)  # SecretsKeysError: a cluster's worker needs SECRETS_KEYS
    secret = load_or_create_secret(sealer.open_setting(settings.jwt_secret, "JWT_SECRET"), settings.data_dir)
    db = Database(settings.resolved_database_url)
    bus = open_bus(settings.bus_url)
    parts = notification_parts(settings, db, bus, secret, sealer)
    worker = parts.worker(name=f"{settings.resolved_node_id}:worker")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await bus.ping()
        await SealedColumns(db, sealer).start()  # other keys than the database's stop it here
        worker.start()
        log.info("Tallylight notification worker %s ready", worker.name)
        await stop.wait()
        log.info("stopping: %d jobs done, %d to retry, %d failed", worker.done, worker.retried, worker.failed)
    finally:
        await worker.close()
        await parts.webhooks.close()
        await parts.push.close()
        await bus.close()
        await db.close()
    return 0
