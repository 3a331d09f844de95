"""The ``/monitoring`` page, in Flower's own look, and its navbar entry.

Flower's templates are not copied. Tornado resolves every template of an
application through one loader (``settings['template_loader']``), and Flower
renders its navbar with ``{% module Template("navbar.html", ...) %}`` on every
page. So ``part()`` installs ``FlowerOpsTemplateLoader``: Flower's own
directory loader, which (1) serves our page template, which ``{% extends
"base.html" %}`` from Flower, and (2) adds a "Monitoring" item to
``navbar.html`` as it is loaded. If Flower's markup ever changes so the item
cannot be placed, the navbar is served untouched and a warning is logged:
Flower keeps working, the page stays reachable at ``/monitoring``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tornado.escape
import tornado.template
import tornado.web
from flower.views import BaseHandler as FlowerBaseHandler

from flower_ops.core import lifecycle
from flower_ops.monitor.http.base import API_BASE, HttpPart

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[2]   # flower_ops/
TEMPLATE_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"
PAGE_TEMPLATE = "flower-ops-monitoring.html"
OUR_TEMPLATES = {PAGE_TEMPLATE: "monitoring.html"}
PAGE_PATH = "/monitoring"
STATIC_PATH = "/monitoring/static"
# The console's client-side routes: the server answers each with the same page
VIEW_PATHS = (f"{PAGE_PATH}/?", f"{PAGE_PATH}/(?:tasks|workers|queues|names|workflows)/?",
              f"{PAGE_PATH}/(?:tasks|workflows)/[^/]+/?")
# Loaded in this order: the core first, the router (monitoring.js) last
SCRIPTS = ("vendor/uplot/uPlot.iife.min.js", "console/core.js", "console/feed.js",
           "console/actions.js", "console/rows.js", "console/overview.js",
           "console/browser.js", "console/taskpage.js", "console/charts.js",
           "console/fleet.js", "console/workflows.js", "console/workflow.js",
           "console/workflow_panel.js", "console/workflow_actions.js", "monitoring.js")
# The lifecycle the page's script works with, from the one definition
LIFECYCLE_JSON = json.dumps(lifecycle.as_json(), separators=(",", ":"))

# The first list of nav links in Flower's navbar; the entry goes at its end.
_NAV_LIST = re.compile(r'<ul\b[^>]*\bclass="[^"]*\bnavbar-nav\b[^"]*"[^>]*>')
_ENTRY = """
        <li class="nav-item" data-flower-ops-nav>
          <a class="nav-link{% if globals().get('active_tab') == 'monitoring' %} active{% end %}"
            href="%(href)s"
            {% if globals().get('active_tab') == 'monitoring' %}aria-current="page"{% end %}
            >Monitoring</a>
        </li>
"""


def inject_nav_entry(source: str, href: str) -> str | None:
    """Flower's navbar source with our entry, or None when its markup is not recognised."""
    match = _NAV_LIST.search(source)
    if match is None:
        return None
    end = source.find("</ul>", match.end())
    if end < 0:
        return None
    entry = _ENTRY.replace("%(href)s", tornado.escape.xhtml_escape(href))
    return source[:end] + entry + source[end:]


class FlowerOpsTemplateLoader(tornado.template.Loader):
    """Flower's template directory, plus our page and the navbar entry."""

    def __init__(self, root_directory: str, *, monitoring_href: str, **kwargs: Any) -> None:
        super().__init__(root_directory, **kwargs)
        self.monitoring_href = monitoring_href
        self.navbar_patched = False

    def _create_template(self, name: str) -> tornado.template.Template:
        ours = OUR_TEMPLATES.get(name)
        if ours is not None:
            source = (TEMPLATE_DIR / ours).read_bytes()
            return tornado.template.Template(source, name=name, loader=self)
        if name == "navbar.html":
            patched = self._patched_navbar(name)
            if patched is not None:
                return patched
        return super()._create_template(name)

    def _patched_navbar(self, name: str) -> tornado.template.Template | None:
        try:
            source = Path(self.root, name).read_text(encoding="utf-8")
            injected = inject_nav_entry(source, self.monitoring_href)
            if injected is None:
                logger.warning("Flower's navbar.html has no navbar-nav list; the Monitoring "
                               "link is not shown (the page is at %s)", self.monitoring_href)
                return None
            template = tornado.template.Template(injected, name=name, loader=self)
        except Exception:  # never break Flower's pages over our link
            logger.exception("could not add the Monitoring link to Flower's navbar")
            return None
        self.navbar_patched = True
        return template


def install_template_loader(settings: dict[str, Any], *,
                            monitoring_href: str) -> FlowerOpsTemplateLoader:
    """Make Flower's application render through our loader (see the module doc)."""
    existing = settings.get("template_loader")
    if isinstance(existing, FlowerOpsTemplateLoader):
        return existing
    template_path = settings.get("template_path")
    if not template_path:
        raise RuntimeError("Flower application has no template_path")
    kwargs: dict[str, Any] = {}
    if "autoescape" in settings:
        kwargs["autoescape"] = settings["autoescape"]
    if "template_whitespace" in settings:
        kwargs["whitespace"] = settings["template_whitespace"]
    loader = FlowerOpsTemplateLoader(template_path, monitoring_href=monitoring_href, **kwargs)
    settings["template_loader"] = loader
    # Tornado caches one loader per template path for all handlers; replace a
    # loader made before install() so every page gets the entry.
    with tornado.web.RequestHandler._template_loader_lock:
        tornado.web.RequestHandler._template_loaders[template_path] = loader
    return loader


def _content_security_policy(host: str) -> str:
    # Flower's base.html has no inline script or style, so the page can forbid
    # both: even a rendering bug could not run script carried by task data.
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        f"connect-src 'self' ws://{host} wss://{host}",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'self'",
    ])


class MonitoringPage(FlowerBaseHandler):
    """``/monitoring``: behind Flower's own auth (basic auth or OAuth)."""

    def initialize(self, *, api_base: str, static_base: str, page_base: str,
                   flower_base: str, snapshot_seconds: float) -> None:
        self.api_base = api_base
        self.static_base = static_base
        self.page_base = page_base
        self.flower_base = flower_base
        self.snapshot_seconds = snapshot_seconds

    @tornado.web.authenticated
    def get(self) -> None:
        self.set_header("Content-Security-Policy", _content_security_policy(self.request.host))
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("X-Frame-Options", "SAMEORIGIN")
        self.set_header("Cache-Control", "no-store")
        self.render(PAGE_TEMPLATE, active_tab="monitoring",
                    ops_static=self._static, api_base=self.api_base,
                    page_base=self.page_base, flower_base=self.flower_base, scripts=SCRIPTS,
                    snapshot_seconds=self.snapshot_seconds, lifecycle_json=LIFECYCLE_JSON,
                    lifecycle_states=lifecycle.TASK_STATES)

    def _static(self, name: str) -> str:
        return f"{self.static_base}/{name}?v={_version(name)}"


class MonitoringStatic(tornado.web.StaticFileHandler):
    def initialize(self) -> None:  # type: ignore[override]
        super().initialize(path=str(STATIC_DIR))

    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")


_versions: dict[str, str] = {}


def _version(name: str) -> str:
    version = _versions.get(name)
    if version is None:
        path = STATIC_DIR / name
        data = path.read_bytes() if path.is_file() else b""
        version = _versions[name] = hashlib.sha256(data).hexdigest()[:12]
    return version


def part(*, settings: dict[str, Any], prefixed: Callable[[str], str],
         snapshot_seconds: float) -> HttpPart:
    """The page and its static files; Flower's navbar gains the entry."""
    install_template_loader(settings, monitoring_href=prefixed(PAGE_PATH))
    page = {"api_base": prefixed(API_BASE), "static_base": prefixed(STATIC_PATH),
            "page_base": prefixed(PAGE_PATH), "flower_base": prefixed(""),
            "snapshot_seconds": snapshot_seconds}
    return HttpPart(routes=[
        (f"{STATIC_PATH}/(.*)", MonitoringStatic, {}),
        *[(path, MonitoringPage, page) for path in VIEW_PATHS],
    ])


__all__ = ["FlowerOpsTemplateLoader", "MonitoringPage", "inject_nav_entry", "part"]
