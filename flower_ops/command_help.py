"""What ``celery -A APP flower-ops --help`` says after its usage line.

Flower's own ``--help`` lists none of its options: they are tornado options,
parsed after click has handed over the rest of the command line. Ours lists
them, read from tornado's registry (so exactly the options this Flower
accepts, with their defaults), then every environment variable the monitor
reads (``monitor/settings_help.py``) and where the documentation is.
"""
from __future__ import annotations

from typing import Any

import click
import flower.options  # noqa: F401 - defines Flower's options in tornado's registry
from tornado.options import options

from flower_ops.monitor.settings_help import DOCS, MONITOR_SETTINGS

# a default that is different on every start says so instead of showing one
_SHOWN_DEFAULTS = {"cookie-secret": "random on every start"}
_METAVARS: dict[type, str] = {int: "INT", float: "NUMBER", str: "TEXT"}


def _default_text(name: str, option: Any) -> str:
    if name in _SHOWN_DEFAULTS:
        return _SHOWN_DEFAULTS[name]
    default = option.default
    if default is None or default in ("", []):
        return ""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, list):
        return ",".join(str(item) for item in default)
    return str(default)


def _option_rows(source_suffix: str) -> list[tuple[str, str]]:
    """(``--name=METAVAR``, help with default) of the tornado options defined
    in the module whose path ends with ``source_suffix``."""
    rows = []
    for name, option in sorted(options._options.items()):
        group = (option.group_name or "").replace("\\", "/")
        if not group.endswith(source_suffix):
            continue
        metavar = option.metavar or _METAVARS.get(option.type, "")
        if option.multiple and metavar:
            metavar = f"{metavar}[,{metavar}...]"
        flag = f"--{name}" if option.type is bool or not metavar else f"--{name}={metavar}"
        default = _default_text(name, option)
        text = option.help or ""
        rows.append((flag, f"{text} (default: {default})" if default else text))
    return rows


def write_help_sections(formatter: click.HelpFormatter) -> None:
    """Flower's options, tornado's logging options, our settings, the docs."""
    with formatter.section("Flower options (or FLOWER_<NAME> variables, or a --conf file)"):
        formatter.write_dl(_option_rows("flower/options.py"))
    with formatter.section("Logging options (tornado)"):
        formatter.write_dl(_option_rows("tornado/log.py"))
    with formatter.section("Flower Ops settings (environment variables; a bad value stops "
                           "start-up)"):
        formatter.write_dl([(setting.name, f"{setting.meaning} (default: {setting.default})")
                            for setting in MONITOR_SETTINGS])
    with formatter.section("Documentation"):
        formatter.write_dl(list(DOCS))
