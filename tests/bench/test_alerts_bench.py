"""bench.alerts runs again on a PostgreSQL database it ran on before: each run in a schema
of its own, dropped afterwards."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from bench.alerts import fresh_schema, run


def schemas(url: str) -> set[str]:
    """The bench's schemas in the database at `url`."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(
                conn.execute(
                    text(
                        "SELECT schema_name FROM information_schema.schemata "
                        "WHERE schema_name LIKE 'bench_alerts_%'"
                    )
                ).scalars()
            )
    finally:
        engine.dispose()


def test_a_database_the_bench_ran_on_takes_it_again(postgres_url: str) -> None:
    """Two runs on one database both evaluate every entry, and leave no schema behind."""
    before = schemas(postgres_url)
    for _ in range(2):
        with fresh_schema(postgres_url) as url:
            assert url != postgres_url
            figures = run(url, devices=3, minutes=4, per_pass=5, profile=None)
        assert figures.read == 3 * 4
    assert schemas(postgres_url) == before
