"""The API's connections: one selector thread reads requests, a few workers answer them.

No client can make the agent start a thread or wait on a socket.  The thread ``api`` owns every
connection: it accepts, runs the TLS handshake, reads the request head and body and writes the
answer, all non-blocking, so a client that sends half a request line costs a few kilobytes and
no thread.  Only a complete request goes to the ``WORKERS`` threads, which run the handler and
hand the answer back; a worker never touches a socket.  The agent's threads that must keep time
(the lease keeper, which also feeds the watchdog) therefore compete for the interpreter with at
most ``WORKERS + 1`` API threads, whatever the number of clients.

Limits (docs/api.md, "Under load", names them from here):

* ``MAX_CONNECTIONS`` connections at once.  Past it, the connection that has waited longest for
  its request to arrive (or its answer to be read) is closed to make room; when every one is
  being answered, the new connection is closed at once.  A flood thus keeps cycling through
  attackers' connections, and a client that sends its request promptly is still answered.
* ``REQUEST_TIMEOUT`` seconds for a whole request: from the accept (TLS handshake included), or
  from the previous answer on a keep-alive connection, until the head and body are in; and
  again for writing the answer.  A connection that misses it is closed.
* ``MAX_HEAD`` bytes of request line and headers; bodies up to schema.MAX_BODY are kept, larger
  ones (up to 8 times that) are read and dropped so the client gets its 413.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import queue
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pgha.api.schema import MAX_BODY

log = logging.getLogger("pgha.api")

# Connections open at once (each a socket and its buffers, no thread).
MAX_CONNECTIONS = 256
# Threads that run request handlers.
WORKERS = 4
# Seconds for a whole request (TLS handshake, head and body), and again for writing its answer.
REQUEST_TIMEOUT = 10.0
# Bytes of request line and headers.
MAX_HEAD = 64 * 1024
# Bodies larger than MAX_BODY but at most this are read and dropped before the 413 is sent.
MAX_DISCARD = 8 * MAX_BODY
# Connections accepted per wake-up of the selector before it looks at the others again.
ACCEPT_BATCH = 64
# Seconds the listener rests after the process ran out of file descriptors.
EMFILE_PAUSE = 0.1
# Seconds between two warnings that the cap was reached.
WARN_EVERY = 60.0

_HEAD_END = re.compile(rb"\r?\n\r?\n")

# Connection states.
HANDSHAKE, READ, WORK, WRITE = "handshake", "read", "work", "write"


@dataclass(frozen=True)
class Incoming:
    """A complete request, as a worker sees it: the bytes, who sent them, on which address."""

    data: bytes
    client: tuple[str, int]
    local: str
    # The head did not fit in MAX_HEAD: answer 431 and close.
    head_too_large: bool = False
    # The client closed its side: answer (what it sent may be cut short) and close.
    eof: bool = False


# (answer bytes, close the connection after it) for one request.
Answer = tuple[bytes, bool]
Serve = Callable[[Incoming], Answer]


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    client: tuple[str, int]
    local: str
    state: str
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    # Once the head is in: its length, and the body's (None until known).
    head_len: int | None = None
    # How much of ``buf`` was searched for the end of the head.
    scanned: int = 0
    body_len: int = 0
    # Body bytes still to read and drop (a body over MAX_BODY).
    discard: int = 0
    out: memoryview = field(default_factory=lambda: memoryview(b""))
    close_after: bool = False
    events: int = 0
    closed: bool = False
    # The request a worker answers (state WORK).
    incoming: Incoming | None = None


def _content_length(head: bytes) -> int | None:
    """The body length a head announces; None when the handler must answer at once (chunked,
    a malformed or oversized Content-Length): it refuses the request and closes."""
    length = 0
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = name.strip().lower()
        if key == b"transfer-encoding":
            return None
        if key == b"content-length":
            text = value.strip()
            if not text.isdigit() or int(text) > MAX_DISCARD:
                return None
            return int(text)
    return length


class Connections:
    """Serves ``listener`` until ``stop()``; ``serve`` turns a complete request into its answer."""

    def __init__(self, listener: socket.socket, tls: ssl.SSLContext | None, serve: Serve) -> None:
        self.listener = listener
        self.tls = tls
        self.serve = serve
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (listener, self._wake_r, self._wake_w):
            s.setblocking(False)
        # Every open connection; those waiting on the client (not with a worker), oldest first.
        self._open: set[_Conn] = set()
        self._waiting: collections.OrderedDict[_Conn, None] = collections.OrderedDict()
        self._work: queue.SimpleQueue[_Conn | None] = queue.SimpleQueue()
        self._done: collections.deque[tuple[_Conn, Answer]] = collections.deque()
        self._stopping = threading.Event()
        self._listening = False
        self._resume_accept = 0.0
        self._refused = 0
        self._warned = -WARN_EVERY
        self._threads: list[threading.Thread] = []

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._listen(True)
        self._threads = [threading.Thread(target=self._run, name="api", daemon=True)]
        self._threads += [threading.Thread(target=self._worker, name=f"api-worker-{i}", daemon=True)
                          for i in range(WORKERS)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Close the listener and every connection; return once the threads are gone."""
        self._stopping.set()
        self._wake()
        for _ in range(WORKERS):
            self._work.put(None)
        for t in self._threads:
            t.join(timeout=10)
        self._threads = []

    @property
    def open_connections(self) -> int:
        return len(self._open)

    # --- the selector thread -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._turn()
        except Exception:  # a bug here must not leave the API silently dead
            log.exception("the REST API's connection loop failed; the API no longer answers")
        finally:
            for c in list(self._open):
                self._close(c)
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(self.listener)
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _turn(self) -> None:
        # Sleep until a socket is ready, a worker or stop() writes to the wake-up pair, or the next
        # deadline (a client's request, accepting again): an idle API wakes nobody.
        now = time.monotonic()
        due = [next(iter(self._waiting)).deadline] if self._waiting else []
        if not self._listening:
            due.append(self._resume_accept)
        for key, _ in self._sel.select(max(0.0, min(due) - now) if due else None):
            if key.fileobj is self.listener:
                self._accept()
            elif key.data is None:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            elif not key.data.closed:
                self._step(key.data)
        while self._done:
            c, (out, close) = self._done.popleft()
            if not c.closed:
                self._answer(c, out, close)
        now = time.monotonic()
        while self._waiting:
            c = next(iter(self._waiting))
            if c.deadline > now:
                break
            log.debug("API connection from %s: no complete request within %g s; closed", c.client[0],
                      REQUEST_TIMEOUT)
            self._close(c)
        if not self._listening and now >= self._resume_accept and not self._stopping.is_set():
            self._listen(True)

    def _listen(self, on: bool) -> None:
        if on and not self._listening:
            self._sel.register(self.listener, selectors.EVENT_READ, None)
        elif not on and self._listening:
            self._sel.unregister(self.listener)
        self._listening = on

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._note_refused(f"out of file descriptors ({exc.strerror})")
                    self._listen(False)
                    self._resume_accept = time.monotonic() + EMFILE_PAUSE
                return
            if len(self._open) >= MAX_CONNECTIONS and not self._evict():
                sock.close()
                self._note_refused(f"{MAX_CONNECTIONS} connections are being answered")
                continue
            self._add(sock, addr)

    def _add(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = str(sock.getsockname()[0])
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError):
            sock.close()
            return
        c = _Conn(sock, (str(addr[0]), int(addr[1])), local, HANDSHAKE if self.tls else READ,
                  time.monotonic() + REQUEST_TIMEOUT)
        self._open.add(c)
        self._waiting[c] = None
        self._watch(c, selectors.EVENT_READ)

    def _evict(self) -> bool:
        """Close the connection that has waited longest on its client; False if none does."""
        if not self._waiting:
            return False
        c = next(iter(self._waiting))
        self._close(c)
        self._note_refused(f"{MAX_CONNECTIONS} connections are open; closing the oldest idle ones")
        return True

    def _note_refused(self, why: str) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            log.warning("REST API under load: %s (%d connections closed early since the last warning)",
                        why, self._refused)
            self._warned, self._refused = now, 0

    def _watch(self, c: _Conn, events: int) -> None:
        if events == c.events:
            return
        if not events:
            self._sel.unregister(c.sock)
        elif not c.events:
            self._sel.register(c.sock, events, c)
        else:
            self._sel.modify(c.sock, events, c)
        c.events = events

    def _close(self, c: _Conn) -> None:
        if c.closed:
            return
        c.closed = True
        if c.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(c.sock)
            c.events = 0
        self._open.discard(c)
        self._waiting.pop(c, None)
        with contextlib.suppress(OSError):
            c.sock.close()

    def _step(self, c: _Conn) -> None:
        try:
            if c.state == HANDSHAKE:
                assert isinstance(c.sock, ssl.SSLSocket)
                try:
                    c.sock.do_handshake()
                except ssl.SSLWantReadError:
                    self._watch(c, selectors.EVENT_READ)
                    return
                except ssl.SSLWantWriteError:
                    self._watch(c, selectors.EVENT_WRITE)
                    return
                c.state = READ
            if c.state == READ:
                self._read(c)
            elif c.state == WRITE:
                self._write(c)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.debug("API connection from %s: %s", c.client[0], exc)
            self._close(c)

    def _read(self, c: _Conn) -> None:
        while True:
            try:
                chunk = c.sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                break
            except ssl.SSLWantWriteError:
                self._watch(c, selectors.EVENT_WRITE)
                return
            if not chunk:
                if c.buf:
                    self._dispatch(c, eof=True)
                else:
                    self._close(c)
                return
            if c.discard:
                c.discard = max(0, c.discard - len(chunk))
            else:
                c.buf += chunk
            if self._complete(c):
                self._dispatch(c)
                return
        self._watch(c, selectors.EVENT_READ)

    def _complete(self, c: _Conn) -> bool:
        """Whether ``c.buf`` holds a whole request (or all the handler needs to refuse it)."""
        if c.head_len is None:
            # Scan only what is new (and the 3 bytes before it): a client sending its head a byte
            # at a time must not cost the thread a scan of the whole buffer each time.
            end = _HEAD_END.search(c.buf, max(0, c.scanned - 3))
            c.scanned = len(c.buf)
            if end is None or end.end() > MAX_HEAD:
                return len(c.buf) > MAX_HEAD
            c.head_len = end.end()
            length = _content_length(bytes(c.buf[:c.head_len]))
            if length is None:
                c.body_len = len(c.buf) - c.head_len
                return True
            c.body_len = length
            if length > MAX_BODY:
                c.discard = max(0, length - (len(c.buf) - c.head_len))
                del c.buf[c.head_len:]
                c.body_len = 0
        return not c.discard and len(c.buf) >= c.head_len + c.body_len

    def _dispatch(self, c: _Conn, eof: bool = False) -> None:
        if c.head_len is None:
            too_large = len(c.buf) > MAX_HEAD
            data, rest = bytes(c.buf), bytearray()
        else:
            too_large = False
            cut = c.head_len + c.body_len
            data, rest = bytes(c.buf[:cut]), c.buf[cut:]
        c.buf, c.head_len, c.body_len, c.scanned = rest, None, 0, 0
        c.state = WORK
        c.close_after = eof or too_large
        self._waiting.pop(c, None)
        self._watch(c, 0)
        c.deadline = time.monotonic() + REQUEST_TIMEOUT
        c.incoming = Incoming(data, c.client, c.local, too_large, eof)
        self._work.put(c)

    def _answer(self, c: _Conn, out: bytes, close: bool) -> None:
        c.out = memoryview(out)
        c.close_after = c.close_after or close
        c.state = WRITE
        c.deadline = time.monotonic() + REQUEST_TIMEOUT
        self._waiting[c] = None
        self._step(c)

    def _write(self, c: _Conn) -> None:
        while c.out:
            try:
                sent = c.sock.send(c.out)
            except (ssl.SSLWantWriteError, BlockingIOError):
                self._watch(c, selectors.EVENT_WRITE)
                return
            except ssl.SSLWantReadError:
                self._watch(c, selectors.EVENT_READ)
                return
            c.out = c.out[sent:]
        if c.close_after:
            self._close(c)
            return
        # Keep-alive: the next request gets a deadline of its own.
        c.state = READ
        c.deadline = time.monotonic() + REQUEST_TIMEOUT
        self._waiting.move_to_end(c)
        if self._complete(c):  # pipelined: the next request is already in
            self._dispatch(c)
        else:
            self._read(c)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # --- the workers --------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            c = self._work.get()
            if c is None:
                return
            incoming = c.incoming
            assert incoming is not None
            try:
                answer = self.serve(incoming)
            except Exception:
                log.exception("API request from %s failed", incoming.client[0])
                answer = (b"", True)
            self._done.append((c, answer))
            self._wake()


def limits_table() -> str:
    """The limits table of docs/api.md ("Under load"), from the constants above (a test checks)."""
    rows = [
        ("connections open at once", f"{MAX_CONNECTIONS}", "past it the oldest connection still waiting on its "
         "client is closed; when every one is being answered, the new one is closed at once"),
        ("threads", f"1 + {WORKERS}", "one owns every socket (accept, TLS handshake, reads, writes); "
         f"{WORKERS} workers answer complete requests"),
        ("whole-request deadline", f"{REQUEST_TIMEOUT:g} s", "from the accept (TLS handshake included), or "
         "from the previous answer on a keep-alive connection, until head and body are in; again for "
         "writing the answer"),
        ("request line and headers", f"{MAX_HEAD // 1024} KiB", "431 past it"),
        ("body", f"{MAX_BODY // 1024 // 1024} MiB", f"413 past it (read and dropped up to "
         f"{MAX_DISCARD // 1024 // 1024} MiB, so the client sees the 413)"),
    ]
    lines = ["| Limit | Value | What happens |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


__all__ = ["MAX_CONNECTIONS", "REQUEST_TIMEOUT", "WORKERS", "Connections", "Incoming", "limits_table"]
