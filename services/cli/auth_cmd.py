"""`llmmesh auth new-key` and `llmmesh auth hash`: make API keys and the hashes the tenants file stores."""

from __future__ import annotations

import argparse
import getpass
import sys

from services.cli.errors import EXIT_USAGE, CliError
from services.common.tenants import hash_api_key, new_api_key


def new_key(args: argparse.Namespace) -> None:
    key = new_api_key()
    label = args.id or f"{args.tenant}-1"
    print(f"API key (give it to the tenant; it is not stored anywhere): {key}", file=sys.stderr)
    print("tenants file entry:", file=sys.stderr)
    print(
        f"  - name: {args.tenant}\n"
        f"    keys:\n"
        f"      - {{id: {label}, sha256: {hash_api_key(key)}}}\n"
        f'    allowed_models: ["*"]\n'
        f"    limits: {{requests_per_minute: 600, tokens_per_minute: 200000, cost_per_day_usd: 20}}"
    )


def hash_key(_: argparse.Namespace) -> None:
    key = getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline()
    key = key.strip()
    if not key:
        raise CliError(
            'no key given: type it at the prompt, or pipe it in (echo "$KEY" | llmmesh auth hash)', EXIT_USAGE
        )
    print(hash_api_key(key))
