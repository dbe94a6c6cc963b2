"""Builds the clients a run needs from Settings, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from cutover.alembic_runner import AlembicRunner
from cutover.db import ConnInfo
from cutover.pgtools import PgClient, locate_bin_dir
from cutover.process import Runner
from cutover.safety import migration_pgoptions
from cutover.service import ServiceController
from cutover.settings import Settings


@dataclass
class Toolkit:
    settings: Settings
    conn: ConnInfo
    runner: Runner
    alembic: AlembicRunner
    service: ServiceController

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
            service=ServiceController(
                runner=runner,
                status_argv=settings.service_argv("status"),
                stop_argv=settings.service_argv("stop"),
                start_argv=settings.service_argv("start"),
            ),
        )

    def pg_client(self, server_major: int) -> PgClient:
        bin_dir, major = locate_bin_dir(self.settings.pg_bin, server_major, self.runner)
        return PgClient(bin_dir=bin_dir, major=major, conn=self.conn, runner=self.runner,
                        timeout=self.settings.dump_timeout)
