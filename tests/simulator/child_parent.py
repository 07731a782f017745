"""A stand-in for the app in the child-simulator tests: starts the simulator as its child,
prints ``<child pid> <base url>`` once it is up, then waits to be killed.

``python -m tests.simulator.child_parent [--stdin-only] [--before-ready] [--prebind]``:
``--stdin-only`` leaves out the Linux parent-death signal (the portable fallback alone must do it);
``--before-ready`` prints the pid at once, so the parent can be killed mid-start;
``--prebind`` hands the child a socket bound here (as the app does).
"""

from __future__ import annotations

import secrets
import sys
import threading

from avaturn_desktop.simulator import child


def main(argv: list[str]) -> int:
    if "--stdin-only" in argv:
        child._pdeathsig_preexec = lambda: None  # type: ignore[assignment]
    sim = child.start_child(api_key=secrets.token_urlsafe(), prebind="--prebind" in argv)
    if "--before-ready" in argv:
        print(sim.pid, "-", flush=True)
    else:
        sim.wait_ready(30)
        print(sim.pid, sim.base_url, flush=True)
    threading.Event().wait()  # until killed
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
