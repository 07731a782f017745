"""The panels' once-a-frame helpers."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from avaturn_desktop.ui.frames import row_runs


def test_rows_are_grouped_into_runs() -> None:
    assert row_runs([]) == []
    assert row_runs([4]) == [(4, 4)]
    assert row_runs([1, 2, 3, 7, 9, 10]) == [(1, 3), (7, 7), (9, 10)]


@given(st.sets(st.integers(min_value=0, max_value=300)))
def test_runs_cover_exactly_the_rows_and_never_touch(rows: set[int]) -> None:
    runs = row_runs(sorted(rows))
    assert {row for first, last in runs for row in range(first, last + 1)} == rows
    assert all(first <= last for first, last in runs)
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(runs))


def test_item_views_draw_unshaped_text(qtbot: Any) -> None:
    from PySide6.QtGui import QFont
    from PySide6.QtWidgets import QTableView

    from avaturn_desktop.ui.frames import unshaped_text

    view = QTableView()
    qtbot.addWidget(view)
    size = view.font().pointSizeF()
    unshaped_text(view)
    assert view.font().styleStrategy() & QFont.StyleStrategy.PreferNoShaping
    assert view.font().pointSizeF() == size  # the same font otherwise
