"""The GUI thread at the priority Chromium gives its own display threads, where allowed.

The app's GUI thread is also the web engine's browser UI thread. Chromium raises the threads
that put frames on screen (its compositor, video frame and I/O threads, to nice -8; its audio
threads higher still) when the system allows it: run as root, or with ``CAP_SYS_NICE``, or a
``RLIMIT_NICE`` that permits it (``/etc/security/limits.conf``). The GUI thread then ran at
nice 0 below them, and on a busy machine it waited for a core behind them: the window stalled
while lines streamed (the stall meter's worst turns were ones in which the GUI thread barely
ran). Where Chromium may raise its threads, the app raises its GUI thread to the same level;
where it may not, neither does, and nothing changes.

On Linux a thread or process started afterwards from the GUI thread inherits its nice value:
the built-in simulator and the page's processes then run at that level too. Against other
programs on a busy machine the whole app is ahead; among its own parts, Chromium's display
threads and the GUI thread are level, as they were before at 0. (Where the kernel groups
processes by session, ``sched_autogroup``, nice values count only inside the app's group.)

Linux only (``setpriority`` on a thread id is per thread there); elsewhere a no-op.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

__all__ = ["DISPLAY_NICE", "raise_gui_thread"]

log = logging.getLogger("avaturn.app")

#: Chromium's nice value for its display-critical threads (``ThreadType::kDisplayCritical``).
DISPLAY_NICE = -8


def raise_gui_thread(nice: int = DISPLAY_NICE) -> bool:
    """Give the calling thread ``nice`` if the system allows it; True if it now has it.

    Never lowers a thread that already runs higher, and never fails: without the right to
    raise it, the thread keeps its priority (logged at debug level).
    """
    if not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current <= nice:
            return True
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:  # EPERM / EACCES without CAP_SYS_NICE or a RLIMIT_NICE for it
        log.debug("The GUI thread keeps its priority (%s)", exc.strerror or exc)
        return False
    log.debug("The GUI thread runs at nice %d, as the web engine's display threads", nice)
    return True
