"""Issue #4, point 4: the session a right code opens, CSRF on every POST, and the security headers."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.e2e.test_portal_helpers import letter, state_of
from tests.patient import PatientClient, csrf_of

pytestmark = pytest.mark.e2e


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Cookie name -> its whole Set-Cookie line."""
    return {line.split("=", 1)[0]: line for line in response.headers.get_list("set-cookie")}


def attributes(line: str) -> set[str]:
    return {part.strip().split("=", 1)[0].lower() for part in line.split(";")[1:]}


async def test_a_right_code_opens_a_fresh_session_in_a_host_only_httponly_secure_strict_cookie(chain):
    mail = await letter(chain)
    before = dict(mail.patient.cookies)
    mail.patient.request_code(mail.national)
    verified = mail.patient.enter_code(await mail.code())
    line = set_cookies(verified)["__Host-session"]
    assert {"httponly", "secure", "samesite", "path"} <= attributes(line)
    assert "samesite=strict" in line.lower() and "path=/" in line.lower() and "domain" not in line.lower()
    token = mail.patient.cookies["__Host-session"]
    assert len(token) >= 43 and token not in before.values()  # 256 random bits, new at authentication
    stored = await chain.db.fetchval(
        "select token_hash from access_portal.session where message_id = $1", mail.message_id
    )
    assert stored != token and token not in await chain.dump_all_tables()
    assert mail.patient.get(f"{mail.path}/document").status_code == 200

    # A second login gets another token; the session is tied to its message.
    await mail.travel(31)
    mail.patient.request_code(mail.national)
    mail.patient.enter_code(await mail.code(nth=2))
    assert mail.patient.cookies["__Host-session"] != token
    other = await letter(chain)
    thief = PatientClient(other.link, cookies={"__Host-session": mail.patient.cookies["__Host-session"]})
    assert thief.get(f"{other.path}/document").status_code == 401


async def test_a_session_ends_after_15_idle_minutes_and_after_one_hour_whatever_the_activity(chain):
    mail = await letter(chain)
    await mail.log_in()
    document = f"{mail.path}/document"
    for _ in range(5):  # active every 10 minutes: still in after 50 minutes
        await mail.travel(600)
        assert mail.patient.get(document).status_code == 200
    await mail.travel(600)
    ended = mail.patient.get(document)
    assert ended.status_code == 401 and state_of(ended.text) == "session_expired"  # 60 min absolute

    idle = await letter(chain)
    await idle.log_in()
    await idle.travel(14 * 60)
    assert idle.patient.get(f"{idle.path}/document").status_code == 200
    await idle.travel(15 * 60 + 1)
    assert state_of(idle.patient.get(f"{idle.path}/document").text) == "session_expired"


async def test_logout_ends_the_session_on_the_server(chain):
    mail = await letter(chain)
    await mail.log_in()
    token = mail.patient.cookies["__Host-session"]
    page = mail.patient.get(f"{mail.path}/document")
    out = mail.patient.post(f"{mail.path}/logout", {"csrf": csrf_of(page.text)})
    assert out.status_code == 303 and "__Host-session" not in mail.patient.cookies
    replay = PatientClient(mail.link, cookies={**mail.patient.cookies, "__Host-session": token})
    assert replay.get(f"{mail.path}/document").status_code == 401
    assert await chain.db.fetchval(
        "select ended_at is not null from access_portal.session where message_id = $1", mail.message_id
    )


async def test_every_post_needs_the_csrf_token_of_its_own_cookie(chain):
    mail = await letter(chain)
    stranger = await letter(chain)
    stranger_token = csrf_of(stranger.patient.open_link().text)
    mail.patient.open_link()

    for route, data in (("code", {"phone": mail.national}), ("verify", {"code": "123456"})):
        for csrf in (None, "", stranger_token, "x" * 40):
            refused = mail.patient.follow(
                mail.patient.post(f"{mail.path}/{route}", {**data, **({} if csrf is None else {"csrf": csrf})})
            )
            assert refused.status_code == 403 and state_of(refused.text) == "bad_request", (route, csrf)
    assert await mail.challenges() == []
    assert (await mail.message_row())["failed_checks"] == 0

    await mail.log_in()
    for route in ("download/pdf", "download/ics", "logout"):
        refused = mail.patient.follow(
            mail.patient.post(f"{mail.path}/{route}", {"csrf": stranger_token, "k": mail.patient.secret})
        )
        assert refused.status_code == 403 and state_of(refused.text) == "bad_request", route
    assert mail.patient.get(f"{mail.path}/document").status_code == 200  # the logout did not happen
    assert (
        await chain.db.fetchval("select count(*) from access_portal.release where message_id = $1", mail.message_id)
        == 0
    )
    assert ("download", "csrf-refused") in await mail.audit()


async def test_a_csrf_token_is_bound_to_its_message_and_to_the_session(chain):
    """Issue 7, item 7: one browser, two letters: a token minted on B is refused for A; a token
    minted before a login (or under another session) is refused once the session exists."""
    a, b = await letter(chain), await letter(chain)
    a.patient.open_link()
    minted_on_b = csrf_of(a.patient.get(b.path).text)  # the same browser (the same csrf cookie)
    refused = a.patient.follow(a.patient.post(f"{a.path}/code", {"csrf": minted_on_b, "phone": a.national}))
    assert refused.status_code == 403 and state_of(refused.text) == "bad_request"
    assert await a.challenges() == []
    assert ("code-request", "csrf-refused") in await a.audit()

    before_login = csrf_of(a.patient.open_link().text)
    await a.log_in()
    for route in ("download/pdf", "logout"):
        for token in (before_login, csrf_of(a.patient.get(b.path).text)):
            refused = a.patient.follow(a.patient.post(f"{a.path}/{route}", {"csrf": token, "k": a.patient.secret}))
            assert refused.status_code == 403 and state_of(refused.text) == "bad_request", route
    assert (
        await chain.db.fetchval("select count(*) from access_portal.release where message_id = $1", a.message_id) == 0
    )
    own = csrf_of(a.patient.get(f"{a.path}/document").text)
    assert a.patient.post(f"{a.path}/download/pdf", {"csrf": own, "k": a.patient.secret}).status_code == 200


CSP_REQUIRED = {
    "default-src": {"'none'"},
    "script-src": {"'self'"},
    "style-src": {"'self'"},
    "frame-ancestors": {"'none'"},
    "form-action": {"'self'"},
    "base-uri": {"'none'"},
}


def assert_hardened(response: httpx.Response, *, static: bool = False) -> None:
    h = response.headers
    csp = {d.split()[0]: set(d.split()[1:]) for d in h["content-security-policy"].split(";") if d.strip()}
    for directive, sources in CSP_REQUIRED.items():
        assert csp.get(directive) == sources, (response.url, directive, csp.get(directive))
    assert h["referrer-policy"] == "no-referrer"
    assert h["x-content-type-options"] == "nosniff"
    assert (
        h["strict-transport-security"].startswith("max-age=")
        and int(h["strict-transport-security"].split("=")[1].split(";")[0]) >= 31536000
    )
    if not static:
        assert h["cache-control"] == "no-store", response.url
    if "text/html" in h.get("content-type", ""):
        html = response.text
        assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", html)), "inline script"
        assert not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html, "inline handler or style"


async def test_every_page_and_document_carries_the_security_headers_and_no_store(chain):
    mail = await letter(chain)
    p = mail.patient
    responses = [
        p.open_link(),
        p.get(f"{mail.path}/code"),
        p.get("/m/not-a-uuid"),
        p.get("/nowhere"),
        p.get("/"),
        p.client.head(mail.patient.page_url),
        p.post(f"{mail.path}/verify", {"code": "1"}),  # no CSRF token: answered with a redirect
    ]
    responses.append(p.follow(responses[-1]))  # to the page that says the form has expired
    await mail.log_in()
    responses += [
        p.get(f"{mail.path}/document"),
        p.download("pdf"),
        p.download("ics"),
        p.client.get(f"{p.base}{mail.path}/logout"),
    ]
    assert [r.status_code for r in responses] == [200, 303, 404, 404, 200, 200, 303, 403, 200, 200, 200, 405]
    for response in responses:
        assert_hardened(response)
    assert_hardened(p.get("/static/portal.js"), static=True)
