"""The llmmesh benchmark suite (`make bench`, `python -m tests.bench --help`).

Not a test package: pytest is told to ignore it (pyproject addopts); the
smoke test in tests/test_bench_smoke.py runs the harness at tiny settings.
"""
