"""A TCP relay between a client and a real server on loopback, which a test can cut in the middle of a
transfer and keep down (every new connection reset at once) until it heals.

Stopping a server process only fails requests that start after it stopped; the relay lets a test break
a connection after a given number of bytes have gone through it, which is what "the endpoint went away
during an upload" looks like to the client, while the server behind it keeps its state for the test
to inspect.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from typing import Literal

from tests.servers import LOOPBACK

Direction = Literal["upstream", "downstream"]


def _reset(sock: socket.socket) -> None:
    """Close with an RST (linger 0), the way a crashed peer or a dropped route looks to the other side."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FlakyLink:
    """Relays ``127.0.0.1:<port>`` to ``upstream_port``. ``cut_after(n, direction)`` resets the
    connection that carries byte ``n`` in that direction and then stays down; ``heal()`` restores it.
    ``refused`` counts the connections reset while down (the client's retries)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._down = False
        self._cut: tuple[int, Direction] | None = None
        self.refused = 0
        self.cuts = 0
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def cut_after(self, nbytes: int, direction: Direction) -> None:
        with self._lock:
            self._cut = (nbytes, direction)

    def go_down(self) -> None:
        with self._lock:
            self._down = True

    def heal(self) -> None:
        with self._lock:
            self._down, self._cut = False, None

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                down = self._down
                if down:
                    self.refused += 1
            if down:
                _reset(client)
                continue
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection((LOOPBACK, self.upstream_port))
        except OSError:
            _reset(client)
            return
        moved = {"upstream": 0, "downstream": 0}
        peers = {client: (upstream, "upstream"), upstream: (client, "downstream")}
        cut_here = False
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 30)
                if not readable:
                    return
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        return
                    dst, direction = peers[src]
                    with self._lock:
                        cut = self._cut
                    if cut is not None and cut[1] == direction and moved[direction] + len(data) > cut[0]:
                        keep = max(0, cut[0] - moved[direction])
                        if keep:
                            dst.sendall(data[:keep])
                        with self._lock:
                            self._down, self._cut = True, None
                            self.cuts += 1
                        cut_here = True
                        return
                    dst.sendall(data)
                    moved[direction] += len(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                if cut_here:
                    _reset(sock)
                else:
                    with contextlib.suppress(OSError):
                        sock.close()
