"""Notification channels: e-mail over SMTP, webhooks with an HMAC-SHA256-signed body, ntfy.

Each `send` either delivers or raises DeliveryError, saying whether the message certainly
did not go out (the outbox, gateway/alerts/evaluator.py, retries it with backoff) or may have
(it is never sent again: delivery is at most once, docs/alerts.md). Every message carries
its delivery's id, the same on every attempt.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import smtplib
from dataclasses import dataclass
from email.header import Header
from email.message import EmailMessage
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import httpx
from pydantic import AnyHttpUrl, Field, StringConstraints

from gateway.alerts.rules import Strict
from ledger.encoding import canonical_json

# The webhook's signature header: "sha256=" and the hex HMAC-SHA256 of the raw body under the
# channel's secret (the GitHub webhook convention, so receivers have libraries for it).
SIGNATURE_HEADER = "X-Patio-Signature"
# The delivery's id on webhooks (also `delivery_id` in the signed body) and ntfy messages.
IDEMPOTENCY_HEADER = "Idempotency-Key"
TIMEOUT = 10.0  # seconds per attempt
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)]


class DeliveryError(Exception):
    """A notification that did not go out this time: the channel is down or refused it, or,
    when `uncertain`, the attempt broke after the channel may have accepted it."""

    def __init__(self, message: str, *, uncertain: bool = False) -> None:
        super().__init__(message)
        self.uncertain = uncertain


# Failures before anything reached the receiver: the message surely did not go out.
NOT_SENT_HTTP = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)
# SMTP answers refusing the message during the transaction (RFC 5321 section 4.2.5: the
# server takes responsibility only with its 250 reply to the end of DATA).
REFUSED_SMTP = (
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPSenderRefused,
    smtplib.SMTPDataError,
    smtplib.SMTPNotSupportedError,
)


class EmailChannel(Strict):
    """Mail to each address, through the gateway's SMTP server (PATIO_SMTP_URL)."""

    type: Literal["email"]
    to: list[Email] = Field(min_length=1, max_length=20)


class WebhookChannel(Strict):
    """A JSON POST whose body is signed with `secret` (header X-Patio-Signature)."""

    type: Literal["webhook"]
    url: AnyHttpUrl
    secret: Annotated[str, StringConstraints(min_length=16, max_length=200)]


class NtfyChannel(Strict):
    """A message POSTed to an ntfy topic URL (https://ntfy.sh/<topic> or a server of your own)."""

    type: Literal["ntfy"]
    url: AnyHttpUrl
    token: str | None = None  # an ntfy access token, when the topic needs one


Channel = Annotated[EmailChannel | WebhookChannel | NtfyChannel, Field(discriminator="type")]


def recipients(channel: EmailChannel | WebhookChannel | NtfyChannel) -> list[str]:
    """Who a channel reaches, one delivery each: the addresses, or the URL."""
    return list(channel.to) if isinstance(channel, EmailChannel) else [str(channel.url)]


def title(body: dict[str, Any]) -> str:
    """A one-line summary of a grouped notification."""
    alerts = body["alerts"]
    first = alerts[0]
    more = f" (+{len(alerts) - 1} more)" if len(alerts) > 1 else ""
    late = " [late]" if first["late"] else ""
    return (
        f"[{body['community_id']}] {first['state']}: {first['rule']} {first['subject']}{late}{more}"
    )


def text(body: dict[str, Any]) -> str:
    """The plain-text message: one line per alert."""
    lines = []
    for alert in body["alerts"]:
        late = f" (late: reported at {body['created_at']})" if alert["late"] else ""
        lines.append(
            f"{alert['minute']} {alert['state']} {alert['rule']} "
            f"{alert['subject']}: {alert['detail']}{late}"
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, kw_only=True)
class Sender:
    """Sends one delivery; the SMTP server is the gateway's (smtp://[user:password@]host:port,
    smtp+starttls://...)."""

    smtp_url: str | None
    smtp_from: str = "patio-alerts@localhost"

    def send(
        self, target: dict[str, Any], recipient: str, body: dict[str, Any], *, delivery_id: str
    ) -> None:
        """Deliver `body` to `recipient` on the channel `target`, or raise DeliveryError."""
        try:
            if target["type"] == "email":
                self._email(recipient, body, delivery_id)
            elif target["type"] == "webhook":
                self._webhook(target, body, delivery_id)
            else:
                self._ntfy(target, body, delivery_id)
        except NOT_SENT_HTTP as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:  # the request may have reached the receiver
            raise DeliveryError(f"{type(exc).__name__}: {exc}", uncertain=True) from exc

    def _email(self, recipient: str, body: dict[str, Any], delivery_id: str) -> None:
        if not self.smtp_url:
            raise DeliveryError("no SMTP server configured (PATIO_SMTP_URL)")
        url = urlparse(self.smtp_url)
        message = EmailMessage()
        message["From"] = self.smtp_from
        message["To"] = recipient
        message["Subject"] = title(body)
        domain = self.smtp_from.rpartition("@")[2] or "localhost"
        message["Message-ID"] = f"<patio-alert.{delivery_id}@{domain}>"
        message.set_content(text(body))
        try:
            smtp = smtplib.SMTP(url.hostname or "127.0.0.1", url.port or 25, timeout=TIMEOUT)
            if url.scheme == "smtp+starttls":
                smtp.starttls()
            if url.username:
                smtp.login(url.username, url.password or "")
        except (OSError, smtplib.SMTPException) as exc:  # nothing sent yet
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        try:
            smtp.send_message(message)
        except REFUSED_SMTP as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        except (OSError, smtplib.SMTPException) as exc:  # broke mid-transaction
            raise DeliveryError(f"{type(exc).__name__}: {exc}", uncertain=True) from exc
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.quit()  # the message was accepted or not before QUIT
            smtp.close()

    def _webhook(self, target: dict[str, Any], body: dict[str, Any], delivery_id: str) -> None:
        data = canonical_json(dict(body, delivery_id=delivery_id))
        digest = hmac.new(target["secret"].encode(), data, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: f"sha256={digest}",
            IDEMPOTENCY_HEADER: delivery_id,
        }
        reply = httpx.post(str(target["url"]), content=data, headers=headers, timeout=TIMEOUT)
        if reply.status_code >= 300:
            raise DeliveryError(f"the webhook answered {reply.status_code}")

    def _ntfy(self, target: dict[str, Any], body: dict[str, Any], delivery_id: str) -> None:
        urgent = any(alert["urgent"] and alert["state"] == "firing" for alert in body["alerts"])
        summary = title(body)
        headers = {
            # Header values are Latin-1 on the wire; ntfy decodes RFC 2047 encoded words.
            "Title": summary if summary.isascii() else Header(summary, "utf-8").encode(),
            "Priority": "urgent" if urgent else "default",
            "Tags": "rotating_light" if urgent else "bell",
            IDEMPOTENCY_HEADER: delivery_id,
        }
        if target.get("token"):
            headers["Authorization"] = f"Bearer {target['token']}"
        reply = httpx.post(
            str(target["url"]), content=text(body).encode(), headers=headers, timeout=TIMEOUT
        )
        if reply.status_code >= 300:
            raise DeliveryError(f"ntfy answered {reply.status_code}")
