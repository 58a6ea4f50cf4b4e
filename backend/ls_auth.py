"""Authorization for requests from the backend to Label Studio (downloading uploads, local files).

Label Studio 1.23 disables legacy API tokens by default. A Personal Access Token (PAT) is a JWT
*refresh* token: ``POST {LABEL_STUDIO_URL}/api/token/refresh/ {"refresh": PAT}`` answers
``{"access": JWT}``, a short-lived (about 300 s) access token sent as ``Authorization: Bearer JWT``.
A key that is not a JWT is taken as a legacy token and sent as ``Authorization: Token KEY``.

Credentials only ever go to URLs on the Label Studio origin (same scheme, host and port), decided
on the URL as it is sent (``LabelStudioAuth`` is a ``requests`` auth, called on every request and
every redirect hop the caller follows) and parsed by the parser that connects (``backend.urls``).
Presigned cloud-storage URLs, other hosts, and URLs with userinfo or an ambiguous authority never
see the token. The refresh call itself follows no redirect: a 3xx there is an error.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time

import requests

from backend.deadline_http import DeadlineSession
from backend.urls import UrlError, has_userinfo, origin, redact

logger = logging.getLogger(__name__)

# Refresh this long (at most half the lifetime) before the access token expires, so a request
# never carries a token that expires in flight.
_REFRESH_MARGIN_S = 30.0
# Used when the access token's own "exp" claim cannot be read (Label Studio's default lifetime).
_ASSUMED_LIFETIME_S = 300.0

PAT_HINT = (
    "set LABEL_STUDIO_API_KEY to a Personal Access Token " "(Label Studio: Account & Settings -> Personal Access Token)"
)


class LabelStudioAuthError(Exception):
    """The API key could not be turned into an access token. Messages never contain the key.
    ``transient``: Label Studio could not answer (unreachable, 5xx), rather than refusing the key;
    ``refused``: Label Studio refused the key itself (HTTP 4xx)."""

    def __init__(self, message: str, transient: bool = False, refused: bool = False):
        super().__init__(message)
        self.transient, self.refused = transient, refused


class NoCredentials(requests.auth.AuthBase):
    """A ``requests`` auth that sends none: no Authorization header, not even Basic credentials
    taken from the URL's userinfo."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


def _jwt_claims(token: str) -> dict | None:
    """The payload of a JWT (unverified: only used to read ``exp`` and tell PATs from legacy keys),
    or None when ``token`` is not a JWT."""
    segments = token.split(".")
    if len(segments) != 3:
        return None
    payload = segments[1] + "=" * (-len(segments[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


class LabelStudioAuth(requests.auth.AuthBase):
    """Authorization for one Label Studio server, refreshing the access token as needed: pass it as
    ``auth=`` to ``requests``, or ask ``headers_for(url)``.

    Thread-safe: concurrent callers share one access token and at most one refresh runs at a time.
    """

    def __init__(self, base_url: str, api_key: str, timeout_s: float = 10.0):
        if not base_url:
            raise ValueError("LabelStudioAuth needs the Label Studio URL (LABEL_STUDIO_URL)")
        if not api_key:
            raise ValueError(f"LabelStudioAuth needs an API key: {PAT_HINT}")
        self.base_url = base_url.rstrip("/")
        try:
            self._origin = origin(self.base_url)
        except UrlError as exc:
            raise ValueError(f"LABEL_STUDIO_URL: {exc}") from None
        if has_userinfo(self.base_url):
            raise ValueError("LABEL_STUDIO_URL must not contain user:password@ (the token authorizes the backend)")
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._is_legacy_token = _jwt_claims(api_key) is None
        if self._is_legacy_token:
            logger.warning(
                "LABEL_STUDIO_API_KEY is not a JWT, so it is used as a legacy token; Label Studio 1.23 "
                "rejects legacy tokens unless they are enabled in the organization: %s",
                PAT_HINT,
            )
        self._lock = threading.Lock()
        self._access_token = ""
        self._refresh_at = float("-inf")  # time.monotonic() on this machine

    @classmethod
    def from_settings(cls, settings) -> "LabelStudioAuth | None":
        """The auth for ``settings.label_studio_url``/``label_studio_api_key``, or None if either is unset."""
        if not settings.label_studio_url or not settings.label_studio_api_key:
            return None
        return cls(settings.label_studio_url, settings.label_studio_api_key)

    @property
    def uses_legacy_token(self) -> bool:
        """True when the key is not a JWT (so not a Personal Access Token) and is sent as a legacy token."""
        return self._is_legacy_token

    def __repr__(self) -> str:  # never show the key
        return f"LabelStudioAuth({redact(self.base_url)!r})"

    def is_label_studio_url(self, url: str) -> bool:
        """True when ``url`` (absolute) is on the Label Studio origin: same scheme, host and port."""
        try:
            return origin(url) == self._origin
        except UrlError:
            return False

    def may_receive_token(self, url: str) -> bool:
        """Whether a request to ``url`` may carry the token: on the Label Studio origin, with a clear
        authority and no userinfo."""
        return self.is_label_studio_url(url) and not has_userinfo(url)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Sets or removes the Authorization header on the request as it is sent."""
        request.headers.pop("Authorization", None)
        request.headers.update(self.headers_for(request.url))
        return request

    def headers_for(self, url: str) -> dict[str, str]:
        """The Authorization header to send with a GET of ``url``: empty for foreign hosts.

        Raises LabelStudioAuthError when a needed access token cannot be obtained.
        """
        if not self.may_receive_token(url):
            return {}
        if self._is_legacy_token:
            return {"Authorization": f"Token {self._api_key}"}
        return {"Authorization": f"Bearer {self._access()}"}

    def _access(self) -> str:
        with self._lock:
            if time.monotonic() >= self._refresh_at:
                self._access_token, lifetime = self._refresh()
                self._refresh_at = time.monotonic() + lifetime - min(_REFRESH_MARGIN_S, lifetime / 2)
            return self._access_token

    def _refresh(self) -> tuple[str, float]:
        """A new access token and its lifetime in seconds."""
        url = f"{self.base_url}/api/token/refresh/"
        where = redact(self.base_url)
        try:
            # Never redirected: a redirect would re-send the key in the body to wherever it points.
            with DeadlineSession(self._timeout_s) as session:
                response = session.request("POST", url, json={"refresh": self._api_key})
                response.content  # read within the deadline
                session.check()  # which may have cut the answer short
        except requests.RequestException as exc:
            raise LabelStudioAuthError(
                f"could not reach Label Studio at {where} to refresh the access token "
                f"({type(exc).__name__}); check LABEL_STUDIO_URL is reachable from the backend", transient=True
            ) from None
        if response.is_redirect or 300 <= response.status_code < 400:
            raise LabelStudioAuthError(
                f"Label Studio at {where} answered the access-token refresh with a redirect (HTTP "
                f"{response.status_code}), which the backend does not follow with the key: set LABEL_STUDIO_URL "
                "to the address Label Studio answers at itself (scheme, host, port and sub-path)"
            )
        if 400 <= response.status_code < 500:
            raise LabelStudioAuthError(
                f"Label Studio rejected LABEL_STUDIO_API_KEY (HTTP {response.status_code} from /api/token/refresh/): "
                f"the Personal Access Token is invalid, expired or revoked; {PAT_HINT}", refused=True
            )
        if response.status_code != 200:
            raise LabelStudioAuthError(
                f"Label Studio answered HTTP {response.status_code} to the access-token refresh at {where}",
                transient=response.status_code >= 500,
            )
        try:
            access = response.json()["access"]
        except (ValueError, KeyError, TypeError):
            access = None
        if not isinstance(access, str) or not access:
            raise LabelStudioAuthError(  # a proxy's page or an answer cut short, not a verdict on the key
                f"Label Studio's /api/token/refresh/ at {where} answered without an access token", transient=True
            )
        # Lifetime from the token's own claims (exp - iat, both on the server's clock), to be counted
        # on our clock: robust to clock skew between the backend and Label Studio.
        claims = _jwt_claims(access) or {}
        issued, expires = claims.get("iat"), claims.get("exp")
        lifetime = _ASSUMED_LIFETIME_S
        if isinstance(issued, (int, float)) and isinstance(expires, (int, float)) and expires > issued:
            lifetime = float(expires - issued)
        return access, lifetime
