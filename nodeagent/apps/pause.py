"""registry.k8s.io/pause: sleep until SIGINT/SIGTERM, then exit 0 (like pause.c)."""

from __future__ import annotations

import signal
import sys


def main() -> int:
    def stop(signum, frame):
        sys.stderr.write(f"Shutting down, got signal: {signal.Signals(signum).name[3:].title()}\n")
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
