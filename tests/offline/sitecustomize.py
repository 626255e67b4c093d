"""Offline guard for the test run: imported at start-up by every Python process whose PYTHONPATH
holds this folder (conftest.py puts it there), active only while $OOD_OFFLINE_LOG is set.

Allowed: AF_UNIX sockets, IPv4/IPv6 traffic to loopback addresses (127.0.0.0/8, ::1,
"localhost"), and looking up this machine's own host name. Any other ``connect``/``sendto``/``sendmsg`` or name lookup raises
:class:`NetworkBlocked` and appends one line to the file named by $OOD_OFFLINE_LOG, so an attempt
that the code under test catches is still seen (conftest.py fails the session on it).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

LOG_ENV = "OOD_OFFLINE_LOG"


class NetworkBlocked(OSError):
    """A network access outside loopback was attempted during the test run."""


def _is_loopback(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host is None or host in ("", "localhost", socket.gethostname()) or str(host).endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _is_address(host) -> bool:
    try:
        ipaddress.ip_address(host.decode() if isinstance(host, bytes) else str(host).split("%")[0])
        return True
    except ValueError:
        return False


def _block(what: str, target) -> None:
    line = f"pid {os.getpid()} ({' '.join(sys.argv)[:120]}): {what} {target!r}"
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a") as fh:
            fh.write(line + "\n")
    raise NetworkBlocked(f"network access blocked during the tests: {what} {target!r}")


def _check_address(sock: socket.socket, address, what: str) -> None:
    family = sock.family
    if family == getattr(socket, "AF_UNIX", object()):
        return
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) and _is_loopback(address[0]):
        return
    _block(what, address)


def install() -> None:
    """Wrap the socket calls that reach other hosts (idempotent)."""
    if getattr(socket, "_ood_offline", False):
        return
    cls = socket.socket
    connect, connect_ex, sendto, sendmsg = cls.connect, cls.connect_ex, cls.sendto, cls.sendmsg

    def guarded_connect(self, address):
        _check_address(self, address, "connect")
        return connect(self, address)

    def guarded_connect_ex(self, address):
        _check_address(self, address, "connect")
        return connect_ex(self, address)

    def guarded_sendto(self, data, *args):
        _check_address(self, args[-1], "sendto")
        return sendto(self, data, *args)

    def guarded_sendmsg(self, buffers, ancdata=(), flags=0, address=None):
        if address is not None:
            _check_address(self, address, "sendmsg")
            return sendmsg(self, buffers, ancdata, flags, address)
        return sendmsg(self, buffers, ancdata, flags)

    cls.connect, cls.connect_ex, cls.sendto, cls.sendmsg = guarded_connect, guarded_connect_ex, guarded_sendto, guarded_sendmsg

    def lookup(fn, what, literal_ok=True):
        def guarded(host, *args, **kwargs):
            # resolving an address literal needs no network; a reverse lookup does
            if not (_is_loopback(host) or (literal_ok and _is_address(host))):
                _block(what, host)
            return fn(host, *args, **kwargs)

        return guarded

    socket.getaddrinfo = lookup(socket.getaddrinfo, "name lookup")
    socket.gethostbyname = lookup(socket.gethostbyname, "name lookup")
    socket.gethostbyname_ex = lookup(socket.gethostbyname_ex, "name lookup")
    socket.gethostbyaddr = lookup(socket.gethostbyaddr, "address lookup", literal_ok=False)
    socket._ood_offline = True


if os.environ.get(LOG_ENV):
    install()
