"""ZooKeeper's four-letter words (`ruok`, `srvr`): how the health checks ask ZooKeeper about itself."""

from __future__ import annotations

import socket


def zk_command(port: int, command: str, *, host: str = "127.0.0.1", timeout_s: float = 2.0) -> str:
    """Send a four-letter word and return the whole answer; '' if nothing answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(command.encode())
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")
    except OSError:
        return ""
