"""sd_notify over `$NOTIFY_SOCKET` with the standard library (READY, STATUS, WATCHDOG, STOPPING)."""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends state lines to systemd; does nothing outside a Type=notify unit."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() else None

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), self.address)
        except OSError:
            pass  # systemd gone or socket unreachable: notifications are best effort
