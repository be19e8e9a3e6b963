"""Network guard for tests: refuse and record any connection that would leave the machine.

Put this folder on PYTHONPATH and set CBERT_NETGUARD_LOG to a file path. Every
attempt to resolve a non-local host name or to connect a socket to a non-loopback
address is appended to that file (one line each) and fails with OSError.
"""

import ipaddress
import os
import socket

_LOG = os.environ.get("CBERT_NETGUARD_LOG")
_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "", None}


def _record(what: str) -> None:
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as handle:
            handle.write(what + "\n")


def _is_local(host: object) -> bool:
    if host in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


if _LOG:
    _getaddrinfo = socket.getaddrinfo
    _connect = socket.socket.connect
    _connect_ex = socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if not _is_local(host):
            _record(f"resolve {host}")
            raise socket.gaierror(socket.EAI_NONAME, "blocked by the test network guard")
        return _getaddrinfo(host, *args, **kwargs)

    def _check(address: object) -> None:
        if isinstance(address, tuple) and not _is_local(address[0]):
            _record(f"connect {address[0]}:{address[1]}")
            raise OSError("blocked by the test network guard")

    def connect(self, address):  # noqa: ANN001, ANN202
        _check(address)
        return _connect(self, address)

    def connect_ex(self, address):  # noqa: ANN001, ANN202
        _check(address)
        return _connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
