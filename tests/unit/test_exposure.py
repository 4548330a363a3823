"""Serving without credentials is only the default on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.app import DispatcherApp
from dispatcher.config import Settings
from tests.service.helpers import startup_warnings


def test_loopback_runs_open_by_default_and_anything_else_requires_credentials() -> None:
    assert not Settings(host="127.0.0.1").auth_required
    assert Settings(host="0.0.0.0").auth_required
    assert Settings(host="127.0.0.1", auth="required").auth_required


def test_running_open_off_loopback_is_refused_unless_explicitly_allowed() -> None:
    with pytest.raises(SystemExit):
        Settings(host="0.0.0.0", auth="off").check_exposure()
    Settings(host="0.0.0.0", auth="off", allow_open=True).check_exposure()
    Settings(host="0.0.0.0").check_exposure()  # auth required: fine


def test_reflection_is_served_on_loopback_unless_asked_otherwise() -> None:
    assert Settings(host="127.0.0.1").reflection_on
    assert not Settings(host="0.0.0.0").reflection_on
    assert Settings(host="0.0.0.0", reflection=True).reflection_on


async def test_a_server_without_authentication_warns_naming_the_port_it_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(port=0, database_url=f"sqlite:///{tmp_path / 'd.db'}", redis_url="")
    app = DispatcherApp(settings)
    logged = await startup_warnings(app, caplog)
    [warning] = [line for line in logged if "AUTHENTICATION IS OFF" in line]
    assert app.port != 0
    assert f"anyone who can reach 127.0.0.1:{app.port} may call" in warning
