"""A member of staff at the secretariat console over plain HTTP, as a browser would go: sign-in through
the OpenID provider's authorization endpoint (authorization code with PKCE, the console's own code
path), then the console's pages and forms with its session cookie and CSRF token."""

from __future__ import annotations

import re
import ssl
from urllib.parse import urljoin, urlsplit

import httpx

from devstack.stack import tls_context

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


class StaffClient:
    """Cookies are kept by hand: the console's are ``Secure``, which httpx would not send over
    http://127.0.0.1 (a browser treats the loopback address as secure)."""

    def __init__(self, base_url: str, verify: ssl.SSLContext | bool = True) -> None:
        self.base = base_url.rstrip("/")
        self.cookies: dict[str, dict[str, str]] = {}  # host: {name: value}
        self.http = httpx.Client(timeout=10, verify=tls_context() if verify is True else verify, follow_redirects=False)

    def _cookie_header(self, url: str) -> dict[str, str]:
        jar = self.cookies.get(urlsplit(url).netloc, {})
        return {"cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}

    def request(self, method: str, url: str, **kw) -> httpx.Response:
        url = urljoin(self.base + "/", url)
        response = self.http.request(method, url, headers=self._cookie_header(url), **kw)
        jar = self.cookies.setdefault(urlsplit(url).netloc, {})
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value in ("", '""') or "max-age=0" in header.lower():
                jar.pop(name, None)
            else:
                jar[name] = value
        return response

    def follow(self, response: httpx.Response, limit: int = 5) -> httpx.Response:
        for _ in range(limit):
            if response.status_code not in (302, 303, 307):
                return response
            response = self.request("GET", urljoin(str(response.url), response.headers["location"]))
        raise AssertionError("too many redirects")

    def sign_in(self, username: str) -> httpx.Response:
        """From the console's sign-in link to its search page, choosing ``username`` at the provider."""
        to_provider = self.request("GET", "/auth/login")
        assert to_provider.status_code == 303, to_provider.text[:500]
        chooser = self.request("GET", to_provider.headers["location"])
        assert chooser.status_code == 200, chooser.text[:500]
        form = dict(HIDDEN.findall(chooser.text))
        assert "code_challenge" in form and form["code_challenge"], "no PKCE challenge in the authorization request"
        back = self.request("POST", urljoin(str(chooser.url), "/authorize"), data={**form, "username": username})
        assert back.status_code == 303, back.text[:500]
        landed = self.follow(self.request("GET", back.headers["location"]))
        assert landed.status_code == 200 and str(landed.url).endswith("/search"), (
            landed.status_code,
            landed.text[:500],
        )
        return landed

    def csrf(self, page: httpx.Response) -> str:
        match = re.search(r'data-csrf="([^"]+)"', page.text)
        assert match, "no CSRF token on the page"
        return match.group(1)

    def close(self) -> None:
        self.http.close()
