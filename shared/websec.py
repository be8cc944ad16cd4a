"""Security headers of the server-rendered pages (patients' portal, secretariat console): one policy."""

from __future__ import annotations


def security_headers(*, form_action: str = "'self'", connect_src: str | None = None,
                     media_src: str | None = None) -> dict[str, str]:
    """OWASP ASVS V14.4 / 5.0 V3: no inline script, no framing, no referrer, HSTS.

    ``form_action``: where forms may post (the console's sign-in goes on to the identity provider);
    ``connect_src``: where page scripts may fetch (the console's session keep-alive);
    ``media_src``: where video and captions may load from (the portal's video guide)."""
    connect = f" connect-src {connect_src};" if connect_src else ""
    connect += f" media-src {media_src};" if media_src else ""
    return {
        "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
                                   f"{connect} form-action {form_action}; frame-ancestors 'none'; base-uri 'none'",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }
