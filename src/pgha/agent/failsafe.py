"""Failsafe over HTTP: during a DCS outage the leader asks every other member to confirm it.

The API password goes only over HTTPS (verified as ``peer_http`` says): a member whose ``api_url``
in the DCS is plain http is asked without it, and one warning says why its answer will be 401.
Each call presents this member's own certificate, so members with ``api.tls.verify_client: true``
accept it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import urllib3

from pgha.agent.peers import peer_http
from pgha.config import ApiConfig
from pgha.core.model import MemberInfo

log = logging.getLogger("pgha.agent")


class HttpFailsafe:
    def __init__(self, api: ApiConfig) -> None:
        # Our own API credentials (every member has the same), and the CA of the members' certificates.
        self.auth = api.credentials
        self.http = peer_http(api, timeout=urllib3.Timeout(connect=0.5, read=1.0))
        self._warned: set[str] = set()

    def _headers(self, m: MemberInfo) -> dict[str, str] | None:
        """The request's headers; None when the member's api_url is neither http:// nor https://."""
        headers = {"Content-Type": "application/json"}
        if m.api_url.startswith("https://"):
            if self.auth is not None:
                headers.update(urllib3.make_headers(basic_auth=f"{self.auth.username}:{self.auth.password}"))
            return headers
        if not m.api_url.startswith("http://"):
            return None
        if self.auth is not None and m.name not in self._warned:
            self._warned.add(m.name)
            log.warning("failsafe: %s's API is plain http (%s): the API password is sent only over https, so it "
                        "will refuse to confirm us; serve every member's API over https (api.tls)", m.name, m.api_url)
        return headers

    def confirm_all(self, members: Sequence[MemberInfo], leader: str) -> bool:
        """POST /failsafe to each member; True only if every one of them confirms ``leader``."""
        body = json.dumps({"leader": leader}).encode()
        for m in members:
            headers = self._headers(m)
            if headers is None:
                log.warning("failsafe: %s has no http(s) API URL; it cannot confirm us", m.name)
                return False
            try:
                r = self.http.request("POST", m.api_url + "/failsafe", body=body, headers=headers)
            except urllib3.exceptions.HTTPError as exc:
                log.warning("failsafe: %s did not answer (%s)", m.name, type(exc).__name__)
                return False
            if r.status != 200:
                log.warning("failsafe: %s refused to confirm us (HTTP %s)", m.name, r.status)
                return False
        return True
