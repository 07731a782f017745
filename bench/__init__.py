"""Benchmarks of Avaturn Desktop against the local simulator: ``python -m bench [--quick]``.

Each module measures one figure of issue 6 and returns :class:`bench.common.Figure` rows; the
Qt ones run in child processes of their own (one QApplication each, and honest per-process
memory). ``docs/benchmarks.md`` defines every measure and keeps the latest figures.
"""
