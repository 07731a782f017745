"""Child of the task-log benchmark: the app showing a big task log, and its peak memory.

The app is built as ``app.run`` builds it with no API key (its in-process simulator included),
over ``--database``; the log dock's table is scrolled through its whole length and to the end,
repainting at each step; then, after the same hold as the baseline, the memory is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from bench.common import emit_result, peak_rss_mb, tree_rss_mb
from bench.qtapp import app_shell, run_async, start_qt


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--hold-ms", type=int, default=1000)
    parser.add_argument(
        "--api-base", help="an external simulator (as with a cloud key: no in-process simulator)"
    )
    args = parser.parse_args()
    app = start_qt()
    marks: dict[str, float] = {"after_qt_start_mb": peak_rss_mb()}

    async def body() -> dict[str, Any]:
        async with app_shell(args.api_base, args.database) as parts:
            marks["shown_mb"] = peak_rss_mb()
            panel = parts.speaking.log_panel
            table = panel.table
            model = parts.speaking.log_model
            rows = model.rowCount()
            bar = table.verticalScrollBar()
            steps = 60 if args.quick else 300
            for i in range(steps + 1):
                bar.setValue(bar.maximum() * i // steps)
                table.viewport().repaint()
                await asyncio.sleep(0)
            table.scrollToBottom()
            table.viewport().repaint()
            await asyncio.sleep(args.hold_ms / 1000)
            result = {
                **tree_rss_mb(),
                "main_peak_mb": peak_rss_mb(),
                "rows": rows,
                "scroll_steps": steps,
                "pages_read": model.pages_read,
                "in_process_simulator": args.api_base is None,
                "peak_at": marks,
            }
        return result

    emit_result(run_async(app, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
