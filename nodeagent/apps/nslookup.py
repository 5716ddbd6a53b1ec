"""`nslookup NAME [SERVER]` as busybox 1.28 prints it — the version the Kubernetes DNS tutorials
pin, because later busybox releases stopped applying the resolv.conf search list to names with a
dot (`nslookup web-0.nginx` fails with them). Names are resolved by the C library through the
pod's /etc/resolv.conf (search list, ndots), like busybox 1.28 did.

    Server:    10.96.0.10
    Address 1: 10.96.0.10 kube-dns.kube-system.svc.cluster.local

    Name:      web-0.nginx
    Address 1: 10.244.1.5 web-0.nginx.default.svc.cluster.local
"""

from __future__ import annotations

import socket
import sys


def _nameserver(resolv: str = "/etc/resolv.conf") -> str:
    try:
        with open(resolv) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    return parts[1]
    except OSError:
        pass
    return "127.0.0.1"


def _ptr(ip: str) -> str:
    try:
        return socket.gethostbyaddr(ip)[0]
    except OSError:
        return ""


def _line(n: int, ip: str) -> str:
    name = _ptr(ip)
    return f"Address {n}: {ip}" + (f" {name}" if name else "")


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("-")]
    if not args:
        sys.stderr.write("BusyBox v1.28.4 (2018-05-22 17:00:17 UTC) multi-call binary.\n\n"
                         "Usage: nslookup [HOST] [SERVER]\n\n"
                         "Query the nameserver for the IP address of the given HOST\n"
                         "optionally using a specified DNS server\n")
        return 1
    host = args[0]
    server = args[1] if len(args) > 1 else _nameserver()
    print(f"Server:    {server}")
    print(_line(1, server))
    print()
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        sys.stderr.write(f"nslookup: can't resolve '{host}'\n")
        return 1
    seen: list[str] = []
    for family, *_rest, addr in infos:
        ip = addr[0]
        if ip not in seen and family in (socket.AF_INET, socket.AF_INET6):
            seen.append(ip)
    print(f"Name:      {host}")
    for n, ip in enumerate(seen, start=1):
        print(_line(n, ip))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
