"""An in-process site for alert tests: a real log and gateway tables (SQLite or PostgreSQL),
registry changes and readings through the writer's own functions, an evaluator with a clock
the test moves."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from contracts.alert import AlertRecord
from contracts.base import Context
from contracts.device_registry import RegistryChange
from gateway.alerts.channels import Sender
from gateway.alerts.evaluator import AlertSettings, Evaluator, iso, log_end, store_settings
from gateway.alerts.record import record_alert
from gateway.alerts.rules import RuleSpec
from gateway.alerts.tables import alert_rules
from gateway.directory import Directory
from gateway.store import upgrade
from gateway.submissions import change_registry, envelope_contract
from ledger.keys import NamedKey
from ledger.log import Log, open_data_dir
from ledger.storage import open_engine

# 2026-11-22T03:00:00Z: the night the boiler stops. Arrivals are stamped with the test's clock.
T0 = int(datetime(2026, 11, 22, 3, 0, tzinfo=UTC).timestamp())
COMMUNITY = "hoa-1"


class Clock:
    """A wall clock the test sets."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Site:
    """One community's log, devices, rules and evaluator."""

    def __init__(
        self,
        data_dir: Any,
        database_url: str,
        *,
        smtp_url: str | None = None,
        first_pass: bool = True,
    ) -> None:
        self.log: Log = open_data_dir(data_dir, database_url=database_url)
        upgrade(self.log.engine)
        self.registry_key = NamedKey.generate("patio-registry")
        self.directory = Directory(self.log.engine, registry_key=self.registry_key.public_key_b64)
        self.clock = Clock(T0)
        self.keys: dict[str, NamedKey] = {}
        self.seqs: dict[str, int] = {}
        self.evaluator = self.new_evaluator(smtp_url=smtp_url)
        self.change(
            "register_community",
            {"id": COMMUNITY, "name": "Calle Mayor 5", "time_zone": "Europe/Madrid"},
        )
        if first_pass:  # starts at the log's end: no rule yet
            self.evaluator.evaluate()

    def new_evaluator(self, *, smtp_url: str | None = None, retry_base: float = 30) -> Evaluator:
        """An evaluator on this site's database (a restarted gateway gets a new one)."""
        engine = open_engine(self.log.engine.url.render_as_string(hide_password=False))
        return Evaluator(
            engine,
            sender=Sender(smtp_url=smtp_url),
            recorder=self.record,
            clock=self.clock,
            retry_base=retry_base,
        )

    def record(self, record: AlertRecord) -> str:
        verdict = record_alert(record, log_=self.log, signer=self.registry_key)
        return str(verdict.result["log_tag_id"])

    def change(self, action: Any, subject: dict[str, Any]) -> None:
        verdict = change_registry(
            RegistryChange(action, subject, iso(self.clock.now)),
            log=self.log,
            signer=self.registry_key,
        )
        assert verdict.recorded == "accepted", verdict.result
        self.directory.forget(subject["id"])

    def device(self, device_id: str, profile: dict[str, Any] | None = None) -> None:
        key = NamedKey.generate(device_id)
        self.keys[device_id] = key
        self.change(
            "register_device",
            {
                "id": device_id,
                "community_id": COMMUNITY,
                "public_key": key.public_key_b64,
                "profile": profile,
            },
        )

    def rule(self, spec: dict[str, Any]) -> int:
        parsed = RuleSpec.model_validate(spec)
        with self.log.engine.connect() as conn, conn.begin():
            result = conn.execute(
                alert_rules.insert().values(
                    community_id=COMMUNITY,
                    name=parsed.name,
                    created_at=self.clock.now,
                    spec=parsed.model_dump_json(by_alias=True),
                    from_idx=log_end(conn),
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def settings(self, **spec: Any) -> None:
        with self.log.engine.connect() as conn, conn.begin():
            store_settings(conn, COMMUNITY, AlertSettings.model_validate(spec))

    def reading(self, device_id: str, minute: int, readings: dict[str, Any]) -> None:
        """One energy_minute for `minute` (Unix seconds), received at the clock's time."""
        self.readings(device_id, [(minute, readings)])

    def readings(self, device_id: str, minutes: list[tuple[int, dict[str, Any]]]) -> None:
        """A batch of a device's minutes in one commit, received at the clock's time, through
        the energy_minute contract as the writer admits them."""
        now = datetime.fromtimestamp(self.clock.now, UTC)
        context = Context(directory=self.directory, log=self.log, now=now)
        submissions = []
        for minute, readings in minutes:
            submissions.append(
                envelope_contract("energy_minute").admit(
                    self.envelope(device_id, minute, readings), context
                )
            )
        outcomes = self.log.append(submissions, now=now)
        assert all(getattr(o, "status", None) == "accepted" for o in outcomes), outcomes

    def envelope(self, device_id: str, minute: int, readings: dict[str, Any]) -> dict[str, Any]:
        """The device's next signed envelope."""
        key = self.keys[device_id]
        seq = self.seqs[device_id] = self.seqs.get(device_id, 0) + 1
        payload = {
            "device_id": device_id,
            "seq": seq,
            "start": iso(minute),
            "period_s": 60,
            "readings": readings,
        }
        return {"payload": payload, "sig": key.sign_payload(payload)}

    def close(self) -> None:
        self.evaluator.engine.dispose()
        self.log.engine.dispose()


def temperature(value: float) -> dict[str, Any]:
    return {"unit": "Cel", "n": 12, "missing": 0, "avg": value, "min": value, "max": value}


def switch(on: bool) -> dict[str, Any]:
    return {"unit": "bool", "any": on, "on_fraction": 1.0 if on else 0.0}


def energy(wh: float) -> dict[str, Any]:
    return {"unit": "Wh", "sum": wh}
