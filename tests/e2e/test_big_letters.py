"""Issue #7 item 4: the documented maximum letter fits the issuer. The reviewer measured one 10 MB PDF
taking it from 122 to 259 MiB and four together to 526 MiB, over its 256 Mi pod limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devstack.sample import sample_pdf
from shared.contracts import MAX_PDF_BYTES

pytestmark = pytest.mark.e2e
POD_LIMIT_MB = 320  # deploy/k8s/base/issuer/deployment.yaml


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_four_letters_of_the_maximum_size_at_once_stay_within_the_issuers_limit(chain):
    # The issuer serves the whole session: measure the peak of these four letters, not whatever an
    # earlier test left as the process's lifetime high-water mark ("5" resets VmHWM to the current RSS).
    Path(f"/proc/{chain.stack.processes['issuer'].pid}/clear_refs").write_text("5")
    pdf = sample_pdf("x" * (MAX_PDF_BYTES - 1024))
    events = [chain.event(pdf=pdf) for _ in range(4)]
    del pdf
    await asyncio.gather(*(chain.publish(event) for event in events))
    for event in events:
        await chain.email_to(event["data"]["patient"]["email"], timeout=90)
    peak = peak_rss_mb(chain.stack.processes["issuer"].pid)
    assert peak < POD_LIMIT_MB * 0.95, f"the issuer peaked at {peak:.0f} MB"


async def test_a_letter_over_the_limit_is_dead_lettered_on_its_size_before_it_is_parsed(chain):
    """Issue 18, item 9: a 40 MB letter was parsed and validated whole before being refused, and took the
    issuer to 329 MiB (its limit is 320 Mi). Refused on the raw body's size, it costs the body alone."""
    import base64
    import json
    import os
    import uuid

    issuer = chain.stack.processes["issuer"].pid
    Path(f"/proc/{issuer}/clear_refs").write_text("5")
    event = chain.event()
    event["data"]["document_pdf_base64"] = base64.b64encode(b"%PDF-1.7\n" + os.urandom(30 * 1024 * 1024)).decode()
    body = json.dumps(event).encode()
    del event["data"]["document_pdf_base64"]
    assert len(body) > 40 * 10**6
    event_id = str(uuid.uuid4())
    await chain.publish(body, message_id=event_id, routing_key="convocation.created.v1")
    del body
    letters = await chain.dead_letters(f"{chain.exchange}.issuer.convocation.created.v1", {event_id})
    headers = letters[event_id].headers
    assert headers["x-rejected-reason"] == "too-large", headers.get("x-rejected-detail")
    assert "more than the" in headers["x-rejected-detail"]
    assert await chain.status(event["data"]["convocation_id"]) is None  # nothing of it was recorded
    peak = peak_rss_mb(issuer)
    assert peak < POD_LIMIT_MB * 0.95, f"the issuer peaked at {peak:.0f} MB refusing it"  # parsed: 329 MiB
