"""Leader election between gateway processes on one PostgreSQL database.

A role (the sealer, the anchorer) is held with a session-level advisory lock on a
connection of its own: PostgreSQL releases it when that connection ends, so a holder that
dies (even by SIGKILL) frees the role, and the next follower's attempt takes it over. On
SQLite the gateway is one process (docs/scaling.md): it always leads.
"""

from __future__ import annotations

import logging

import psycopg
from sqlalchemy import Engine

log = logging.getLogger(__name__)

# The lock key is derived from the role and the schema, so deployments (or tests) sharing
# one database on different schemas elect their leaders apart.
_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended(%s || ':' || current_schema(), 0))"


def psycopg_conninfo(engine: Engine) -> str:
    """The engine's PostgreSQL URL as libpq understands it (no SQLAlchemy driver suffix)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class Leadership:
    """One role among the gateway processes: `try_lead()` each interval, act when it says so."""

    def __init__(self, engine: Engine, role: str) -> None:
        self.role = role
        self._conninfo = psycopg_conninfo(engine) if engine.dialect.name == "postgresql" else None
        self._conn: psycopg.Connection | None = None  # the lock's session, kept between tries
        self._leading = self._conninfo is None

    @property
    def leading(self) -> bool:
        """Whether this process held the role at its last attempt."""
        return self._leading

    def try_lead(self) -> bool:
        """Keep or take the role; blocking (run it in a thread). False while another leads."""
        if self._conninfo is None:
            return True
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._conninfo, autocommit=True)
            if self._leading:  # still ours as long as the session that took it lives
                self._conn.execute("SELECT 1")
            else:
                won = self._conn.execute(_TRY_LOCK, (f"patio-{self.role}",)).fetchone()
                self._leading = bool(won and won[0])
                if self._leading:
                    log.info("leading as the %s", self.role)
        except psycopg.Error as exc:
            if self._leading:
                log.warning("lost the %s role with its database session: %s", self.role, exc)
            self.resign()
        return self._leading

    def resign(self) -> None:
        """Give the role up (closing the session releases the lock)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._leading = self._conninfo is None
