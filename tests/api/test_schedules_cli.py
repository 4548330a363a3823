"""`dispatcher schedules ...` against a running server."""

from __future__ import annotations

import json

import pytest

from dispatcher.app import DispatcherApp
from tests.api.test_admin_cli import run_cli


async def test_schedules_create_list_show_pause_resume_and_delete_do_what_they_say(
    app: DispatcherApp, capsys: pytest.CaptureFixture[str]
) -> None:
    create = ["schedules", "create", "nightly", "--cron", "0 3 * * *", "--timezone", "Asia/Tokyo"]
    create += ["--queue", "reports", "--type", "build", "--metadata", "team=data", "--json"]
    code, out, _ = await run_cli(app, capsys, *create)
    assert code == 0
    created = json.loads(out)
    sid = created["schedule"]["id"]
    assert created["created"] and created["schedule"]["jobTemplate"]["metadata"] == {"team": "data"}
    code, out, _ = await run_cli(app, capsys, *create[:-1])
    assert (code, out.split()[:2]) == (0, ["exists", sid])
    code, out, _ = await run_cli(
        app, capsys, "schedules", "create", "often", "--every", "30", "--misfire", "skip",
        "--queue", "q", "--type", "t",
    )  # fmt: skip
    assert code == 0 and out.startswith("created ")
    code, out, _ = await run_cli(app, capsys, "schedules", "list")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "CADENCE"]
    assert [line.split()[1] for line in lines[1:]] == ["nightly", "often"]
    assert "every 30s" in lines[2] and "0 3 * * * (Asia/Tokyo)" in lines[1]
    code, out, _ = await run_cli(app, capsys, "schedules", "pause", sid)
    assert (code, out.strip()) == (0, "paused nightly")
    code, out, _ = await run_cli(app, capsys, "schedules", "show", sid)
    assert "paused" in out and "True" in out and "reports / build" in out
    code, out, _ = await run_cli(app, capsys, "schedules", "resume", sid)
    assert code == 0 and out.startswith("resumed nightly, next ")
    code, out, _ = await run_cli(app, capsys, "schedules", "delete", sid)
    assert (code, out.strip()) == (0, f"deleted {sid}")
    code, _, err = await run_cli(app, capsys, "schedules", "show", sid)
    assert code == 1 and err.startswith("error: NOT_FOUND")


async def test_a_bad_cron_from_the_cli_prints_invalid_argument_and_exits_non_zero(
    app: DispatcherApp, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await run_cli(
        app, capsys, "schedules", "create", "x", "--cron", "every day", "--queue", "q",
        "--type", "t",
    )  # fmt: skip
    assert code == 1 and err.startswith("error: INVALID_ARGUMENT") and "schedule.cron" in err
