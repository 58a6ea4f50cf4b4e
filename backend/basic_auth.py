"""Optional HTTP Basic Auth for requests from Label Studio (``BASIC_AUTH_USER``/``BASIC_AUTH_PASS``).

Label Studio sends the ML connection's Basic Auth on ``/health``, ``/setup``, ``/predict``,
``/versions`` and the "Start training" ``/webhook`` call, but **not** on the project event
webhooks it creates for the backend (annotation created/updated/deleted, …). So ``/webhook`` is
open by default (``WEBHOOK_REQUIRES_AUTH=false``): it only records events and never returns data,
and ``START_TRAINING`` (which starts a job that calls Label Studio with the token) still needs the
credentials (``backend.app``). Set ``WEBHOOK_REQUIRES_AUTH=true`` to protect it too, and then add the header to Label Studio's
webhook yourself (``PATCH /api/webhooks/{id}`` with ``{"headers": {"Authorization": "Basic …"}}``),
or annotation events are silently lost.
"""

from __future__ import annotations

import hmac

from werkzeug.datastructures import Authorization

REALM = 'Basic realm="segmentation-assist ML backend", charset="UTF-8"'


class BasicAuth:
    def __init__(self, user: str, password: str):
        self._user = user.encode()
        self._password = password.encode()

    @property
    def enabled(self) -> bool:
        return bool(self._user or self._password)

    def allows(self, authorization: Authorization | None) -> bool:
        """Whether the request's parsed Authorization header carries the configured credentials.
        Compares in constant time, user and password both, so timing says nothing about either."""
        if not self.enabled:
            return True
        if authorization is None or authorization.type != "basic":
            return False
        user_ok = hmac.compare_digest((authorization.username or "").encode(), self._user)
        password_ok = hmac.compare_digest((authorization.password or "").encode(), self._password)
        return user_ok & password_ok
