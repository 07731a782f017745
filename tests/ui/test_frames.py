"""The panels' once-a-frame helpers."""

from __future__ import annotations

import itertools

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
