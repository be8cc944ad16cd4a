"""Two replicas of each service on the same database and queues: each letter is e-mailed exactly once.

Correctness only (no timing): the replicas compete for the same quorum queues and share the outboxes
(``FOR UPDATE SKIP LOCKED``); the inbox keeps a redelivered event from taking effect twice."""

from __future__ import annotations

import asyncio

import pytest

from devstack.sample import publish
from devstack.stack import Stack
from tests.conftest import AMQP_URL
from tests.e2e.conftest import random_email

pytestmark = pytest.mark.e2e
EXCHANGE = "test-replicas"  # its own queues, apart from the session's stack
SERVICES = ["issuer", "mailer"]
# The portal too: the issuer publishes each letter to it (message.sealed), mandatory, and its link to the mailer.
STARTED = [*SERVICES, "access-portal"]
LETTERS = 50


def replica(test_database, devinbox, log_dir) -> Stack:
    return Stack(
        database=test_database,
        exchange=EXCHANGE,
        smtp_port=devinbox.smtp_port,
        sms_provider_url=devinbox.twilio_base_url,
        sms_account_sid=devinbox.account_sid,
        sms_auth_token=devinbox.auth_token,
        log_dir=log_dir,
        amqp_url=AMQP_URL,
        extra_env={"*": {"MAILER_RETRY_DELAYS": "1,2,3", "LOG_LEVEL": "INFO"}},
    )


async def test_two_replicas_of_each_service_send_each_letter_once(chain, test_database, devinbox, tmp_path):
    replicas = [replica(test_database, devinbox, tmp_path / f"replica-{i}") for i in (1, 2)]
    try:
        for stack in replicas:
            stack.start(STARTED)
        events = [chain.event(email=random_email()) for _ in range(LETTERS)]
        await asyncio.gather(*(publish(AMQP_URL, EXCHANGE, event) for event in events))
        for event in events:
            await chain.email_to(event["data"]["patient"]["email"])
        await asyncio.sleep(2)  # a second copy would come right after the first
    finally:
        for stack in replicas:
            stack.stop()
    for name in SERVICES:  # both replicas of each service took a share of the letters
        assert all(s.log_file(name).read_text().count('"event_id"') for s in replicas), name
    for event in events:
        assert len(chain.emails_to(event["data"]["patient"]["email"])) == 1, "a letter went out twice"
