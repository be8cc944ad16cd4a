"""A patient following the e-mailed link with a plain HTTP client, as the tests' user."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

import httpx

from devstack.stack import tls_context
from shared import crypto

LINK_RE = re.compile(r"https?://\S+/m/[0-9a-f-]{36}#[A-Za-z0-9_-]+")


def find_link(text: str) -> str:
    match = LINK_RE.search(text)
    assert match, f"no portal link in the e-mail:\n{text}"
    return match.group(0)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


@dataclass
class PatientClient:
    """Keeps cookies by hand: the portal's cookies are Secure (``__Host-``), which a cookie jar
    would not send back over the tests' plain-HTTP loopback."""

    link: str
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10, verify=tls_context()))
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        parts = urlsplit(self.link)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def page_url(self) -> str:
        return self.link.split("#", 1)[0]

    @property
    def message_id(self) -> uuid.UUID:
        return uuid.UUID(urlsplit(self.link).path.rsplit("/", 1)[1])

    @property
    def secret(self) -> str:
        """The link secret, as the page's JavaScript takes it from the fragment (without the check)."""
        return crypto.secret_of_fragment(self.link.split("#", 1)[1])

    def _keep(self, response: httpx.Response) -> httpx.Response:
        for header in response.headers.get_list("set-cookie"):
            cookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or morsel.value in ("", '""'):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    def _cookie_header(self) -> dict[str, str]:
        return {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    def get(self, path_or_url: str) -> httpx.Response:
        url = path_or_url if path_or_url.startswith("http") else self.base + path_or_url
        return self._keep(self.client.get(url, headers=self._cookie_header()))

    def post(self, path: str, data: dict) -> httpx.Response:
        return self._keep(self.client.post(self.base + path, data=data, headers=self._cookie_header()))

    def follow(self, posted: httpx.Response) -> httpx.Response:
        """Where the browser lands after a form's POST: every POST of the portal answers 303 (post/redirect/get)
        and the page that says what happened is a GET, which Back, Help and a reload ask again harmlessly."""
        assert posted.status_code == 303, (posted.status_code, posted.text[:300])
        history, page = [posted], self.get(posted.headers["location"])
        while page.status_code == 303 and len(history) < 3:  # a page that leads on (the code form before a code)
            history.append(page)
            page = self.get(page.headers["location"])
        page.history = history
        return page

    def open_link(self) -> httpx.Response:
        """What the browser requests for the link: the fragment stays in the browser."""
        return self.get(self.page_url)

    def request_code(self, phone: str | None, *, proof: bool = True) -> httpx.Response:
        """ "Send me a code", with the link's secret as the page's JavaScript sends it (``proof``)."""
        page = self.open_link()
        data = {"csrf": csrf_of(page.text)}
        if proof:
            data["k"] = self.secret
        if phone is not None:
            data["phone"] = phone
        return self.post(urlsplit(self.page_url).path + "/code", data)

    def enter_code(self, code: str, *, proof: bool = True) -> httpx.Response:
        page = self.get(urlsplit(self.page_url).path + "/code")
        data = {"csrf": csrf_of(page.text), "code": code}
        if proof:
            data["k"] = self.secret
        return self.post(urlsplit(self.page_url).path + "/verify", data)

    def download(self, kind: str = "pdf", secret: str | None = None) -> httpx.Response:
        page = self.get(urlsplit(self.page_url).path + "/document")
        assert page.status_code == 200, page.text
        return self.post(
            urlsplit(self.page_url).path + f"/download/{kind}",
            {"csrf": csrf_of(page.text), "k": self.secret if secret is None else secret},
        )
