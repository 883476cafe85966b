"""The FastAPI application: built from Settings, with its lifespan and its routes."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlparse

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.alert import AlertRecord
from gateway import problems
from gateway.alerts.channels import Sender
from gateway.alerts.evaluator import Evaluator
from gateway.alerts.task import AlertConfig, AlertTask
from gateway.anchoring import AnchorSettings, AnchorTask
from gateway.config import Settings, settle_heap
from gateway.deps import Gateway
from gateway.directory import Directory
from gateway.events import EventFeed
from gateway.metrics import Metrics
from gateway.readings import ReadingIndex
from gateway.retention import RetentionTask
from gateway.rollups import Rollups
from gateway.sealer import Sealer
from gateway.store import upgrade
from gateway.submissions import Submissions, Verdict
from gateway.writer import WriterClient
from ledger.keys import NamedKey
from ledger.log import StoredCheckpoint, open_data_dir

REGISTRY_KEY_FILE = "registry.key"
log = logging.getLogger(__name__)
refusals = logging.getLogger("patio.requests")


def load_registry_key(settings: Settings) -> NamedKey:
    """The key registry entries are signed with, created on first start (mode 0600)."""
    path = settings.data_dir / REGISTRY_KEY_FILE
    if path.exists():
        return NamedKey.load(path)
    key = NamedKey.generate("patio-registry")
    key.save(path)
    return key


class RequestMetrics:
    """Latency per route and status, as plain ASGI (no per-request task or body copy);
    one log line per refused request (a whole batch refused is a delivery refused too)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )
            if status >= 400:
                refusals.info(
                    "request refused: %s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={"event": "refusal", "method": scope["method"], "path": scope["path"],
                           "route": route, "code": status},
                )  # fmt: skip


class BodyLimit:
    """Refuse request bodies over the limit (RFC 9457 413) before anything reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        if declared is not None or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        # A chunked body has no declared length: read it up to the limit before routing.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problems.problem_response(
            413, "Body too large", f"request bodies are limited to {self.limit} bytes"
        )
        await response(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the gateway for `settings` (default: from the environment)."""
    settings = settings or Settings.from_env()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ledger_log = open_data_dir(
            settings.data_dir, database_url=settings.database_url, origin=settings.origin
        )
        upgrade(ledger_log.engine)
        registry_key = load_registry_key(settings)
        directory = Directory(ledger_log.engine, registry_key=registry_key.public_key_b64)
        readings = ReadingIndex(ledger_log.engine, directory)
        readings.catch_up(ledger_log)
        Rollups(ledger_log.engine, directory).catch_up()

        events = EventFeed(ledger_log)

        def on_seal(checkpoint: StoredCheckpoint, seconds: float) -> None:
            metrics.tree_size.set(checkpoint.tree_size)
            metrics.seal_seconds.observe(seconds)
            events.wake()

        sealer = Sealer(
            ledger_log,
            interval=settings.seal_interval,
            entries=settings.seal_entries,
            on_seal=on_seal,
        )

        def after_commit(verdicts: Sequence[Verdict]) -> None:
            # Counted per label set first: a labels() lookup per envelope cost 2 us.
            recorded: Counter[tuple[str, str]] = Counter()
            refused: Counter[tuple[str, str, str]] = Counter()
            for verdict in verdicts:
                if verdict.recorded is not None:
                    recorded[verdict.contract, verdict.recorded] += 1
                else:
                    code = str(verdict.result["code"])
                    refused[verdict.contract, code, verdict.title or "Invalid request"] += 1
            accepted = 0
            for (contract, status), count in recorded.items():
                metrics.submissions.labels(contract, status).inc(count)
                accepted += count if status == "accepted" else 0
            for labels, count in refused.items():
                metrics.refusals.labels(*labels).inc(count)
            sealer.appended(accepted)
            if accepted:
                events.wake()

        writer = WriterClient(
            database_url=ledger_log.engine.url.render_as_string(hide_password=False),
            registry_key=registry_key,
            after_commit=after_commit,
        )
        await writer.start()
        metrics.writer_queue.set_function(lambda: writer.in_flight)
        gateway = Gateway(
            settings=settings,
            log=ledger_log,
            registry_key=registry_key,
            directory=directory,
            writer=writer,
            submissions=Submissions(writer=writer, directory=directory),
            readings=readings,
            sealer=sealer,
            events=events,
        )
        app.state.gateway = gateway
        settle_heap()
        await sealer.seal_now()
        sealer.start()
        events.start()
        metrics.leader.labels("sealer").set_function(lambda: sealer.leadership.leading)
        ingest: Any = None
        if settings.mqtt_url:
            from gateway.mqtt_ingest import MqttIngest

            url = urlparse(settings.mqtt_url)
            ingest = MqttIngest(
                submissions=gateway.submissions,
                host=url.hostname or "127.0.0.1",
                port=url.port or 1883,
                client_id=settings.mqtt_client_id,
                group=settings.mqtt_group,
            )
            ingest.start()
        alert_config = AlertConfig.from_env()

        def record_alert(record: AlertRecord) -> str:
            [verdict] = writer.submit(record).result(timeout=60)
            tag = verdict.result["log_tag_id"]
            if tag is None:
                raise RuntimeError(f"alert not recorded: {verdict.result['error']}")
            return str(tag)

        alerts = AlertTask(
            Evaluator(
                ledger_log.engine,
                sender=Sender(smtp_url=alert_config.smtp_url, smtp_from=alert_config.smtp_from),
                recorder=record_alert,
                metrics=metrics,
                retry_base=alert_config.retry_base,
                claim_seconds=alert_config.claim_seconds,
            ),
            interval=alert_config.interval,
            backlog_interval=alert_config.backlog_interval,
        )
        app.state.alerts = alerts
        alerts.start()
        metrics.leader.labels("alerts").set_function(lambda: alerts.leadership.leading)
        retention_task = RetentionTask(ledger_log, interval=settings.retention_interval)
        retention_task.start()
        anchor_settings = AnchorSettings.from_env()
        anchoring = (
            AnchorTask(ledger_log, anchor_settings, on_lag=metrics.anchor_lag.set)
            if anchor_settings
            else None
        )
        if anchoring is not None:
            anchoring.start()
            anchor_role = anchoring.leadership
            metrics.leader.labels("anchorer").set_function(lambda: anchor_role.leading)
        try:
            yield
        finally:
            if anchoring is not None:
                await anchoring.stop()
            await alerts.stop()
            if ingest is not None:
                ingest.stop()
            await retention_task.stop()
            await sealer.stop()
            await events.stop()
            await writer.close()
            ledger_log.engine.dispose()

    app = FastAPI(
        title="Patio ledger gateway",
        version="1",
        summary="Signed community energy data in a verifiable Merkle log.",
        lifespan=lifespan,
        # /metrics is the gateway's telemetry; FastAPI's own OpenTelemetry hooks cost a
        # context lookup on every request and export nothing here.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # /docs is served from vendored Swagger UI by gateway.web (the defaults load a CDN).
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    problems.install(app)

    from gateway.routes import (
        admin,
        alerts,
        checkpoints,
        communities,
        contracts,
        entries,
        health,
        reports,
        retention,
        stream,
        tariffs,
    )
    from gateway.routes.entries import SubmitFastPath

    # Routes match in order: the submission path first, it is what devices hit all day.
    for module in (entries, contracts, checkpoints, communities, stream, admin, alerts, health,
                   reports, tariffs, retention):  # fmt: skip
        app.include_router(module.router, responses=problems.PROBLEM_RESPONSES)
    from gateway import web

    web.mount(app)
    app.add_middleware(SubmitFastPath, fastapi=app)  # innermost: inside the limit and metrics
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
