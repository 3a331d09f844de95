"""``celery -A APP flower-ops [flower options]`` and the ``flower-ops`` script.

The Celery command is Flower's own start-up, step for step (its options,
``FLOWER_*`` variables, config file, logging, banner and signal handling come
from ``flower.command`` itself), plus ``install()`` on the built app.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import sys

import click
from celery.bin.base import CeleryCommand
from flower import command as flower_command
from flower.app import Flower
from tornado.options import options

from flower_ops.command_help import write_help_sections
from flower_ops.core.env import ConfigError
from flower_ops.monitor.app import install
from flower_ops.monitor.config import MonitorConfig
from flower_ops.monitor.sources.inspect_log import quiet_inspect_before_workers

logger = logging.getLogger(__name__)
SWITCH_INTERVAL_SECONDS = 0.0005


def load_config_or_exit() -> MonitorConfig:
    try:
        return MonitorConfig.from_env()
    except ConfigError as exc:
        click.echo(f"flower-ops: invalid setting {exc}", err=True)
        sys.exit(2)


class FlowerOpsCommand(CeleryCommand):
    """Celery's command class; its help goes on to list Flower's options, our
    settings and the docs (``command_help.py``)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        write_help_sections(formatter)


@click.command(cls=FlowerOpsCommand, context_settings={"ignore_unknown_options": True})
@click.argument("tornado_argv", nargs=-1, type=click.UNPROCESSED, metavar="[FLOWER OPTIONS]...")
@click.pass_context
def flower_ops(ctx: click.Context, tornado_argv: tuple[str, ...]) -> None:
    """Flower with the Flower Ops monitoring API, live feed and dashboard.

    Stock Flower (its UI, API, auth and /metrics; every Flower option and
    FLOWER_* variable works) plus the REST API under
    /api/automation/monitoring, its live feed, the /monitoring dashboard, task
    cancel / retry and health alerts. PostgreSQL history needs DATABASE_URL and
    a running sync-worker.
    """
    config = load_config_or_exit()
    flower_command.warn_about_celery_args_used_in_flower_command(ctx, tornado_argv)
    flower_command.apply_env_options()
    flower_command.apply_options(sys.argv[0], tornado_argv)
    flower_command.extract_settings()
    flower_command.setup_logging()

    app = ctx.obj.app
    flower_app = Flower(capp=app, options=options, **flower_command.settings)
    ops = install(flower_app, config)
    quiet_inspect_before_workers(flower_app)  # Flower's start-up inspect, before any worker

    atexit.register(flower_app.stop)
    atexit.register(ops.stop)
    signal.signal(signal.SIGTERM, flower_command.sigterm_handler)

    # The IOLoop shares the GIL with Flower's event-receiving thread. Each
    # socket write releases it, and taking it back waits out the other
    # thread's slice: 5 ms by default, so one fan-out to a thousand feed
    # clients could stall requests for seconds. Short slices bound that wait.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    port = flower_app.start_http_server()
    # Other monitors of the group must sign tokens with the same key: said
    # at once (logged and alerted) when they do not
    ops.instances.join(port)
    if not ctx.obj.quiet:
        flower_command.print_banner(app, "ssl_options" in flower_command.settings, port)
        prefix = f"/{options.url_prefix.strip('/')}" if options.url_prefix else ""
        logger.info("Flower Ops API at %s/api/automation/monitoring, dashboard at %s/monitoring",
                    prefix, prefix)
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        flower_app.start()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Flower Ops: job monitoring and management for Celery.

    The monitor itself runs as a Celery command: celery -A APP flower-ops
    (its --help lists Flower's options and every setting with its default);
    the PostgreSQL sync worker is sync-worker. Docs: README.md and docs/.
    """


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
              add_help_option=False)
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Run the embedded demo: Redis, PostgreSQL, workers, beat, sync worker, monitor."""
    from flower_ops.demo.runner import main as run_demo

    sys.exit(run_demo(list(ctx.args)))


@main.command()
def migrate() -> None:
    """Apply the PostgreSQL schema migrations to DATABASE_URL and exit."""
    config = load_config_or_exit()
    if not config.database_url:
        click.echo("flower-ops: invalid setting DATABASE_URL: required for migrate", err=True)
        sys.exit(2)
    from flower_ops.db.migrate import migrate as apply_migrations

    applied = apply_migrations(config.database_url)
    click.echo(f"schema up to date ({applied})")


if __name__ == "__main__":  # pragma: no cover
    main()
