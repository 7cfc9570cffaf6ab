"""`python -m tests.bench`: runs the suite, prints the table, writes the JSON."""

from tests.bench.cli import main

# The guard matters: the load generator's spawned process imports this module again.
if __name__ == "__main__":
    raise SystemExit(main())
