"""`patio db upgrade/backup/restore`: the gateway's database (ledger and gateway tables)."""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from ledger.cli import EXIT_FAILED, EXIT_OK, CommandError

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"  # pg_dump's custom format


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `patio db`."""
    db = commands.add_parser("db", help="migrate, back up and restore the gateway's database")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = actions.add_parser("upgrade", help="run the ledger's and the gateway's migrations")
    upgrade.add_argument(
        "--check", action="store_true", help="say whether the database is current (exit 1 if not)"
    )
    upgrade.set_defaults(handler=run_upgrade)
    backup = actions.add_parser("backup", help="a consistent copy, safe while the gateway runs")
    backup.add_argument("out", type=Path, help="file to write (never overwritten)")
    backup.set_defaults(handler=run_backup)
    restore = actions.add_parser("restore", help="load a backup into an empty database")
    restore.add_argument("backup", type=Path, help="a file written by `patio db backup`")
    restore.set_defaults(handler=run_restore)


def _engine() -> Engine:
    """The configured database (PATIO_DATA_DIR, PATIO_DATABASE_URL), not migrated."""
    from gateway.config import Settings
    from ledger.storage import database_url, open_engine

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    return open_engine(database_url(settings.database_url, settings.data_dir), migrate=False)


def _migrations() -> list[tuple[str, str, str]]:
    """(name, script location, version table) of each package's migrations, in run order."""
    from gateway import store
    from ledger import storage

    return [
        ("ledger", storage.MIGRATIONS, storage.VERSION_TABLE),
        ("gateway", store.MIGRATIONS, store.VERSION_TABLE),
    ]


def run_upgrade(args: argparse.Namespace) -> int:
    """Migrate to the newest schema, or with --check report whether that is needed."""
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from ledger.storage import upgrade

    engine = _engine()
    try:
        behind = []
        with engine.connect() as conn:
            for name, location, table in _migrations():
                config = Config()
                config.set_main_option("script_location", location)
                head = ScriptDirectory.from_config(config).get_current_head()
                context = MigrationContext.configure(conn, opts={"version_table": table})
                current = context.get_current_revision()
                if current != head:
                    behind.append(f"{name} at {current or 'no schema'}, newest {head}")
        if args.check:
            if behind:
                print("not current: " + "; ".join(behind))
                return EXIT_FAILED
            print("current")
            return EXIT_OK
        for _, location, table in _migrations():
            upgrade(engine, migrations=location, version_table=table)
        print("upgraded: " + "; ".join(behind) if behind else "already current")
        return EXIT_OK
    finally:
        engine.dispose()


def run_backup(args: argparse.Namespace) -> int:
    """SQLite: the online backup API (one consistent snapshot, writers carry on).
    PostgreSQL: pg_dump of the schema in use, custom format (one snapshot as well)."""
    if args.out.exists():
        raise CommandError(f"{args.out} exists; backups are never overwritten")
    engine = _engine()
    try:
        if engine.dialect.name == "sqlite":
            source = sqlite3.connect(f"file:{engine.url.database}?mode=ro", uri=True)
            target = sqlite3.connect(args.out)
            try:
                source.backup(target)  # all pages in one step: a single read transaction
            finally:
                target.close()
                source.close()
        else:
            with engine.connect() as conn:
                schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            _run_pg("pg_dump", "--format=custom", "--no-owner", f"--schema={schema}",
                    f"--file={args.out}", f"--dbname={_libpq_url(engine)}")  # fmt: skip
    finally:
        engine.dispose()
    print(f"backed up to {args.out}")
    return EXIT_OK


def run_restore(args: argparse.Namespace) -> int:
    """Load a backup into the configured database, which must hold no ledger yet."""
    try:
        with args.backup.open("rb") as file:
            magic = file.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise CommandError(f"cannot read {args.backup}: {exc.strerror}") from exc
    engine = _engine()
    try:
        if inspect(engine).has_table("entries"):
            raise CommandError("the database already holds a ledger; restore into an empty one")
        if engine.dialect.name == "sqlite":
            if magic != SQLITE_MAGIC:
                raise CommandError(f"{args.backup} is not a SQLite backup")
            engine.dispose()  # nothing may hold the file while it is replaced
            source = sqlite3.connect(f"file:{args.backup}?mode=ro", uri=True)
            target = sqlite3.connect(str(engine.url.database))
            try:
                source.backup(target)
            finally:
                target.close()
                source.close()
        else:
            if not magic.startswith(PG_DUMP_MAGIC):
                raise CommandError(f"{args.backup} is not a PostgreSQL backup (pg_dump -Fc)")
            _run_pg("pg_restore", "--no-owner", "--exit-on-error", "--single-transaction",
                    f"--dbname={_libpq_url(engine)}", str(args.backup))  # fmt: skip
    finally:
        engine.dispose()
    print(f"restored from {args.backup}")
    return EXIT_OK


def _libpq_url(engine: Engine) -> str:
    """The engine's URL as libpq reads it (no SQLAlchemy driver suffix)."""
    url = make_url(engine.url.render_as_string(hide_password=False))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _run_pg(tool: str, *args: str) -> None:
    if shutil.which(tool) is None:
        raise CommandError(f"{tool} not found; install the PostgreSQL client (postgresql-client)")
    done = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
        raise CommandError(f"{tool} failed: {lines[-1]}")
