"""The gateway's migration g0003 on a database that already holds a registry."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from gateway.store import MIGRATIONS, VERSION_TABLE
from ledger.registry_replay import local_directory
from ledger.storage import open_engine


def migrate(engine: Engine, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("version_table", VERSION_TABLE)
    with engine.connect() as conn:
        config.attributes["connection"] = conn.execution_options(patio_write=True)
        (command.downgrade if down else command.upgrade)(config, revision)
        conn.commit()


def test_time_zones_and_profiles_arrive_on_an_existing_directory(
    database_url: str, tmp_path: Path
) -> None:
    engine = open_engine(database_url)  # the ledger's own tables
    migrate(engine, "g0002")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO communities (id, name, created_at) VALUES ('c1', 'C', 't')"))
        conn.execute(
            text(
                "INSERT INTO devices (id, community_id, public_key, created_at) "
                "VALUES ('d1', 'c1', 'K1', 't')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO device_keys (device_id, public_key, created_at) "
                "VALUES ('d1', 'K1', 't')"
            )
        )
    migrate(engine, "head")
    directory = local_directory(engine)
    assert directory is not None
    assert (
        directory.communities["c1"].time_zone == "UTC"
    )  # what a registry entry without one replays as
    assert directory.devices["d1"].profile is None
    migrate(engine, "g0002", down=True)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, name FROM communities")).all() == [("c1", "C")]
        assert conn.execute(text("SELECT count(*) FROM device_keys")).scalar_one() == 1
    engine.dispose()
