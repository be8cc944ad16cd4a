"""HTTP fuzz of the running portal with hypothesis: random ids, random form fields, huge inputs,
unicode, missing or foreign CSRF tokens, stray cookies. The portal must answer every request with a
page of its own (never a 5xx) and keep its security headers on it."""

from __future__ import annotations

import string
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.e2e.test_portal_helpers import letter
from tests.patient import csrf_of

pytestmark = pytest.mark.e2e

ROUTES = {  # route -> the methods it serves
    "": ["GET", "HEAD"],
    "/code": ["GET", "HEAD", "POST"],
    "/code/status": ["GET"],
    "/verify": ["POST"],
    "/document": ["GET", "HEAD"],
    "/appointment": ["POST"],
    "/signed-out": ["GET", "HEAD"],
    "/download/pdf": ["POST"],
    "/download/ics": ["POST"],
    "/download/{junk}": ["POST"],
    "/logout": ["POST"],
    "/{junk}": ["GET", "POST"],
}
COOKIE_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "-_.~!*+/=%", max_size=80)
HUGE = st.integers(min_value=1, max_value=200_000).map(lambda n: "9" * n)
UNICODE = st.text(max_size=300)
FIELD_VALUE = st.one_of(
    UNICODE,
    HUGE,
    st.from_regex(r"\A0?7[5-9] ?\d{3} ?\d{2} ?\d{2}\Z"),
    st.from_regex(r"\A\d{6}\Z"),
    st.sampled_from(["", " ", "#123456", "+41 79 123 45 67"]),
)


def fuzz_request(known: dict):
    """A strategy of (method, path, form, cookies, raw body or None)."""
    ids = st.one_of(
        st.sampled_from(known["ids"]),
        st.sampled_from(known["ids"]),
        st.uuids().map(str),
        st.text(max_size=100),
        st.integers(1, 8000).map(lambda n: "f" * n),
    )
    fields = st.dictionaries(
        st.sampled_from(["csrf", "phone", "code", "k", "x", "csrf[]", ""]), FIELD_VALUE, max_size=4
    )
    return st.fixed_dictionaries(
        {
            "route": st.sampled_from(sorted(ROUTES)),
            "method": st.sampled_from(["served"] * 8 + ["GET", "HEAD", "POST", "PUT", "DELETE"]),
            "id": ids,
            "junk": st.text(max_size=200),
            "fields": fields,
            "real_csrf": st.booleans(),
            "real_secret": st.booleans(),
            "cookies": st.sampled_from(["none", "patient", "garbage"]),
            "garbage": st.dictionaries(
                st.sampled_from(["__Host-session", "__Host-csrf", "session", "x"]), COOKIE_TEXT, max_size=3
            ),
            "raw": st.one_of(st.none(), st.binary(max_size=2000)),
            "content_type": st.sampled_from(
                [
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                    "application/json",
                    "text/plain",
                ]
            ),
        }
    )


def explicit(message_id: str, route: str, *, method: str, real_csrf: bool) -> dict:
    """One request written out, in the shape the strategy draws."""
    return {
        "route": route,
        "method": method,
        "id": message_id,
        "junk": "",
        "fields": {},
        "real_csrf": real_csrf,
        "real_secret": False,
        "cookies": "patient",
        "garbage": {},
        "raw": None,
        "content_type": "application/x-www-form-urlencoded",
    }


async def test_random_requests_never_get_a_server_error(chain):
    mail = await letter(chain)
    await mail.log_in()
    first_use = await letter(chain, mobile=None)
    known = {"ids": [str(mail.message_id), str(first_use.message_id)]}
    patient_cookies = dict(mail.patient.cookies)
    real_csrf = csrf_of(mail.patient.get(mail.path).text)
    seen: dict[int, int] = {}

    client = httpx.Client(base_url=mail.patient.base, timeout=30, follow_redirects=True)

    @settings(
        max_examples=300, deadline=None, database=None, derandomize=False, suppress_health_check=list(HealthCheck)
    )
    @given(r=fuzz_request(known))
    # Random requests soon lock or close the two letters (wrong codes, a logout); these run first, while
    # both are open, so the run always reaches a refused foreign form (403) and a served page (200).
    @example(r=explicit(known["ids"][0], "/verify", method="POST", real_csrf=False))
    @example(r=explicit(known["ids"][0], "/code", method="POST", real_csrf=True))
    @example(r=explicit(known["ids"][1], "", method="GET", real_csrf=False))
    def probe(r: dict) -> None:
        if r["method"] == "served":  # mostly what the route serves, so the fuzz gets past routing
            r["method"] = ROUTES[r["route"]][len(r["junk"]) % len(ROUTES[r["route"]])]
        route = r["route"].format(junk=quote(r["junk"], safe=""))
        path = f"/m/{quote(r['id'], safe='')}{route}" if r["route"] != "/{junk}" else route
        form = dict(r["fields"])
        if r["real_csrf"]:
            form["csrf"] = real_csrf
        if r["real_secret"]:
            form["k"] = mail.patient.secret
        cookies = {"none": {}, "patient": patient_cookies, "garbage": r["garbage"]}[r["cookies"]]
        headers = {"cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}
        if r["raw"] is not None and r["method"] == "POST":
            response = client.request(
                "POST", path, content=r["raw"], headers={**headers, "content-type": r["content_type"]}
            )
        else:
            response = client.request(r["method"], path, data=form if r["method"] == "POST" else None, headers=headers)
        # A refused form redirects to the page that says so (post/redirect/get): the page is what counts.
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (r, response.status_code, response.text[:500])
        for hop in (*response.history, response):
            assert hop.headers.get("content-security-policy", "").startswith("default-src 'none'")
            assert hop.headers.get("cache-control") == "no-store"

    try:
        probe()
    finally:
        client.close()
    # The fuzz reached past routing and CSRF, not only the front door...
    assert {200, 403, 404} <= seen.keys(), seen
    # ... and the portal still serves the patient's link as before.
    assert mail.patient.open_link().status_code == 200
