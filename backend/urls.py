"""Image URLs as the backend connects to them, and URLs as they may appear in logs and answers.

One parser decides everything about a URL: ``urllib3.util.parse_url``, the one ``requests`` and
urllib3 use to connect. (``urllib.parse`` reads ``http://a:1\\@b/`` as host ``b``; urllib3, like
browsers, connects to ``a``. Deciding credentials with one parser and connecting with another
leaks them.) A URL whose authority holds a backslash, whitespace or a control character means
different hosts to different parsers, so it is refused outright (``UrlError``); one with userinfo
(``user:pass@``) may be fetched but never carries the Label Studio token.

``redact`` is what a URL looks like anywhere it is shown: no userinfo, no query string (presigned
cloud URLs carry their signatures there), no control characters. ``install_log_redaction`` does the
same to the log lines of the HTTP libraries (urllib3's DEBUG lines show every path and query).
"""

from __future__ import annotations

import logging
import re

from urllib3.exceptions import LocationParseError
from urllib3.util import Url, parse_url

DEFAULT_PORTS = {"http": 80, "https": 443}
_AMBIGUOUS_AUTHORITY = re.compile(r"[\\\s\x00-\x1f\x7f]")
_SHOWN_MAX = 200


class UrlError(ValueError):
    """An image URL that is not an absolute http(s) URL with one clear host; the message says why
    and shows the URL redacted."""


def _authority(url: str) -> str:
    """The widest reading of the authority: everything between ``//`` and the first ``/``, ``?`` or
    ``#`` (``urllib.parse``'s reading; urllib3 also stops at a backslash)."""
    _, sep, rest = url.partition("//")
    return re.split(r"[/?#]", rest, maxsplit=1)[0] if sep else ""


def parse_http_url(url: str) -> Url:
    """``url`` parsed as it will be connected to: an absolute http(s) URL with a host and a valid port.

    Raises UrlError for anything else, including an authority that parsers read differently.
    """
    if _AMBIGUOUS_AUTHORITY.search(_authority(url)):
        raise UrlError(f"the URL '{redact(url)}' has a backslash, space or control character in its host part")
    try:
        parsed = parse_url(url)
    except (LocationParseError, ValueError):
        raise UrlError(f"the URL '{redact(url)}' cannot be parsed (malformed host, port or IPv6 address)") from None
    if parsed.scheme not in DEFAULT_PORTS or not parsed.host:
        raise UrlError(f"the URL '{redact(url)}' is not an absolute http(s) URL with a host")
    return parsed


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, lowercase host, port with the scheme's default filled in) of an absolute http(s) URL.
    Raises UrlError when ``url`` is not one (see ``parse_http_url``)."""
    parsed = parse_http_url(url)
    return parsed.scheme, parsed.host.lower(), parsed.port or DEFAULT_PORTS[parsed.scheme]


def has_userinfo(url: str) -> bool:
    return "@" in _authority(url)


def redact(url: str) -> str:
    """``url`` safe to log or answer: userinfo dropped, query and fragment replaced by ``?…``,
    control characters escaped, at most 200 characters."""
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if sep:
        authority = _authority("//" + rest)
        text = f"{scheme}://{authority.rpartition('@')[2]}{rest[len(authority):]}"
    path, query = re.split(r"[?#]", text, maxsplit=1)[0], re.search(r"[?#]", text)
    shown = path + ("?…" if query else "")
    shown = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", shown)
    return shown if len(shown) <= _SHOWN_MAX else shown[:_SHOWN_MAX] + "…"


_QUERY_IN_TEXT = re.compile(r"\?[^\s\"'<>)]*")
_USERINFO_IN_TEXT = re.compile(r"(://)[^/\s@?#]*@")


def redact_text(text: str) -> str:
    """Every query string and userinfo in free text (a formatted log line) removed."""
    return _QUERY_IN_TEXT.sub("?…", _USERINFO_IN_TEXT.sub(r"\1", text))


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with ``redact_text`` (formatting it first, so URLs passed as
    arguments or inside exception reprs are caught too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


# Loggers that format URLs into their lines: urllib3 and requests (every HTTP call of the backend; at
# DEBUG every request's path and query, at WARNING retries with the URL).
_HTTP_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.poolmanager", "urllib3.connection",
                 "urllib3.response", "urllib3.util.retry", "requests")
_FILTER = RedactingFilter()


def install_log_redaction() -> None:
    """Attach the redacting filter to the HTTP libraries' loggers (a logger's filters see only its own
    records, so each one gets it). Idempotent."""
    names = set(_HTTP_LOGGERS) | {name for name in logging.root.manager.loggerDict
                                  if name.startswith(("urllib3.", "requests."))}
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
