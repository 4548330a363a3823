"""House rules checked by reading the code: generated code is fresh, layers import one
way, Redis keys are built only in keys.py, nothing waits with asyncio.wait_for, and the
migrations build the tables the code declares."""

from __future__ import annotations

import ast
import filecmp
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from dispatcher.store.sql.migrate import upgrade
from dispatcher.store.sql.tables import metadata

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "protos" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out = [f"{a.name}/{n}" for n in cmp.left_only + cmp.right_only + cmp.diff_files]
    for sub in cmp.common_dirs:
        out += _differences(a / sub, b / sub)
    return out


def test_the_committed_generated_code_matches_the_protos(tmp_path: Path) -> None:
    _load_generator().generate(tmp_path)
    assert _differences(tmp_path, ROOT / "worker_sdk" / "_proto") == []


def _imports(package: str) -> dict[str, set[str]]:
    """Module file -> the modules it imports, for every file of a package."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / package.replace(".", "/")).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


FORBIDDEN = {
    "dispatcher.domain": ("grpc", "dispatcher.api", "dispatcher.service", "dispatcher.store",
                          "sqlalchemy", "redis"),
    "dispatcher.store": ("grpc", "dispatcher.api", "dispatcher.service"),
    "dispatcher.service": ("grpc", "dispatcher.api"),
    "worker_sdk": ("dispatcher",),
}  # fmt: skip


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_one_way(package: str) -> None:
    bad = [
        (module, name)
        for module, names in _imports(package).items()
        for name in names
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[package])
    ]
    assert bad == []


KEY_FRAGMENTS = (":ready", ":leased", ":scheduled", ":paused", ":index:", ":queues", ":wake",
                 ":updates", ":workers", ":quota", ":jobkey", ":bucket")  # fmt: skip


def test_redis_keys_are_built_only_in_keys_py() -> None:
    keys_py = ROOT / "dispatcher" / "store" / "redis" / "keys.py"
    offenders = []
    for path in (ROOT / "dispatcher").rglob("*.py"):
        if path == keys_py:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if any(f in node.value for f in KEY_FRAGMENTS) and " " not in node.value:
                    offenders.append((str(path.relative_to(ROOT)), node.value))
    assert offenders == []


def test_no_code_waits_with_asyncio_wait_for() -> None:
    # On Python 3.11 it can swallow a cancel that arrives as it finishes
    # (python/cpython#86296), and a loop waiting in it then never stops:
    # asyncio.timeout does not.
    offenders = []
    for package in ("dispatcher", "worker_sdk"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "wait_for":
                    if isinstance(node.value, ast.Name) and node.value.id == "asyncio":
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_the_migrations_build_exactly_the_tables_the_code_declares(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diff == []
