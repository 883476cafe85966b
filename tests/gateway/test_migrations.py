"""The gateway's migrations g0003 and g0007-g0011 on databases that already hold data."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect, text

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


ROLLUP = "('d1', 3600, 'meter', 'c1', 5, 10, 20, 3660, 1, 2)"
COLUMNS = (
    "device_id, hour, sensor, community_id, minutes, energy_mwh, peak_mw, peak_minute, "
    "first_idx, last_idx"
)


def test_rollups_are_rekeyed_by_community_and_hour_and_back(database_url: str) -> None:
    engine = open_engine(database_url)
    migrate(engine, "g0006")
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO rollups ({COLUMNS}) VALUES {ROLLUP}"))
    migrate(engine, "g0007")
    schema = inspect(engine)
    key = schema.get_pk_constraint("rollups")["constrained_columns"]
    assert key == ["community_id", "hour", "device_id", "sensor"]
    assert schema.get_indexes("rollups") == []  # the table is the one B-tree written
    with engine.begin() as conn:
        assert conn.execute(text(f"SELECT {COLUMNS} FROM rollups")).all() == [
            ("d1", 3600, "meter", "c1", 5, 10, 20, 3660, 1, 2)
        ]
        if engine.dialect.name == "sqlite":  # the table is kept in its key's order
            sql = "SELECT sql FROM sqlite_master WHERE name = 'rollups'"
            assert conn.execute(text(sql)).scalar_one().endswith("WITHOUT ROWID")
    migrate(engine, "g0006", down=True)
    schema = inspect(engine)
    assert schema.get_pk_constraint("rollups")["constrained_columns"] == [
        "device_id",
        "hour",
        "sensor",
    ]
    assert [index["name"] for index in schema.get_indexes("rollups")] == ["rollups_community_hour"]
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT {COLUMNS} FROM rollups")).all() == [
            ("d1", 3600, "meter", "c1", 5, 10, 20, 3660, 1, 2)
        ]
    engine.dispose()


def test_week_markers_are_computed_for_rollups_already_written(database_url: str) -> None:
    engine = open_engine(database_url)
    migrate(engine, "g0007")
    later = "('d1', 1209600, 'meter', 'c1', 5, 10, 20, 1209660, 7, 9)"  # week 2
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO rollups ({COLUMNS}) VALUES {ROLLUP}, {later}"))
    migrate(engine, "g0008")
    with engine.connect() as conn:
        weeks = conn.execute(text("SELECT * FROM rollup_weeks ORDER BY week")).all()
        assert [tuple(w) for w in weeks] == [("c1", 0, 2), ("c1", 2, 9)]
        assert conn.execute(text("SELECT count(*) FROM report_units")).scalar_one() == 0
    migrate(engine, "g0007", down=True)
    assert not {"rollup_weeks", "report_units"} & set(inspect(engine).get_table_names())
    engine.dispose()


def test_rollups_without_energy_or_power_are_deleted(database_url: str) -> None:
    engine = open_engine(database_url)
    migrate(engine, "g0008")
    kept = ("d1", 3600, "meter", "c1", 5, 10, 20, 3660, 1, 2)
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO rollups ({COLUMNS}) VALUES {ROLLUP}"))
        conn.execute(
            text(
                f"INSERT INTO rollups ({COLUMNS}) "
                "VALUES ('d1', 3600, 'water', 'c1', 5, NULL, NULL, NULL, 1, 2)"
            )
        )
    migrate(engine, "g0009")
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT {COLUMNS} FROM rollups")).all() == [kept]
    engine.dispose()


def test_rollups_are_rebuilt_for_their_chains_unless_payloads_were_dropped(
    database_url: str,
) -> None:
    """g0010: rollups, their markers and the reports' kept sums are cleared and the progress
    mark reset, so the catch-up rebuilds them with chains; once payloads were dropped the
    rows stay as they were, with no chain (unknown) and no entries counted."""
    engine = open_engine(database_url)
    migrate(engine, "g0009")
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO rollups ({COLUMNS}) VALUES {ROLLUP}"))
        conn.execute(text("INSERT INTO rollup_weeks VALUES ('c1', 0, 2)"))
        conn.execute(text("UPDATE rollup_progress SET through_idx = 2"))
    migrate(engine, "g0010")
    with engine.connect() as conn:
        for table in ("rollups", "rollup_weeks", "report_units", "report_digests"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0
        assert conn.execute(text("SELECT through_idx FROM rollup_progress")).scalar_one() == -1
    migrate(engine, "g0009", down=True)
    assert "report_digests" not in inspect(engine).get_table_names()
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO rollups ({COLUMNS}) VALUES {ROLLUP}"))
        conn.execute(
            text(
                "INSERT INTO entries (idx, leaf_hash, entry, device_id, seq, contract, "
                "received_at) VALUES (0, :leaf, :entry, 'd1', 1, 'energy_minute@1', 't')"
            ),
            {"leaf": bytes(32), "entry": b"{}"},
        )
        conn.execute(text("INSERT INTO redactions VALUES (0, 'retention', 'r', 't')"))
    migrate(engine, "g0010")
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT {COLUMNS}, entries, chain FROM rollups")).all() == [
            ("d1", 3600, "meter", "c1", 5, 10, 20, 3660, 1, 2, 0, None)
        ]
    engine.dispose()


def test_day_markers_replace_week_markers(database_url: str) -> None:
    """g0011: a marker per community and UTC day from the rollups already written, the week
    markers gone and both report caches cleared; the downgrade computes the weeks again."""
    engine = open_engine(database_url)
    migrate(engine, "g0010")
    later = "('d1', 93600, 'meter', 'c1', 5, 10, 20, 93660, 7, 9)"  # day 1, still week 0
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO rollups ({COLUMNS}) VALUES {ROLLUP}, {later}"))
        conn.execute(text("INSERT INTO rollup_weeks VALUES ('c1', 0, 9)"))
        conn.execute(text("INSERT INTO report_units VALUES ('c1', 'x', '[[0],[9]]', '[]')"))
        conn.execute(text("INSERT INTO report_digests VALUES ('c1', 0, 3600, '[[0],[9]]', 1, 'd')"))
    migrate(engine, "g0011")
    with engine.connect() as conn:
        days = conn.execute(text("SELECT * FROM rollup_days ORDER BY day")).all()
        assert [tuple(d) for d in days] == [("c1", 0, 2), ("c1", 1, 9)]
        for table in ("report_units", "report_digests"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0
    assert "rollup_weeks" not in inspect(engine).get_table_names()
    migrate(engine, "g0010", down=True)
    with engine.connect() as conn:
        weeks = conn.execute(text("SELECT * FROM rollup_weeks")).all()
        assert [tuple(w) for w in weeks] == [("c1", 0, 9)]
    assert "rollup_days" not in inspect(engine).get_table_names()
    engine.dispose()
