"""docker-compose.yml and the Dockerfile say what SPEC section 10 promises.

No container engine runs here, so these read the files: the six services,
their commands, ports, environment, health checks and start-up order, and the
image's key build steps. The example app the image ships is imported for real.
"""
from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"redis", "postgres", "automation-worker", "automation-scheduler", "celery-monitor",
            "sync-worker"}
APP_SERVICES = SERVICES - {"redis", "postgres"}
ENV_VARS = {"REDIS_URL", "DATABASE_URL", "FLOWER_BASIC_AUTH", "JWT_SECRET"}
SCALE = {"celery-monitor-2", "sync-worker-2", "nginx"}
SCALE_APP_SERVICES = SCALE - {"nginx"}
NGINX_CONF = ROOT / "deploy" / "nginx" / "flower-ops.conf"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def test_compose_runs_exactly_the_six_services(services: dict[str, Any]) -> None:
    """Without a profile: the six of SPEC section 10 (the others are opt-in)."""
    assert {name for name, spec in services.items() if not spec.get("profiles")} == SERVICES


def test_app_services_share_the_image_built_from_the_dockerfile(services: dict[str, Any]) -> None:
    images = {services[name].get("image") for name in APP_SERVICES}
    assert len(images) == 1
    for name in APP_SERVICES:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build["context"]
        assert (ROOT / context / "Dockerfile").exists()


def test_worker_runs_celery_with_concurrency_four(services: dict[str, Any]) -> None:
    assert command_of(services["automation-worker"]) == [
        "celery", "-A", "worker", "worker", "--loglevel=info", "--concurrency=4"]


def test_scheduler_runs_beat(services: dict[str, Any]) -> None:
    command = command_of(services["automation-scheduler"])
    assert command[:4] == ["celery", "-A", "worker", "beat"]


def test_monitor_runs_flower_ops_on_5555_published(services: dict[str, Any]) -> None:
    monitor = services["celery-monitor"]
    command = command_of(monitor)
    assert command[:4] == ["celery", "-A", "worker", "flower-ops"]
    assert "--port=5555" in command
    assert "5555:5555" in [str(port) for port in monitor["ports"]]


def test_monitor_basic_auth_is_required_from_the_environment(services: dict[str, Any]) -> None:
    value = services["celery-monitor"]["environment"]["FLOWER_BASIC_AUTH"]
    # ${VAR:?message}: compose refuses to start rather than publish an open UI
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", value)


def test_sync_worker_runs_the_sync_worker_command(services: dict[str, Any]) -> None:
    assert command_of(services["sync-worker"]) == ["sync-worker"]


def test_app_services_get_the_spec_environment(services: dict[str, Any]) -> None:
    for name in APP_SERVICES | SCALE_APP_SERVICES:
        env = services[name]["environment"]
        assert ENV_VARS <= set(env), name
        assert env["REDIS_URL"].startswith("redis://redis:6379/")
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in env["DATABASE_URL"]


def test_database_url_matches_the_postgres_service(services: dict[str, Any]) -> None:
    pg_env = services["postgres"]["environment"]
    url = services["sync-worker"]["environment"]["DATABASE_URL"]
    assert url.startswith(f"postgresql://{pg_env['POSTGRES_USER']}:")
    assert url.endswith(f"/{pg_env['POSTGRES_DB']}")


@pytest.mark.parametrize("name, probe", [
    ("redis", "redis-cli ping"),
    ("postgres", "pg_isready"),
    ("celery-monitor", "http://127.0.0.1:5555/healthcheck"),
    ("automation-worker", "inspect ping"),
    ("automation-scheduler", "celerybeat.pid"),
    ("sync-worker", "http://127.0.0.1:9808/metrics"),
])
def test_every_service_has_a_health_check(services: dict[str, Any], name: str,
                                          probe: str) -> None:
    assert probe in healthcheck_text(services[name])
    assert services[name]["healthcheck"].get("interval")


def test_services_wait_for_what_they_need(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        assert depends(services[name]).get("redis") == "service_healthy", name
    for name in ("celery-monitor", "sync-worker"):
        assert depends(services[name]).get("postgres") == "service_healthy", name


def test_scheduler_pidfile_matches_its_health_check(services: dict[str, Any]) -> None:
    scheduler = services["automation-scheduler"]
    assert "--pidfile=/tmp/celerybeat.pid" in command_of(scheduler)
    assert "/tmp/celerybeat.pid" in healthcheck_text(scheduler)


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def test_dockerfile_builds_on_python_311_slim_and_installs_the_package() -> None:
    steps = dockerfile_instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = [arg for kw, arg in steps if kw == "RUN"]
    assert any(re.search(r"pip install (/src|\.)(\s|$)", run) for run in runs)
    copies = " ".join(arg for kw, arg in steps if kw == "COPY")
    for needed in ("setup.cfg", "flower_ops", "sync_worker", "deploy/worker.py"):
        assert needed in copies


def test_dockerfile_runs_as_a_non_root_user() -> None:
    steps = dockerfile_instructions()
    users = [arg for kw, arg in steps if kw == "USER"]
    assert users and users[-1] not in {"root", "0"}
    user = users[-1]
    assert any("useradd" in arg and user in arg for kw, arg in steps if kw == "RUN")


def test_dockerfile_puts_the_worker_module_on_the_path_and_exposes_5555() -> None:
    steps = dict(dockerfile_instructions())
    assert "PYTHONPATH=/app" in " ".join(arg for kw, arg in dockerfile_instructions()
                                         if kw == "ENV")
    assert "5555" in steps["EXPOSE"].split()


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".cache", ".git"} <= set(ignored)


def test_example_worker_app_is_instrumented_and_has_a_beat_schedule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never contacted
    spec = importlib.util.spec_from_file_location("deploy_worker", ROOT / "deploy" / "worker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.app
    assert app.conf.worker_send_task_events and app.conf.task_send_sent_event
    assert app.conf.beat_schedule
    for entry in app.conf.beat_schedule.values():
        assert entry["task"] in app.tasks


# -- profile "scale": several monitors as one, behind nginx ---------------------------------


def test_the_scale_profile_adds_nginx_a_second_monitor_and_a_second_sync_worker(
        services: dict[str, Any]) -> None:
    assert {name for name, spec in services.items()
            if "scale" in spec.get("profiles", [])} == SCALE
    assert command_of(services["celery-monitor-2"]) == command_of(services["celery-monitor"])
    assert command_of(services["sync-worker-2"]) == ["sync-worker"]
    assert "ports" not in services["celery-monitor-2"]   # reached through nginx only
    assert services["celery-monitor-2"]["image"] == services["celery-monitor"]["image"]


def test_monitors_share_the_token_key_and_flowers_cookie_secret(
        services: dict[str, Any]) -> None:
    """A token from one monitor must be valid on the other; Flower's OAuth
    login cookie too (the xsrf cookie is checked against itself, not a key)."""
    for name in ("celery-monitor", "celery-monitor-2"):
        env = services[name]["environment"]
        shared = ("FLOWER_OPS_TOKEN_SECRET", "FLOWER_COOKIE_SECRET", "JWT_SECRET")
        # each from the one value in the shell or .env (${NAME:-})
        assert {k: env[k] for k in shared} == {k: "${" + k + ":-}" for k in shared}, name
        assert env["DATABASE_URL"] == services["sync-worker"]["environment"]["DATABASE_URL"]


def test_nginx_serves_the_shipped_config_in_front_of_both_monitors(
        services: dict[str, Any]) -> None:
    nginx = services["nginx"]
    assert "8080:80" in [str(port) for port in nginx["ports"]]
    assert "./deploy/nginx/flower-ops.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert depends(nginx) == {"celery-monitor": "service_healthy",
                              "celery-monitor-2": "service_healthy"}
    assert "/healthcheck" in healthcheck_text(nginx)
    for name in SCALE_APP_SERVICES:
        assert depends(services[name]).get("postgres") == "service_healthy", name
        assert services[name]["healthcheck"].get("interval"), name


def test_the_nginx_config_balances_the_monitors_and_passes_the_feed() -> None:
    text = NGINX_CONF.read_text()
    upstream = re.search(r"upstream flower_ops_monitors \{(.*?)\}", text, re.S)
    assert upstream is not None
    servers = re.findall(r"^\s*server\s+(\S+)", upstream.group(1), re.M)
    assert servers == ["celery-monitor:5555", "celery-monitor-2:5555"]
    assert re.search(r"^\s*# ip_hash;", upstream.group(1), re.M), "sticky: a commented ip_hash"
    for line in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $flower_ops_connection;",
                 "proxy_set_header Host $http_host;",
                 "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                 "proxy_set_header X-Forwarded-Proto $scheme;"):
        assert line in text, line
    # longer than the feed's longest silence (a message at least every 2 s)
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", text)
    assert read_timeout is not None and int(read_timeout.group(1)) > 2 * 2
