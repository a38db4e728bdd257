"""Ask the other members, in parallel and quickly, how far they got and whether they live."""

from __future__ import annotations

import json
import socket
import warnings
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import urllib3

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


class PeerPoller:
    """Polls the other members' ``/status``.

    With ``ca_file`` (api.tls.cafile) their certificates are verified against it, as /failsafe
    does. Without one, an HTTPS peer is read unverified and quietly: /status is public, read-only
    and only speeds a failover up, so it must not fill the log with a warning per poll.
    """

    def __init__(self, ca_file: str | None = None) -> None:
        if not ca_file:
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self.http = urllib3.PoolManager(
            num_pools=16, maxsize=2, retries=False,
            timeout=urllib3.Timeout(connect=POLL_TIMEOUT, read=POLL_TIMEOUT),
            cert_reqs="CERT_REQUIRED" if ca_file else "CERT_NONE", ca_certs=ca_file or None,
        )
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
