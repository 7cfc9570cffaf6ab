"""`llmmesh auth new-key` and `llmmesh auth hash`: make API keys and the hashes the tenants file stores."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from services.common.tenants import hash_api_key, new_api_key


def add_parsers(commands: Any) -> None:
    """Adds `auth` to the llmmesh command."""
    auth = commands.add_parser("auth", help="make tenant API keys and their hashes")
    actions = auth.add_subparsers(title="actions", required=True)
    new_key = actions.add_parser("new-key", help="print a new random key and the tenants-file entry for it")
    new_key.add_argument("--tenant", default="my-team", help="tenant name for the printed entry")
    new_key.add_argument("--id", default="", help="key label for logs and messages (not secret)")
    new_key.set_defaults(run=_new_key)
    hash_cmd = actions.add_parser("hash", help="read a key (prompt or stdin) and print its sha256 for the tenants file")
    hash_cmd.set_defaults(run=_hash)


def _new_key(args: argparse.Namespace) -> None:
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


def _hash(_: argparse.Namespace) -> None:
    key = getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline()
    key = key.strip()
    if not key:
        print("no key given", file=sys.stderr)
        raise SystemExit(2)
    print(hash_api_key(key))
