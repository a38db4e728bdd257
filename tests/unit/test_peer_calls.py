"""The agent's calls to the other members' APIs: /status polls and /failsafe, verified and with mTLS.

Real API servers on loopback (pgha.api.server with a fake handle), a throwaway CA from openssl.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pgha.agent.failsafe import HttpFailsafe
from pgha.agent.peers import PeerPoller
from pgha.api.server import ApiServer
from pgha.config import ApiConfig, Credentials, TLSConfig
from pgha.core.model import MemberInfo
from tests.unit.test_api_helpers import API_PASSWORD, API_USER, make_ca, make_handle


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_ca(tmp_path_factory.mktemp("ca"))


@contextlib.contextmanager
def api(certs: dict[str, Path], verify_client: bool = False, auth: bool = False) -> Iterator[str]:
    """A member's API over HTTPS (certificate signed by the test CA); yields its URL."""
    tls = {"certfile": str(certs["server_crt"]), "keyfile": str(certs["server_key"]),
           "cafile": str(certs["ca_crt"]), "verify_client": verify_client}
    server = ApiServer(make_handle("leader", auth=auth, tls=tls))
    server.start()
    try:
        yield f"https://127.0.0.1:{server.port}"
    finally:
        server.stop()


def me(certs: dict[str, Path], cafile: bool = True, verify_peers: bool = True, auth: bool = True) -> ApiConfig:
    """This member's api: settings (its certificate is the test server's, signed by the CA)."""
    tls = TLSConfig(str(certs["server_crt"]), str(certs["server_key"]),
                    cafile=str(certs["ca_crt"]) if cafile else "", verify_peers=verify_peers)
    return ApiConfig(auth=Credentials(API_USER, API_PASSWORD) if auth else "none", tls=tls)


def poll(config: ApiConfig, url: str) -> str:
    poller = PeerPoller(config)
    try:
        return poller.poll_one(MemberInfo("n1", api_url=url)).api
    finally:
        poller.close()


def test_polls_verify_peers_against_the_system_cas_when_no_cafile_is_given(certs: dict[str, Path]) -> None:
    with api(certs) as url:
        assert poll(me(certs), url) == "ok"
        # No cafile: the system's CAs, which never signed the test CA's certificate.
        assert poll(me(certs, cafile=False), url) == "timeout"
        assert poll(ApiConfig(auth="none"), url) == "timeout"
        # Only the explicit setting turns the check off.
        assert poll(me(certs, cafile=False, verify_peers=False), url) == "ok"


def test_polls_and_failsafe_present_the_members_certificate(certs: dict[str, Path]) -> None:
    with api(certs, verify_client=True, auth=True) as url:
        assert poll(me(certs), url) == "ok"
        members = [MemberInfo("n2", api_url=url)]
        assert HttpFailsafe(me(certs)).confirm_all(members, "n1")
        # Without a certificate of its own a member cannot even connect.
        assert not HttpFailsafe(ApiConfig(auth=Credentials(API_USER, API_PASSWORD))).confirm_all(members, "n1")


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_POST(self) -> None:
        _Recorder.seen.append(self.headers.get("Authorization"))
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_failsafe_never_sends_the_api_password_over_plain_http(certs: dict[str, Path],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        failsafe = HttpFailsafe(me(certs))
        members = [MemberInfo("n2", api_url=url)]
        assert not failsafe.confirm_all(members, "n1")
        assert not failsafe.confirm_all(members, "n1")
        assert _Recorder.seen == [None, None]
        warnings = [r.getMessage() for r in caplog.records if "plain http" in r.getMessage()]
        assert len(warnings) == 1 and API_PASSWORD not in warnings[0], warnings
        assert not failsafe.confirm_all([MemberInfo("n3", api_url="ftp://127.0.0.1:1")], "n1")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
