"""The client address used for rate limits and audit (SEC-RL-07).

``X-Forwarded-For`` is believed only when the direct peer is a trusted proxy
(``TRUSTED_PROXIES``); then the right-most address that is not itself a trusted
proxy is the client. Anything unparsable falls back to the peer address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=64)
def parse_networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Iterable[str]
) -> str | None:
    """The client's address given the TCP peer and the ``X-Forwarded-For`` header."""
    networks = parse_networks(tuple(trusted_proxies))
    if peer is None or not networks or not forwarded_for or not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",")[-20:] if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a forged or broken header: trust nothing in it
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else peer
