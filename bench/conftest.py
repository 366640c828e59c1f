"""pytest configuration of the fgp_ext benchmark suites (fixtures and the end-of-run ratio summary).

Run from the repository root (``pytest python_tests`` never collects this folder)::

    /work/venv/bin/python -m pytest bench --benchmark-only -q

The helpers live in :mod:`benchutil` so that test modules can import them too.
"""
from benchutil import (  # noqa: F401  (fixtures and hooks are found by name)
    cpu_threads,
    device_threads,
    nb201_arch_strs,
    nb201_batch,
    nb201_graphs,
    pytest_terminal_summary,
)
