"""The bench's bare baseline chain delivers every letter exactly once, so its figures compare like with like."""

from __future__ import annotations

import asyncio
import time
import uuid

from devstack.baseline import BareChain, SmtpSink
from devstack.bench import publish_all
from devstack.sample import convocation_event, sample_pdf
from tests.conftest import ADMIN_DSN, AMQP_URL
from tests.waiting import until


def test_bare_chain_delivers_each_letter_once_to_the_sink(test_database):
    sink = SmtpSink().start()
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{test_database}"
    chain = BareChain(AMQP_URL, dsn, f"bench-bare-{uuid.uuid4().hex[:6]}", sink.port).start()
    try:
        pdf = sample_pdf("x" * 400)
        events = [convocation_event(email=f"bare-{i}@example.ch", pdf=pdf) for i in range(20)]
        events.append(events[3])  # a redelivered event: the inbox must keep it to one e-mail
        asyncio.run(publish_all(chain.exchange, events, None, AMQP_URL))
        until(lambda: len(sink.received) >= 20, every=0.2, what="20 e-mails at the sink")
        time.sleep(1.5)  # time for a duplicate to arrive, if the chain sent one
        recipients = sorted(r for r, _ in sink.received)
        assert recipients == sorted(f"bare-{i}@example.ch" for i in range(20))
    finally:
        chain.stop()
        sink.stop()
