"""Email providers against real peers on loopback: an aiosmtpd sink, a SendGrid
stand-in (http.server) and moto's SES server."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A free loopback port below 32768 (the kernel's ephemeral range starts there)."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")
