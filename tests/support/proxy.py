"""A loopback TCP proxy that can reset every connection it carries (bridge tests and fault script)."""

from __future__ import annotations

import queue
import selectors
import socket
import struct
import threading


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST ("connection reset by peer"), not a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class ResettingProxy:
    """A loopback TCP proxy, one selector thread, that can reset every connection it carries.

    The thread that relays is the only one that touches the sockets, so a reset is a request it
    carries out (with an RST at once) and answers with the number of connections reset.
    """

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.server, selectors.EVENT_READ)
        self.peer: dict[socket.socket, socket.socket] = {}
        self.requests: queue.Queue = queue.Queue()
        self.refuse = 0  # new connections still to refuse (reset at once)
        self.refused = 0
        self.accepted = 0
        self.closed = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def reset_all(self, refuse_next: int = 0) -> int:
        """Reset every open connection, then refuse the next `refuse_next` ones; returns how many were reset."""
        answer: queue.Queue = queue.Queue()
        self.requests.put((refuse_next, answer))
        return answer.get(timeout=10)

    def close(self) -> None:
        self.closed = True
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        try:
            while not self.closed:
                while not self.requests.empty():
                    refuse_next, answer = self.requests.get()
                    pairs = {frozenset((a, b)) for a, b in self.peer.items()}
                    for pair in pairs:
                        for sock in pair:
                            self._forget(sock)
                            _reset(sock)
                    self.refuse = refuse_next
                    answer.put(len(pairs))
                for key, _ in self.sel.select(timeout=0.05):
                    if key.fileobj is self.server:
                        self._accept()
                    else:
                        self._relay(key.fileobj)
        finally:
            for sock in list(self.peer):
                self._forget(sock)
                _reset(sock)
            self.sel.close()
            self.server.close()

    def _accept(self) -> None:
        try:
            client, _ = self.server.accept()
        except BlockingIOError:
            return
        if self.refuse > 0:
            self.refuse -= 1
            self.refused += 1
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        client.setblocking(True)
        self.accepted += 1
        self.peer[client], self.peer[upstream] = upstream, client
        self.sel.register(client, selectors.EVENT_READ)
        self.sel.register(upstream, selectors.EVENT_READ)

    def _relay(self, sock: socket.socket) -> None:
        other = self.peer.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(1 << 16)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        for s in (sock, other):
            self._forget(s)
            s.close()

    def _forget(self, sock: socket.socket) -> None:
        self.peer.pop(sock, None)
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
