"""How a big batch reaches the writer: in order, in chunks, and failing as a whole."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from gateway.submissions import PRECHECK_CHUNK, Admit, Submissions, Verdict
from gateway.writer import WriterUnavailable
from ledger.keys import NamedKey
from tests.gateway.test_decide import Keys, envelope


class Writer:
    """Answers each request with one accepted verdict per envelope; fails request `fail`."""

    def __init__(self, fail: int | None = None) -> None:
        self.fail = fail
        self.requests: list[Admit] = []

    async def request(self, admit: Admit) -> list[Verdict]:
        self.requests.append(admit)
        if len(self.requests) - 1 == self.fail:
            raise WriterUnavailable("the writer restarted before this commit was confirmed")
        await asyncio.sleep(0)  # answers arrive while later chunks are still being checked
        return [
            Verdict(result={"status": "accepted", "seq": c.seq}, contract="c")
            for c in admit.verified
            if c is not None
        ]


def submit(writer: Writer, envelopes: list[Any]) -> list[dict[str, Any]]:
    key = NamedKey.generate("meter-1")
    signed = [envelope(key, seq) for seq in range(1, len(envelopes) + 1)]
    submissions = Submissions(writer=writer, directory=Keys(key))  # type: ignore[arg-type]
    return asyncio.run(submissions.submit_async("energy_minute", signed))


def test_a_big_batch_goes_in_order_in_prechecked_chunks() -> None:
    writer = Writer()
    results = submit(writer, [None] * (2 * PRECHECK_CHUNK + 1))
    assert [len(r.envelopes) for r in writer.requests] == [PRECHECK_CHUNK, PRECHECK_CHUNK, 1]
    assert [r["seq"] for r in results] == list(range(1, 2 * PRECHECK_CHUNK + 2))
    assert len({r.now for r in writer.requests}) == 1  # one request, one received_at
    assert all(c is not None for r in writer.requests for c in r.verified)


def test_a_failed_chunk_fails_the_request() -> None:
    writer = Writer(fail=1)
    with pytest.raises(WriterUnavailable):
        submit(writer, [None] * (3 * PRECHECK_CHUNK))
    assert len(writer.requests) == 3  # the chunks after it were still sent, and answered


def test_verdicts_cross_to_the_http_process_unchanged() -> None:
    tag = "c274b5" + "ab" * 32
    accepted = Verdict(
        {"status": "accepted", "log_tag_id": tag, "error": None, "code": 201},
        "energy_minute@1",
        "accepted",
    )
    others = [
        accepted._replace(response={"status": "accepted", "log_tag_id": tag}),
        accepted._replace(
            result={**accepted.result, "status": "duplicate", "code": 200}, recorded="duplicate"
        ),
        Verdict(
            {
                "status": "rejected",
                "log_tag_id": tag,
                "error": "conflict: x",
                "code": 409,
                "rule": "seq",
                "last_seq": 3,
                "last_start": None,
            },
            "energy_minute@1",
            "conflict",
            "Conflict",
        ),
        accepted._replace(result={**accepted.result, "extra": 1}),
    ]
    for verdict in [accepted, *others]:
        again = pickle.loads(pickle.dumps(verdict, protocol=pickle.HIGHEST_PROTOCOL))
        assert type(again) is Verdict and again == verdict
