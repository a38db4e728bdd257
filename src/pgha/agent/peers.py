"""Ask the other members, in parallel and quickly, how far they got and whether they live."""

from __future__ import annotations

import json
import socket
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import urllib3

from pgha.config import ApiConfig
from pgha.core.model import MemberInfo, PeerStatus

POLL_TIMEOUT = 0.5


def tcp_state(host: str, port: int, timeout: float = POLL_TIMEOUT) -> str:
    """'ok', 'refused' (host up, nothing listening) or 'timeout' (unknown)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "ok"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "timeout"


def peer_http(api: ApiConfig, **pool: Any) -> urllib3.PoolManager:
    """A pool for calls to the other members' APIs (/status, /failsafe).

    HTTPS peers are verified against ``api.tls.cafile``, or the system's CAs when it is empty or
    there is no ``api.tls``; only ``api.tls.verify_peers: false`` turns that off.  With ``api.tls``
    this member presents its own certificate, so peers with ``verify_client: true`` accept the call.
    """
    tls = api.tls
    verify = tls is None or tls.verify_peers
    if not verify:
        # Asked for explicitly (and documented): no warning per poll.
        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
    return urllib3.PoolManager(
        **pool, retries=False, cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
        ca_certs=(tls.cafile or None) if tls is not None else None,
        cert_file=tls.certfile if tls is not None else None, key_file=tls.keyfile if tls is not None else None,
    )


class PeerPoller:
    """Polls the other members' ``/status``, verifying their certificates (see ``peer_http``)."""

    def __init__(self, api: ApiConfig) -> None:
        self.http = peer_http(api, num_pools=16, maxsize=2,
                              timeout=urllib3.Timeout(connect=POLL_TIMEOUT, read=POLL_TIMEOUT))
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="poll")

    def poll_one(self, m: MemberInfo) -> PeerStatus:
        api = "timeout"
        lsn = timeline = None
        in_recovery = None
        sees_leader = None
        if m.api_url:
            try:
                r = self.http.request("GET", m.api_url + "/status")
                api = "ok"
                body = json.loads(r.data or b"{}")
                lsn = body.get("lsn")
                timeline = body.get("timeline")
                in_recovery = body.get("in_recovery")
                sees_leader = body.get("leader")
            except urllib3.exceptions.NewConnectionError as exc:
                api = "refused" if "refused" in str(exc).lower() else "timeout"
            except (urllib3.exceptions.HTTPError, ValueError):
                api = "timeout"
        pg = tcp_state(m.host, m.port) if m.host and m.port else "timeout"
        if api == "refused" and m.api_url:
            # Double-check the refusal directly: it is what allows revoking a leader early.
            u = urlsplit(m.api_url)
            api = tcp_state(u.hostname or "", u.port or 80)
        return PeerStatus(name=m.name, api=api, pg=pg, lsn=lsn, timeline=timeline,
                         in_recovery=in_recovery, sees_leader=sees_leader)

    def poll(self, members: list[MemberInfo]) -> dict[str, PeerStatus]:
        results = self.pool.map(self.poll_one, members)
        return {p.name: p for p in results}

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.http.clear()
