"""Free loopback ports, kept stable across `up` calls so configs and URLs do not move."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class PortBook:
    """Named ports (`triton-local-a-0.http`, ...). Reuses a recorded port; allocates new names once."""

    def __init__(self, recorded: dict[str, int] | None = None) -> None:
        self.ports: dict[str, int] = dict(recorded or {})

    def get(self, name: str) -> int:
        if name not in self.ports:
            taken = set(self.ports.values())
            port = free_port()
            while port in taken:
                port = free_port()
            self.ports[name] = port
        return self.ports[name]
