"""HTTP transports: batches to POST /v1/entries, and Patio's POST /api/patio_save_energy."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from edge.errors import DeliveryError
from edge.transports import OutboxItem, Result, result_from, standing

log = logging.getLogger("patio.edge.http")

# Statuses that say "not now" or "not here" rather than "never": a wrong URL or a proxy
# in front of a restarting gateway must not dead-letter the whole outbox.
TRANSIENT_4XX = {404, 405, 408, 421, 425, 429}


def _problem(response: httpx.Response) -> str:
    """One line from an application/problem+json body (RFC 9457), or the status."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    detail = None
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title")
    text = detail if isinstance(detail, str) else response.reason_phrase
    return f"HTTP {response.status_code}: {text}"


def _is_conflict(response: httpx.Response) -> bool:
    """A 409 that reports the same seq recorded with other bytes (DESIGN.md format 3).

    The gateway answers a conflict with a "Conflict" problem naming the earlier entry's
    log tag; any other 409 is the duplicate answer (issue 4): already in the ledger.
    """
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(body, dict) and (body.get("title") == "Conflict" or "log_tag_id" in body)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


def _client(timeout_s: float) -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(timeout_s), headers={"user-agent": "patio-edge"})


class EntriesTransport:
    """energy_minute envelopes in batches to POST {gateway}/v1/entries."""

    contract = "energy_minute"
    synchronous = True

    def __init__(
        self, *, url: str, batch_size: int, timeout_s: float, client: httpx.Client | None = None
    ) -> None:
        self.endpoint = f"{url}/v1/entries"
        self.batch_size = batch_size
        self._client = client or _client(timeout_s)

    def exchange(self, items: Sequence[OutboxItem], now: float) -> list[Result]:
        """POST the items; 4xx refusals are split until the refused envelope is isolated."""
        return self._post(list(items))

    def _post(self, items: list[OutboxItem]) -> list[Result]:
        body = (
            b'{"contract":"energy_minute","envelopes":[' + b",".join(i.body for i in items) + b"]}"
        )
        try:
            response = self._client.post(
                self.endpoint, content=body, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"gateway unreachable: {exc}") from exc
        status = response.status_code
        if status == 200:
            return self._results(items, response)
        if status >= 500 or status in TRANSIENT_4XX:
            raise DeliveryError(_problem(response), retry_after=_retry_after(response))
        if 400 <= status < 500 and len(items) > 1:
            # The batch was refused as a whole: split it so only the refused envelope
            # (or, for 409/413, only the conflicting or oversized part) is set aside.
            half = len(items) // 2
            first = self._post(items[:half])
            try:
                return first + self._post(items[half:])
            except DeliveryError as exc:
                raise DeliveryError(str(exc), retry_after=exc.retry_after, results=first) from exc
        if status == 409 and not _is_conflict(response):
            return [Result(items[0].seq, "duplicate", None, _problem(response))]
        if status == 409:
            return [
                Result(items[0].seq, "rejected", None, _problem(response), **_standing(response))
            ]
        if 400 <= status < 500:
            return [Result(items[0].seq, "rejected", None, _problem(response))]
        raise DeliveryError(f"unexpected answer {_problem(response)}")

    def _results(self, items: list[OutboxItem], response: httpx.Response) -> list[Result]:
        try:
            answers: Any = response.json()["results"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise DeliveryError("gateway answered 200 without a results list") from exc
        if not isinstance(answers, list) or len(answers) != len(items):
            raise DeliveryError(
                f"gateway answered {len(answers) if isinstance(answers, list) else 'no'} "
                f"results for {len(items)} envelopes"
            )
        results = []
        for item, answer in zip(items, answers, strict=True):
            result = result_from(item.seq, answer) if isinstance(answer, dict) else None
            if result is None:
                raise DeliveryError(f"gateway answered a malformed result for seq {item.seq}")
            results.append(result)
        return results

    def resumed(self) -> bool:
        """HTTP has no connection to watch: retries follow the backoff."""
        return False

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


class LegacyTransport:
    """Patio request bodies, one per POST {gateway}/api/patio_save_energy."""

    contract = "patio_save_energy"
    synchronous = True

    def __init__(
        self, *, url: str, batch_size: int, timeout_s: float, client: httpx.Client | None = None
    ) -> None:
        self.endpoint = f"{url}/api/patio_save_energy"
        self.batch_size = batch_size
        self._client = client or _client(timeout_s)

    def exchange(self, items: Sequence[OutboxItem], now: float) -> list[Result]:
        """POST each item in turn; stop at the first transient failure."""
        results: list[Result] = []
        for item in items:
            try:
                results.append(self._post(item))
            except DeliveryError as exc:
                raise DeliveryError(str(exc), retry_after=exc.retry_after, results=results) from exc
        return results

    def _post(self, item: OutboxItem) -> Result:
        try:
            response = self._client.post(
                self.endpoint, content=item.body, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"gateway unreachable: {exc}") from exc
        status = response.status_code
        if status == 200:
            try:
                answer = response.json()
                tag = answer["log_tag"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
                raise DeliveryError("gateway answered 200 without a log_tag") from exc
            if not isinstance(tag, str):
                raise DeliveryError("gateway answered a log_tag that is not a string")
            return Result(item.seq, "accepted", tag)
        if status >= 500 or status in TRANSIENT_4XX:
            raise DeliveryError(_problem(response), retry_after=_retry_after(response))
        if status == 409 and not _is_conflict(response):
            return Result(item.seq, "duplicate", None, _problem(response))
        if status == 409:
            return Result(item.seq, "rejected", None, _problem(response), **_standing(response))
        if 400 <= status < 500:
            return Result(item.seq, "rejected", None, _problem(response))
        raise DeliveryError(f"unexpected answer {_problem(response)}")

    def resumed(self) -> bool:
        """HTTP has no connection to watch: retries follow the backoff."""
        return False

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


def _standing(response: httpx.Response) -> dict[str, Any]:
    """The conflict problem's rule, last_seq and last_start (see `standing`)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    return standing(body if isinstance(body, dict) else {})
