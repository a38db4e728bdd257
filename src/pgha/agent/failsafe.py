"""Failsafe over HTTP: during a DCS outage the leader asks every other member to confirm it."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import urllib3

from pgha.config import ApiConfig
from pgha.core.model import MemberInfo

log = logging.getLogger("pgha.agent")


class HttpFailsafe:
    def __init__(self, api: ApiConfig) -> None:
        # Our own API credentials (every member has the same), and the CA of the members' certificates.
        self.auth = api.credentials
        self.http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=0.5, read=1.0),
                                        ca_certs=(api.tls.cafile or None) if api.tls is not None else None)

    def confirm_all(self, members: Sequence[MemberInfo], leader: str) -> bool:
        """POST /failsafe to each member; True only if every one of them confirms ``leader``."""
        body = json.dumps({"leader": leader}).encode()
        headers = {"Content-Type": "application/json"}
        if self.auth is not None:
            headers.update(urllib3.make_headers(basic_auth=f"{self.auth.username}:{self.auth.password}"))
        for m in members:
            try:
                r = self.http.request("POST", m.api_url + "/failsafe", body=body, headers=headers)
            except urllib3.exceptions.HTTPError as exc:
                log.warning("failsafe: %s did not answer (%s)", m.name, type(exc).__name__)
                return False
            if r.status != 200:
                log.warning("failsafe: %s refused to confirm us (HTTP %s)", m.name, r.status)
                return False
        return True
