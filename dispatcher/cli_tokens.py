"""`dispatcher tokens create|list|revoke`: API keys, managed directly in the database
(so the first admin token can be made before anything can authenticate)."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from dispatcher.clock import SystemClock
from dispatcher.service.authn import create_key
from dispatcher.store.sql import api_keys
from dispatcher.store.sql.engine import create_engine
from dispatcher.store.sql.runs import RunStore


def add_commands(sub: Any, database_flag: Any) -> None:
    tokens = sub.add_parser("tokens", help="create, list and revoke API tokens")
    tsub = tokens.add_subparsers(dest="tokens_cmd", required=True)
    p = tsub.add_parser("create", help="create a token; it is printed once, never stored")
    database_flag(p)
    p.add_argument("--namespace", default="default")
    p.add_argument(
        "--role",
        action="append",
        required=True,
        choices=["producer", "worker", "admin"],
        help="repeatable",
    )
    p.add_argument("--name", default="", help="a label for people")
    p.add_argument("--json", action="store_true")
    p.set_defaults(tokens=_create)
    p = tsub.add_parser("list", help="list tokens (never their secrets)")
    database_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(tokens=_list)
    p = tsub.add_parser("revoke", help="revoke a token by its id (takes effect within 5 s)")
    database_flag(p)
    p.add_argument("key_id")
    p.set_defaults(tokens=_revoke)


def run(args: argparse.Namespace) -> int:
    async def go() -> int:
        store = RunStore(create_engine(args.database_url))
        try:
            return int(await args.tokens(args, store))
        finally:
            await store.dispose()

    return asyncio.run(go())


async def _create(args: argparse.Namespace, store: RunStore) -> int:
    key, token = await create_key(store, SystemClock(), args.namespace, args.role, args.name)
    if args.json:
        print(
            json.dumps(
                {"id": key.id, "namespace": key.namespace, "roles": key.roles, "token": token}
            )
        )
    else:
        print(f"id {key.id}, namespace {key.namespace}, roles {','.join(key.roles)}")
        print(f"token (shown once): {token}")
    return 0


def _when(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


async def _list(args: argparse.Namespace, store: RunStore) -> int:
    keys = await api_keys.all_keys(store)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": k.id,
                        "name": k.name,
                        "namespace": k.namespace,
                        "roles": k.roles,
                        "created_ms": k.created_ms,
                        "revoked_ms": k.revoked_ms,
                    }
                    for k in keys
                ]
            )
        )
        return 0
    print(f"{'ID':18}{'NAMESPACE':16}{'ROLES':24}{'CREATED':18}{'REVOKED':18}NAME")
    for k in keys:
        print(
            f"{k.id:18}{k.namespace:16}{','.join(k.roles):24}{_when(k.created_ms):18}"
            f"{_when(k.revoked_ms):18}{k.name}"
        )
    return 0


async def _revoke(args: argparse.Namespace, store: RunStore) -> int:
    if await api_keys.revoke(store, args.key_id, SystemClock().now_ms()):
        print(f"revoked {args.key_id}")
        return 0
    print(f"no active token with id {args.key_id}")
    return 1
