"""Builds the clients a run needs from Settings, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from pg_cutover.backend.service import ServiceController
from pg_cutover.migrations.runner import AlembicRunner
from pg_cutover.migrations.safety import migration_pgoptions
from pg_cutover.pg.db import ConnInfo
from pg_cutover.pg.tools import PgClient, locate_bin_dir
from pg_cutover.process import Runner
from pg_cutover.settings import Settings


@dataclass
class Toolkit:
    settings: Settings
    conn: ConnInfo
    runner: Runner
    alembic: AlembicRunner
    service: ServiceController
    rollback_service: ServiceController  # the backend that serves the restored (pre-cutover) schema

    @classmethod
    def from_settings(cls, settings: Settings) -> "Toolkit":
        conn = ConnInfo(
            host=settings.postgres_host,
            port=settings.postgres_port,
            user=settings.postgres_user,
            password=settings.password,
        )
        runner = Runner(secrets=settings.secrets)
        return cls(
            settings=settings,
            conn=conn,
            runner=runner,
            alembic=AlembicRunner(
                command=settings.alembic_argv,
                cwd=settings.alembic_dir,
                conn=conn,
                runner=runner,
                timeout=settings.alembic_timeout,
                pgoptions=migration_pgoptions(settings.lock_timeout, settings.statement_timeout),
            ),
            service=_controller(settings, runner, rollback=False),
            rollback_service=_controller(settings, runner, rollback=True),
        )

    def pg_client(self, server_major: int) -> PgClient:
        bin_dir, major = locate_bin_dir(self.settings.pg_bin, server_major, self.runner)
        return PgClient(bin_dir=bin_dir, major=major, conn=self.conn, runner=self.runner,
                        timeout=self.settings.dump_timeout)


def _controller(settings: Settings, runner: Runner, *, rollback: bool) -> ServiceController:
    commands = {which: settings.service_command(which, rollback=rollback) for which in ("status", "stop", "start")}
    return ServiceController(runner=runner, status_argv=commands["status"][0], stop_argv=commands["stop"][0],
                             start_argv=commands["start"][0],
                             sources={which: source for which, (_, source) in commands.items()})
