"""CSRF defence for a basic-auth API: refuse what another site's page could send unasked.

A browser that has logged in with basic auth attaches the credentials to every request to
this origin, including a form another site submits. Such a page can send, without a CORS
preflight, only a POST with a form-like body (urlencoded, multipart, text/plain): PUT,
DELETE, a JSON body or a custom header such as X-Requested-With need the preflight, which
only a CORS set-up a forker chose (README: CORS) approves. So exactly those preflight-free
requests are refused when they come from another site, told by the browser's Sec-Fetch-Site
header or, from a browser without it, by an Origin that is not this host (the rule Go's
net/http CrossOriginProtection uses). curl, scripts and load testers send neither header and
pass; the console's own fetches are same-origin and pass.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import Scope

from rest_api.request_headers import first_header

# The request bodies a cross-site <form> (or a fetch without a preflight) can send.
FORM_CONTENT_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)
CROSS_SITE_FETCHES = frozenset({b"cross-site", b"same-site"})
CROSS_SITE_MESSAGE = (
    "a state-changing request from another site's page is refused (cross-site request "
    "forgery defence); send it from this server's own pages, or from a client that is not "
    "a browser"
)


def is_cross_site(scope: Scope) -> bool:
    """Whether a browser says this request was made by a page of another origin."""
    fetch_site = first_header(scope, b"sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.lower() in CROSS_SITE_FETCHES
    origin = first_header(scope, b"origin")
    if origin is None:
        return False  # not a browser, or a same-origin GET of an old one
    host = first_header(scope, b"host")
    if host is None:
        return True
    # "null" (a sandboxed frame, a data: page) has no host and so never matches.
    origin_parts = urlsplit(origin.decode("latin-1"))
    host_parts = urlsplit(f"//{host.decode('latin-1')}")
    try:
        host_port = host_parts.port
    except ValueError:  # a Host no browser sends ("a:b"): nothing to match
        return True
    if host_port is None:
        # A proxy passing nginx's $host drops the port: then the host names must match.
        return origin_parts.hostname != host_parts.hostname or origin_parts.hostname is None
    return origin_parts.netloc.lower() != host_parts.netloc.lower()


def could_skip_preflight(scope: Scope) -> bool:
    """Whether a cross-site page could send this request without a CORS preflight."""
    if scope["method"] != "POST" or first_header(scope, b"x-requested-with") is not None:
        return False
    content_type = first_header(scope, b"content-type")
    if content_type is None:
        return True
    essence = content_type.decode("latin-1").partition(";")[0].strip().lower()
    return essence in FORM_CONTENT_TYPES
