"""Processes and their listening sockets, read from /proc: who can reach what a test started."""
from __future__ import annotations

import os
from pathlib import Path


def descendants(root: int) -> dict[int, str]:
    """pid -> command name of every process under `root` (from /proc)."""
    parent, name = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        pid = int(stat.parent.name)
        name[pid] = text[text.index("(") + 1:text.rindex(")")]
        parent[pid] = int(text[text.rindex(")") + 2:].split()[1])
    out, frontier = {}, {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in out}
        out.update({p: name[p] for p in frontier})
    return out


def listeners(pids: dict[int, str]) -> list[tuple[str, str, int]]:
    """(command, address, port) of every TCP socket in LISTEN state that one of `pids` holds (/proc/net/tcp*)."""
    import ipaddress
    sockets = {}
    for table, width in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/net/{table}").read_text(encoding="utf-8").splitlines()[1:]:
            f = line.split()
            if f[3] != "0A":  # LISTEN
                continue
            addr_hex, port_hex = f[1].split(":")
            raw = bytes.fromhex(addr_hex)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))  # each 32-bit word is little-endian
            sockets[f[9]] = (str(ipaddress.ip_address(raw)), int(port_hex, 16))
    found = []
    for pid, cmd in pids.items():
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:[") and link[8:-1] in sockets:
                found.append((cmd, *sockets[link[8:-1]]))
    return found


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback (gRPC's dual-stack sockets)."""
    import ipaddress
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)
