"""The control API's outside caller for ``bench.control_say``: a process of its own, as a Stream
Deck plugin or a script is.

Reads one text per line on standard input; for each, sends ``POST /api/v1/say`` and notes
``time.perf_counter()`` as the request goes to the wire (httpx's request hook, after the client
built it). The clock is the system's monotonic one, the same in every process on Linux and
macOS, so the app can set its own times beside these. At end of input it prints the times,
one per line, in order. Nothing is printed while the app works: the app reads them at the end.

``python -m bench.say_client BASE_URL TOKEN``
"""

from __future__ import annotations

import sys
import time

import httpx


def main() -> int:
    base_url, token = sys.argv[1], sys.argv[2]
    written: list[float] = []
    with httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        event_hooks={"request": [lambda _request: written.append(time.perf_counter())]},
    ) as client:
        for line in sys.stdin:
            text = line.rstrip("\n")
            if not text:
                break
            client.post("/api/v1/say", json={"text": text}).raise_for_status()
    sys.stdout.write("".join(f"{t!r}\n" for t in written))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
