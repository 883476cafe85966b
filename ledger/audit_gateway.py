"""The gateway's HTTP API as an audit source (`patio audit --gateway URL`)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from ledger.audit import PAGE, AnchorClaim, SourceCheckpoint, SourceEntry, SourceError
from ledger.bundle import leaf_hash_of_tag
from ledger.encoding import hexdecode
from ledger.errors import FormatError

EXPORT_PAGE = 5000  # the most GET /v1/export returns at once


class GatewaySource:
    """Reads checkpoints, proofs and the bulk export from a gateway."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        client: httpx.Client | None = None,
        timeout: float = 60.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(base_url=base_url, timeout=timeout)
        self.headers = headers
        self.description = f"gateway {base_url}"

    def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response | None:
        """GET; None on 404, SourceError on any other failure."""
        try:
            response = self.client.get(path, params=params, headers=self.headers)
        except httpx.HTTPError as exc:
            raise SourceError(f"cannot reach the gateway ({path}): {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            detail = response.text[:200].strip()
            raise SourceError(f"gateway answered {response.status_code} to {path}: {detail}")
        return response

    def _json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        response = self._get(path, params)
        if response is None:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise SourceError(f"gateway sent invalid JSON for {path}") from exc

    def checkpoints(self, *, after: int) -> Iterator[SourceCheckpoint]:
        """GET /v1/checkpoints, page by page."""
        while True:
            body = self._json("/v1/checkpoints", {"after": after, "limit": PAGE})
            if not isinstance(body, dict) or not isinstance(body.get("checkpoints"), list):
                raise SourceError("GET /v1/checkpoints did not return {checkpoints: [...]}")
            page = body["checkpoints"]
            for item in page:
                yield _checkpoint(item)
            if len(page) < PAGE:
                return
            after = int(page[-1]["tree_size"])

    def latest_checkpoint(self) -> str | None:
        """GET /v1/checkpoint (the note as text)."""
        response = self._get("/v1/checkpoint")
        return response.text if response is not None else None

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """GET /v1/proofs/consistency."""
        body = self._json("/v1/proofs/consistency", {"first": first, "second": second})
        return _hashes(body, f"consistency proof {first} -> {second}")

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes] | None:
        """GET /v1/proofs/inclusion, or None where the gateway does not serve it."""
        body = self._json("/v1/proofs/inclusion", {"index": index, "tree_size": tree_size})
        return None if body is None else _hashes(body, f"inclusion proof of {index}")

    def entries(self, *, start: int, end: int) -> Iterator[Sequence[SourceEntry]]:
        """GET /v1/export pages, fetched one page ahead on a thread while the last is checked."""
        pages: queue.Queue[Sequence[SourceEntry] | BaseException | None] = queue.Queue(4)
        stop = threading.Event()

        def fetch() -> None:
            position: int | None = start
            try:
                while position is not None and position < end and not stop.is_set():
                    limit = min(EXPORT_PAGE, end - position)
                    body = self._json("/v1/export", {"start": position, "limit": limit})
                    if not isinstance(body, dict) or not isinstance(body.get("entries"), list):
                        raise SourceError("GET /v1/export did not return {entries: [...]}")
                    page = [_entry(item) for item in body["entries"]]
                    page = [e for e in page if e.index < end]
                    if not page:
                        break
                    pages.put(page)
                    nxt = body.get("next")
                    position = int(nxt) if isinstance(nxt, int) else None
            except BaseException as exc:  # handed to the consumer, raised there
                pages.put(exc)
            pages.put(None)

        worker = threading.Thread(target=fetch, name="patio-audit-export", daemon=True)
        worker.start()
        try:
            while (item := pages.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():
                with contextlib.suppress(queue.Empty):
                    pages.get(timeout=0.1)  # unblock a fetcher waiting on a full queue
            worker.join()


def _hashes(body: Any, what: str) -> list[bytes]:
    if not isinstance(body, dict) or not isinstance(body.get("hashes"), list):
        raise SourceError(f"gateway sent no {what}")
    return [hexdecode(h, what=what, length=32) for h in body["hashes"]]


def _checkpoint(item: Any) -> SourceCheckpoint:
    if not isinstance(item, dict) or not isinstance(item.get("note"), str):
        raise SourceError("a listed checkpoint has no note")
    try:
        anchors = [
            AnchorClaim(
                chain_id=int(a["chain_id"]),
                tx_hash=str(a["tx_hash"]),
                block_number=None if a.get("block_number") is None else int(a["block_number"]),
                contract=a.get("contract"),
                tree_size=int(a["tree_size"]),
                root=hexdecode(a["root"], what="anchor root", length=32),
                status=str(a.get("status", "confirmed")),
            )
            for a in item.get("anchors", [])
        ]
    except (KeyError, TypeError, ValueError, FormatError) as exc:
        raise SourceError(f"a listed anchor is malformed: {exc}") from exc
    return SourceCheckpoint(note=item["note"], anchors=anchors)


def _entry(item: Any) -> SourceEntry:
    if not isinstance(item, dict) or not isinstance(item.get("index"), int):
        raise SourceError("an exported entry has no index")
    key = item.get("device_key")
    tag = item.get("log_tag_id")
    try:
        leaf = leaf_hash_of_tag(tag) if tag is not None else None
    except FormatError:
        leaf = None  # a malformed tag: the replay against the checkpoints still decides
    entry = item.get("entry")
    if entry is None and "redacted" in item:
        # A dropped payload: the export carries the leaf hash (in the tag) and why.
        return SourceEntry(index=item["index"], leaf_hash=leaf, redacted=True)
    return SourceEntry(
        index=item["index"],
        obj=entry if isinstance(entry, dict) else {},
        device_keys=(key,) if isinstance(key, str) else (),
        leaf_hash=leaf,
    )
