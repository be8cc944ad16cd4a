"""The retention rules refuse what would make their SQL wrong: a name that is not a plain identifier, a period
under a day; and every service's rules name only tables and periods the settings give."""

from __future__ import annotations

import pytest

from shared import retention


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(table="message; drop table message", age="expires_at", days=30),
        dict(table="message", age="expires_at", days=30, key="id --"),
        dict(table="message", age="expires_at", days=30, children=(("challenge", "message_id or true"),)),
        dict(table="message", age="expires_at", days=0),
    ],
)
def test_a_rule_refuses_names_that_are_not_identifiers_and_periods_under_a_day(kwargs):
    with pytest.raises(ValueError):
        retention.Rule(**kwargs)


def test_a_batch_deletes_the_rows_and_their_children_in_one_statement_skipping_locked_rows():
    rule = retention.Rule("convocation", "expires_at", 365, children=(("status_history", "convocation_id"),))
    sql = rule.statement()
    assert rule.tables == ("convocation", "status_history")
    assert sql.startswith("with doomed as (select id from convocation where expires_at < now() - make_interval(")
    assert "for update skip locked" in sql and "delete from status_history where convocation_id in" in sql
    assert retention.AuditRule("portal_audit", "access_audit", 365).tables == ("portal_audit.access_audit",)
