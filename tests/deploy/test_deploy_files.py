"""The files in deploy/ agree with the code: what can be checked without a Docker
engine, a Kubernetes cluster or systemd.

Commands and flags are checked against `dispatcher ... --help`, environment
variables against what `Settings.from_env` reads, Kubernetes objects against each
other, and the image's health probe against a running dispatcher.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from dispatcher.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
BIN = Path(sys.executable).parent
DISPATCHER_EXE = BIN / "dispatcher"

# The worker SDK's address variable (worker_sdk is being written; see the brief of
# the operations issue). Any DISPATCHER_* name the SDK's sources read is added.
WORKER_ENV_NAMES = {"DISPATCHER_ADDRESS"}
EXAMPLE_WORKER_REF = "examples.worker:worker"
PUBLIC_IMAGES = {"redis", "postgres"}
GRPC_PORT = 50051
ENV_NAME = re.compile(r"\bDISPATCHER_[A-Z][A-Z0-9_]*\b")


# --- helpers -------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(DEPLOY / "docker-compose.yml")
    return doc


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def k8s_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        with path.open(encoding="utf-8") as f:
            objects += [doc for doc in yaml.safe_load_all(f) if doc]
    return objects


def k8s_one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o
        for o in k8s_objects()
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def deployment_container() -> dict[str, Any]:
    containers = k8s_one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def dispatcher_secret() -> dict[str, Any]:
    return k8s_one("Secret", "dispatcher-secrets")


def dispatcher_configmap() -> dict[str, Any]:
    return k8s_one("ConfigMap", "dispatcher-config")


@functools.cache
def help_options(*subcommand: str) -> frozenset[str]:
    """The long options `dispatcher <subcommand> --help` lists (it must succeed)."""
    done = subprocess.run(
        [str(DISPATCHER_EXE), *subcommand, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"dispatcher {' '.join(subcommand)} --help: {done.stderr}"
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", done.stdout))


def assert_real_dispatcher_command(argv: list[str]) -> None:
    """argv (after the `dispatcher` executable) names a subcommand and its real flags."""
    if argv[:1] == ["serve"]:
        path, rest = argv[:1], argv[1:]
    elif argv[:2] == ["db", "upgrade"]:
        path, rest = argv[:2], argv[2:]
    else:
        raise AssertionError(f"not a dispatcher subcommand: {argv}")
    options = help_options(*path)
    for token in rest:
        if token.startswith("--"):
            flag = token.split("=", 1)[0]
            assert flag in options, f"`dispatcher {' '.join(path)}` has no {flag}: {argv}"


@functools.cache
def dispatcher_env_names() -> frozenset[str]:
    """The variables `Settings.from_env` reads, from the source of dispatcher/config.py."""
    tree = ast.parse((ROOT / "dispatcher" / "config.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "from_env":
            for call in ast.walk(node):
                if (
                    isinstance(call, ast.Call)
                    and call.args
                    and isinstance(call.args[0], ast.Constant)
                    and isinstance(call.args[0].value, str)
                ):
                    names.add(call.args[0].value)
    assert "DISPATCHER_DATABASE_URL" in names, "could not read Settings.from_env"
    return frozenset(names)


def worker_env_names() -> frozenset[str]:
    names = set(WORKER_ENV_NAMES)
    for path in (ROOT / "worker_sdk").rglob("*.py"):
        if "_proto" not in path.parts:
            names |= set(ENV_NAME.findall(path.read_text(encoding="utf-8")))
    return frozenset(names)


def env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=value: {line}"
            values[key.strip()] = value.strip()
    return values


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in dispatcher_env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def systemd_unit(name: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) lists: keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in (SYSTEMD / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{name}: a setting outside any section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{name}: not Key=value: {line}"
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(name: str, section: str, key: str) -> list[str]:
    return [v for k, v in systemd_unit(name).get(section, []) if k == key]


def unit_value(name: str, section: str, key: str) -> str:
    values = unit_values(name, section, key)
    assert len(values) == 1, f"{name}: expected one {key}=, found {values}"
    return values[0]


def seconds(text: str) -> float:
    """A systemd / compose duration such as 30, 30s, 1min or 1m30s, in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip())
    assert parts, f"not a duration: {text}"
    return sum(float(n) * units[u] for n, u in parts)


# --- the Dockerfile --------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        found = [s for s in self.stages if s.name == name]
        assert len(found) == 1, f"no stage {name}"
        return found[0]

    def chain(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, base first."""
        stages = [self.stage(name)]
        names = {s.name for s in self.stages}
        while stages[0].base in names:
            stages.insert(0, self.stage(stages[0].base))
        return stages

    def last(self, name: str, keyword: str) -> str | None:
        """The value of the last `keyword` instruction in effect for stage `name`."""
        values = [v for s in self.chain(name) for k, v in s.instructions if k == keyword]
        return values[-1] if values else None

    def image_of(self, name: str) -> str:
        base = self.chain(name)[0].base
        return re.sub(r"\$\{(\w+)\}", lambda m: self.args[m.group(1)], base)


def instructions(text: str) -> Iterator[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            yield keyword.upper(), " ".join(rest.split())


def dockerfile() -> Dockerfile:
    parsed = Dockerfile(args={}, stages=[])
    for keyword, rest in instructions((DEPLOY / "Dockerfile").read_text(encoding="utf-8")):
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+) AS (\S+)", rest, flags=re.IGNORECASE)
            assert m, f"every stage is named: FROM {rest}"
            parsed.stages.append(Stage(name=m.group(2), base=m.group(1)))
        elif keyword == "ARG" and not parsed.stages:
            name, _, default = rest.partition("=")
            parsed.args[name] = default
        else:
            assert parsed.stages, f"{keyword} before the first FROM"
            parsed.stages[-1].instructions.append((keyword, rest))
    return parsed


def exec_form(value: str | None) -> list[str]:
    assert value is not None
    parsed = json.loads(value)
    assert isinstance(parsed, list)
    return [str(x) for x in parsed]


def copy_sources(stage: Stage) -> list[str]:
    """The build-context paths a stage's COPY instructions read (not --from copies)."""
    sources: list[str] = []
    for keyword, rest in stage.instructions:
        if keyword == "COPY":
            words = rest.split()
            if any(w.startswith("--from=") for w in words):
                continue
            paths = [w for w in words if not w.startswith("--")]
            sources += [p.rstrip("/") for p in paths[:-1]]
    return sources


DEFAULT_TARGET = "dispatcher"


def image_healthcheck() -> list[str]:
    """The command of the server image's HEALTHCHECK (exec form)."""
    healthcheck = dockerfile().last(DEFAULT_TARGET, "HEALTHCHECK")
    assert healthcheck is not None and " CMD " in healthcheck
    return exec_form(healthcheck.split(" CMD ", 1)[1])


def test_the_dockerfile_is_multi_stage_and_the_runtime_takes_the_builders_venv() -> None:
    df = dockerfile()
    names = [s.name for s in df.stages]
    assert len(names) >= 2 and "builder" in names
    assert df.stages[-1].name == DEFAULT_TARGET, "a plain `docker build` makes the server"
    runtime = df.chain(DEFAULT_TARGET)
    assert "builder" not in [s.name for s in runtime]
    copies = [rest for s in runtime for k, rest in s.instructions if k == "COPY"]
    assert any("--from=builder" in c and "/opt/venv" in c for c in copies)
    builder_runs = " ".join(rest for k, rest in df.stage("builder").instructions if k == "RUN")
    assert "pip wheel" in builder_runs and "/opt/venv/bin/pip install" in builder_runs


def test_the_runtime_image_is_python_3_11_slim() -> None:
    df = dockerfile()
    assert df.image_of(DEFAULT_TARGET) == "python:3.11-slim"
    assert df.image_of("builder") == "python:3.11-slim", "the venv must match its interpreter"


def test_the_image_runs_as_a_non_root_user_created_with_that_uid() -> None:
    df = dockerfile()
    for target in [s.name for s in df.stages if s.name != "builder"]:
        user = df.last(target, "USER")
        assert user is not None, f"stage {target} runs as root"
        uid = user.split(":")[0]
        assert uid not in ("0", "root"), f"stage {target} runs as root"
    uid = (df.last(DEFAULT_TARGET, "USER") or "").split(":")[0]
    runs = " ".join(r for s in df.chain(DEFAULT_TARGET) for k, r in s.instructions if k == "RUN")
    assert f"--uid {uid}" in runs, "the USER is created in the image"
    pod = k8s_one("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert str(pod["runAsUser"]) == uid


def test_the_server_image_exposes_50051_and_its_healthcheck_is_the_grpc_probe_it_carries() -> None:
    df = dockerfile()
    assert df.last(DEFAULT_TARGET, "EXPOSE") == str(GRPC_PORT)
    healthcheck = df.last(DEFAULT_TARGET, "HEALTHCHECK") or ""
    assert "--interval=" in healthcheck and "--start-period=" in healthcheck
    probe = image_healthcheck()[0]
    copies = [r for s in df.chain(DEFAULT_TARGET) for k, r in s.instructions if k == "COPY"]
    assert f"deploy/grpc_health_check.py /usr/local/bin/{probe}" in copies


def test_the_server_image_runs_dispatcher_serve_on_all_interfaces() -> None:
    df = dockerfile()
    assert exec_form(df.last(DEFAULT_TARGET, "ENTRYPOINT")) == ["dispatcher"]
    cmd = exec_form(df.last(DEFAULT_TARGET, "CMD"))
    assert cmd[:1] == ["serve"] and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert_real_dispatcher_command(cmd)


def test_the_example_worker_stage_runs_the_example_worker_through_the_sdk() -> None:
    df = dockerfile()
    entrypoint = exec_form(df.last("example-worker", "ENTRYPOINT"))
    cmd = exec_form(df.last("example-worker", "CMD"))
    assert entrypoint + cmd == ["python", "-m", "worker_sdk", "run", EXAMPLE_WORKER_REF]
    assert "examples" in copy_sources(df.stage("example-worker"))


def test_every_path_the_server_image_copies_exists_and_passes_the_dockerignore() -> None:
    df = dockerfile()
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "the context holds only what is let through"
    for stage in [*df.chain(DEFAULT_TARGET), df.stage("builder")]:
        for source in copy_sources(stage):
            assert (ROOT / source).exists(), f"COPY {source}: missing"
            assert source in allowed, f"COPY {source}: excluded by Dockerfile.dockerignore"


def test_the_builder_copies_everything_the_wheel_is_made_of() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", project["project"]["readme"], *wheel["packages"]}
    needed |= set(wheel.get("force-include", {}))
    assert needed <= set(copy_sources(dockerfile().stage("builder")))


# --- the health probe against a real server ----------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEPLOY / "grpc_health_check.py"), "--timeout", "2", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_health_probe_passes_only_on_serving_and_asks_about_the_named_service() -> None:
    health_servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        env = {k: v for k, v in os.environ.items() if k != "DISPATCHER_PORT"}
        env["DISPATCHER_PORT"] = str(port)
        health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert probe(env).returncode == 1
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert probe(env).returncode == 0, "the default address is 127.0.0.1:$DISPATCHER_PORT"
        assert probe(env, "--service", "dispatch.v1.DispatcherService").returncode == 1
        health_servicer.set("dispatch.v1.DispatcherService", health_pb2.HealthCheckResponse.SERVING)
        assert probe(env, "--service", "dispatch.v1.DispatcherService").returncode == 0
    finally:
        server.stop(None)


@pytest.mark.slow
def test_the_image_healthcheck_fails_until_the_image_command_serves_and_after_it_stops(
    tmp_path: Path,
) -> None:
    df = dockerfile()
    argv = exec_form(df.last(DEFAULT_TARGET, "ENTRYPOINT")) + exec_form(
        df.last(DEFAULT_TARGET, "CMD")
    )
    argv[0] = str(BIN / argv[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env |= {
        "DISPATCHER_PORT": str(free_port()),
        "DISPATCHER_DATABASE_URL": f"sqlite:///{tmp_path / 'dispatcher.db'}",
    }
    assert probe(env).returncode == 1, "nothing listens yet"
    log = tmp_path / "dispatcher.log"
    with (
        log.open("wb") as out,
        subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        ) as server,
    ):
        try:
            deadline = time.monotonic() + 60
            while (answer := probe(env)).returncode != 0:
                assert server.poll() is None, log.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, answer.stdout + answer.stderr
                time.sleep(0.2)
            assert "SERVING" in answer.stdout
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=30) == 0, "SIGTERM ends the server cleanly"
    assert probe(env).returncode == 1


# --- YAML, environment variables ---------------------------------------------------------


def test_every_yaml_file_under_deploy_parses_into_mappings() -> None:
    paths = yaml_files()
    assert DEPLOY / "docker-compose.yml" in paths and len(paths) >= 8
    for path in paths:
        with path.open(encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path.name


def test_every_dispatcher_variable_named_anywhere_in_deploy_is_one_that_is_read() -> None:
    known = dispatcher_env_names() | worker_env_names()
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            unknown = set(ENV_NAME.findall(path.read_text(encoding="utf-8"))) - known
            assert not unknown, f"{path.relative_to(ROOT)} names unread variables {unknown}"


def dispatcher_side_env() -> dict[str, set[str]]:
    """Where a dispatcher process gets its environment, and the names each place sets."""
    places: dict[str, set[str]] = {}
    for name, svc in services().items():
        if svc.get("build", {}).get("target") == DEFAULT_TARGET:
            places[f"compose {name}"] = set(svc.get("environment", {}))
    places["k8s ConfigMap"] = set(dispatcher_configmap()["data"])
    places["k8s Secret"] = set(dispatcher_secret()["stringData"])
    for kind in ("Deployment", "Job"):
        for c in k8s_one(kind)["spec"]["template"]["spec"]["containers"]:
            places[f"k8s {kind}"] = {e["name"] for e in c.get("env", [])}
    places["systemd dispatcher.env.example"] = set(env_file(SYSTEMD / "dispatcher.env.example"))
    return places


def test_dispatcher_processes_are_given_only_variables_the_dispatcher_reads() -> None:
    for place, names in dispatcher_side_env().items():
        assert names <= dispatcher_env_names(), f"{place}: {names - dispatcher_env_names()}"


def test_worker_processes_are_given_the_dispatchers_address() -> None:
    compose_env = services()["example-worker"]["environment"]
    unit_env = env_file(SYSTEMD / "worker.env.example")
    for env in (compose_env, unit_env):
        assert set(env) <= worker_env_names()
        assert env["DISPATCHER_ADDRESS"].endswith(f":{GRPC_PORT}")


def test_the_configured_environments_load_into_settings_for_real_backends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    k8s = dispatcher_configmap()["data"] | dispatcher_secret()["stringData"]
    compose_env = services()["dispatcher"]["environment"]
    systemd_env = env_file(SYSTEMD / "dispatcher.env.example")
    for env in (k8s, compose_env, systemd_env):
        s = settings_from({k: str(v) for k, v in env.items()}, monkeypatch)
        assert s.database_url.startswith("postgresql://")
        assert s.redis_url.startswith(("redis://", "rediss://"))
        assert s.auto_migrate is False, "migration is a separate step"
        assert s.port == GRPC_PORT
    assert settings_from(k8s, monkeypatch).host == "0.0.0.0"


# --- docker compose ----------------------------------------------------------------------


def test_compose_services_use_the_dockerfiles_stages_or_pinned_public_images() -> None:
    stages = {s.name for s in dockerfile().stages}
    built: dict[str, str] = {}
    for name, svc in services().items():
        build = svc.get("build")
        if build is not None:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile", name
            assert build["target"] in stages, f"{name}: no stage {build['target']}"
            assert built.setdefault(svc["image"], build["target"]) == build["target"], (
                f"{name}: {svc['image']} is built from two stages"
            )
        else:
            repo, _, tag = svc["image"].partition(":")
            assert repo in PUBLIC_IMAGES, f"{name}: {svc['image']} is neither built nor public"
            assert tag and tag != "latest", f"{name}: pin the tag of {svc['image']}"


def test_compose_dispatcher_publishes_50051_and_checks_grpc_health_there() -> None:
    svc = services()["dispatcher"]
    assert f"{GRPC_PORT}:{GRPC_PORT}" in svc["ports"]
    test = svc["healthcheck"]["test"]
    assert test[:2] == ["CMD", image_healthcheck()[0]], "the probe the image carries"
    assert f":{GRPC_PORT}" in " ".join(test)


def test_compose_commands_are_real_dispatcher_subcommands_with_real_flags() -> None:
    commands = {
        name: svc["command"]
        for name, svc in services().items()
        if svc.get("build", {}).get("target") == DEFAULT_TARGET
    }
    assert commands["migrate"] == ["db", "upgrade"]
    assert commands["dispatcher"][0] == "serve"
    for command in commands.values():
        assert isinstance(command, list), "exec form: no shell between compose and dispatcher"
        assert_real_dispatcher_command(command)
    serve = commands["dispatcher"]
    assert serve[serve.index("--port") + 1] == str(GRPC_PORT)


def test_compose_starts_the_dispatcher_only_after_the_migration_succeeded() -> None:
    svc = services()
    assert svc["dispatcher"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert svc["dispatcher"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert svc["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert svc["migrate"]["restart"] == "no"
    assert (
        svc["migrate"]["environment"]["DISPATCHER_DATABASE_URL"]
        == svc["dispatcher"]["environment"]["DISPATCHER_DATABASE_URL"]
    )


def test_compose_redis_never_evicts_and_keeps_an_append_only_file() -> None:
    command = services()["redis"]["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"


def test_compose_example_worker_runs_the_example_worker_against_the_healthy_dispatcher() -> None:
    svc = services()["example-worker"]
    assert svc["build"]["target"] == "example-worker"
    entrypoint = exec_form(dockerfile().last("example-worker", "ENTRYPOINT"))
    assert entrypoint + svc["command"] == [
        "python",
        "-m",
        "worker_sdk",
        "run",
        EXAMPLE_WORKER_REF,
    ]
    assert svc["environment"]["DISPATCHER_ADDRESS"] == f"dispatcher:{GRPC_PORT}"
    assert svc["depends_on"]["dispatcher"]["condition"] == "service_healthy"


def test_compose_gives_the_dispatcher_more_time_to_stop_than_its_shutdown_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = services()["dispatcher"]
    grace = settings_from(svc["environment"], monkeypatch).shutdown_grace_s
    assert svc["stop_signal"] == "SIGTERM"
    assert seconds(svc["stop_grace_period"]) > grace


# --- Kubernetes --------------------------------------------------------------------------


def test_k8s_has_every_object_the_dispatcher_needs_with_current_api_versions() -> None:
    versions = {o["kind"]: o["apiVersion"] for o in k8s_objects()}
    expected = {
        "Deployment": "apps/v1",
        "Service": "v1",
        "Job": "batch/v1",
        "HorizontalPodAutoscaler": "autoscaling/v2",
        "PodDisruptionBudget": "policy/v1",
        "ConfigMap": "v1",
        "Secret": "v1",
    }
    assert expected.items() <= versions.items()
    for o in k8s_objects():
        assert o["metadata"]["name"] and "namespace" not in o["metadata"]


def test_k8s_probes_are_grpc_on_the_port_the_container_serves() -> None:
    container = deployment_container()
    (port,) = [p for p in container["ports"] if p["name"] == "grpc"]
    assert port["containerPort"] == GRPC_PORT
    assert dispatcher_configmap()["data"]["DISPATCHER_PORT"] == str(GRPC_PORT)
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe_spec = container[kind]
        assert set(probe_spec) & {"httpGet", "tcpSocket", "exec"} == set(), kind
        assert probe_spec["grpc"]["port"] == port["containerPort"], kind
    # The startup probe covers an index rebuild; the liveness probe outlasts a store outage.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_k8s_service_pdb_and_hpa_select_the_deployments_pods() -> None:
    deployment = k8s_one("Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert k8s_one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    target = k8s_one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    service = k8s_one("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    ports_by_name = {p["name"]: p["containerPort"] for p in deployment_container()["ports"]}
    assert ports_by_name[port["targetPort"]] == GRPC_PORT == port["port"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert k8s_one("HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2


def test_k8s_pods_expose_the_metrics_port_the_dispatcher_serves_prometheus_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from(dispatcher_configmap()["data"], monkeypatch)
    assert settings.otel_exporter == "prometheus"
    ports = {p["name"]: p["containerPort"] for p in deployment_container()["ports"]}
    assert ports["metrics"] == settings.prometheus_port != GRPC_PORT
    annotations = k8s_one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.prometheus_port)
    assert {"--otel-exporter", "--prometheus-port"} <= help_options("serve")


def test_k8s_pods_run_as_non_root_with_requests_for_the_autoscaler() -> None:
    for kind in ("Deployment", "Job"):
        pod = k8s_one(kind)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])
            assert "memory" in c["resources"]["limits"]
    metric = k8s_one("HorizontalPodAutoscaler")["spec"]["metrics"][0]["resource"]
    assert metric["name"] == "cpu" and metric["target"]["type"] == "Utilization"


def test_k8s_takes_urls_from_the_secret_and_the_rest_from_the_configmap() -> None:
    secret, configmap = dispatcher_secret(), dispatcher_configmap()
    urls = {"DISPATCHER_DATABASE_URL", "DISPATCHER_REDIS_URL"}
    assert urls <= set(secret["stringData"])
    assert not urls & set(configmap["data"])
    assert all(isinstance(v, str) for v in configmap["data"].values()), "ConfigMap data: strings"
    sources = deployment_container()["envFrom"]
    assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in sources
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in sources


def test_k8s_waits_longer_than_the_prestop_pause_plus_the_shutdown_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pod = k8s_one("Deployment")["spec"]["template"]["spec"]
    grace = settings_from(dispatcher_configmap()["data"], monkeypatch).shutdown_grace_s
    pre_stop = deployment_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + grace


def test_k8s_containers_run_real_dispatcher_subcommands_from_one_image() -> None:
    container = deployment_container()
    assert container["args"] == ["serve"]
    assert_real_dispatcher_command(container["args"])
    job = k8s_one("Job")["spec"]["template"]["spec"]
    (migrate,) = job["containers"]
    assert migrate["args"] == ["db", "upgrade"]
    assert_real_dispatcher_command(migrate["args"])
    assert migrate["image"] == container["image"]
    assert job["restartPolicy"] in ("Never", "OnFailure")
    for env in migrate["env"]:
        ref = env["valueFrom"]["secretKeyRef"]
        assert ref["name"] == dispatcher_secret()["metadata"]["name"]
        assert ref["key"] in dispatcher_secret()["stringData"]
    assert dispatcher_configmap()["data"]["DISPATCHER_AUTO_MIGRATE"] == "0"


# --- Redis -------------------------------------------------------------------------------


def redis_directives(text: str) -> dict[str, str]:
    directives: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            directives[key.lower()] = value.strip()
    return directives


def test_redis_conf_never_evicts_and_the_k8s_redis_config_says_the_same() -> None:
    snippet = redis_directives((DEPLOY / "redis.conf").read_text(encoding="utf-8"))
    assert snippet["maxmemory-policy"] == "noeviction"
    assert snippet["appendonly"] == "yes"
    in_cluster = redis_directives(
        k8s_one("ConfigMap", "dispatcher-redis-config")["data"]["redis.conf"]
    )
    assert snippet.items() <= in_cluster.items()


@pytest.mark.slow
def test_redis_server_accepts_the_redis_conf_snippet(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "redis.log"
    argv = ["redis-server", str(DEPLOY / "redis.conf"), "--port", str(port),
            "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""]  # fmt: skip
    with (
        log.open("wb") as out,
        subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT) as server,
    ):
        try:
            deadline = time.monotonic() + 10
            while True:
                assert server.poll() is None, log.read_text(encoding="utf-8")
                answer = subprocess.run(
                    ["redis-cli", "-p", str(port), "config", "get", "maxmemory-policy"],
                    capture_output=True, text=True, timeout=10, check=False,
                )  # fmt: skip
                if answer.returncode == 0 and "noeviction" in answer.stdout:
                    break
                assert time.monotonic() < deadline, answer.stdout + answer.stderr
                time.sleep(0.1)
        finally:
            server.terminate()
            server.wait(timeout=10)


# --- systemd -----------------------------------------------------------------------------


UNITS = ("dispatcher.service", "worker@.service")


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_restart_on_failure_as_a_dedicated_user_and_stop_with_sigterm(
    unit: str,
) -> None:
    assert unit_value(unit, "Service", "Restart") == "on-failure"
    assert unit_value(unit, "Service", "User") not in ("", "root", "0")
    assert unit_value(unit, "Service", "KillSignal") == "SIGTERM"
    assert unit_values(unit, "Service", "EnvironmentFile")
    assert unit_value(unit, "Install", "WantedBy") == "multi-user.target"


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_wait_longer_than_the_dispatchers_shutdown_grace(
    unit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_file(SYSTEMD / "dispatcher.env.example")
    grace = settings_from(env, monkeypatch).shutdown_grace_s
    assert seconds(unit_value(unit, "Service", "TimeoutStopSec")) > grace


def test_systemd_environment_files_are_the_installed_examples() -> None:
    for unit, example in (
        ("dispatcher.service", "dispatcher.env.example"),
        ("worker@.service", "worker.env.example"),
    ):
        required = [p for p in unit_values(unit, "Service", "EnvironmentFile") if p[0] != "-"]
        assert [Path(p).name for p in required] == [example.removesuffix(".example")]
        assert (SYSTEMD / example).is_file()


def test_the_dispatcher_unit_migrates_then_serves_with_real_subcommands() -> None:
    unit = "dispatcher.service"
    pre = shlex.split(unit_value(unit, "Service", "ExecStartPre"))
    start = shlex.split(unit_value(unit, "Service", "ExecStart"))
    for argv in (pre, start):
        assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "dispatcher"
        assert_real_dispatcher_command(argv[1:])
    assert pre[1:3] == ["db", "upgrade"] and start[1] == "serve"
    assert Path(pre[0]).parent == Path(start[0]).parent


def test_the_worker_unit_is_a_template_running_the_sdk_on_its_instance_name() -> None:
    argv = shlex.split(unit_value("worker@.service", "Service", "ExecStart"))
    assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "python"
    assert argv[1:] == ["-m", "worker_sdk", "run", "%i"]
    start = shlex.split(unit_value("dispatcher.service", "Service", "ExecStart"))
    assert Path(argv[0]).parent == Path(start[0]).parent, "one venv holds both"
    assert (ROOT / "worker_sdk" / "__init__.py").is_file()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "worker_sdk" in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    # A worker reference is a valid instance name as it is (no systemd-escape needed).
    assert re.fullmatch(r"[A-Za-z0-9:_.]+", EXAMPLE_WORKER_REF)


# --- the README ----------------------------------------------------------------------------


def test_the_deploy_readme_explains_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.name != "README.md":
            rel = path.relative_to(DEPLOY).as_posix()
            assert f"`{rel}`" in readme, f"deploy/README.md does not mention {rel}"
