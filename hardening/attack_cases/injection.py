"""Script injection: tasks whose every field carries markup, shown in the
``/monitoring`` page in a real headless Chromium.

Each payload sets ``window.__pwned`` to its own tag when it runs. The page is
visited twice: as served (with its Content-Security-Policy), and with the CSP
bypassed, so that escaping alone is tested — with the CSP on, a payload that
reached the DOM as markup would be blocked and only show up as a CSP
violation, which is counted as a failure too. A canary case proves the
detectors see a payload that does get in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .base import API, BASIC_AUTH, READ, Check, Target, all_of, bearer, case, http, json_error

G = "injection"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def combo(tag: str) -> str:
    """One string that breaks out of text, attribute and script contexts alike."""
    return (f"\"'><script>window.__pwned='{tag}'</script><img src=x "
            f"onerror=window.__pwned='{tag}'><svg onload=window.__pwned='{tag}'>")


def payloads(tag: str) -> list[str]:
    return [
        f"<script>window.__pwned='{tag}'</script>",
        f"<img src=x onerror=window.__pwned='{tag}'>",
        f"\"><svg onload=window.__pwned='{tag}'>",
        f"javascript:window.__pwned='{tag}'//",
        f"'-(window.__pwned='{tag}')-'",
        f"</pre><iframe srcdoc=\"<script>parent.__pwned='{tag}'</script>\"></iframe>",
        "{{ 7*7 }}{% raw %}${7*7}",
        f"<img src=x onerror=alert('{tag}')>",
    ]


EVIL_HOSTNAME = combo("hostname").replace("@", "") + "@evil"
EVIL_QUEUE = "q" + combo("queue").replace(",", "")
TASK_ID = combo("id")
TASK_NAME = combo("name")
FILTER_TEXT = combo("filter")


@dataclass
class Injected:
    key: str
    task_id: str
    state: str
    texts: list[str]  # what the details view must show, as text


def inject(t: Target) -> dict[str, Injected]:
    """Submit the payload tasks once; wait until the monitor has their final state."""
    def make() -> dict[str, Injected]:
        from testing.apps import automation

        app = t.app
        echo_args = payloads("args")
        echo_kwargs = {p: v for p, v in zip(payloads("kwarg-key"), payloads("kwargs"))}
        jobs = {
            "args": (automation.echo.apply_async(args=echo_args, kwargs=echo_kwargs),
                     "SUCCESS", echo_args[:2] + payloads("kwargs")[:2]),
            "exception": (automation.fail.apply_async(args=["".join(payloads("exception"))]),
                          "FAILURE", payloads("exception")[:3]),
            "name": (app.send_task(TASK_NAME, args=payloads("name-args")[:2]), "FAILURE",
                     [TASK_NAME]),
            "id": (automation.echo.apply_async(args=["id"], task_id=TASK_ID), "SUCCESS",
                   [TASK_ID]),
            "queue": (automation.echo.apply_async(args=["queue"], queue=EVIL_QUEUE,
                                                  routing_key=EVIL_QUEUE),
                      "SUCCESS", [EVIL_QUEUE, EVIL_HOSTNAME]),
        }
        token = t.local_token(READ)
        found: dict[str, Injected] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(found) < len(jobs):
            for key, (result, state, texts) in jobs.items():
                if key in found:
                    continue
                from urllib.parse import quote

                response = http("GET", t.api(f"/tasks/{quote(result.id, safe='')}"),
                                headers=bearer(token))
                if response.status_code == 200 and response.json().get("state") == state:
                    found[key] = Injected(key, result.id, state, texts)
            time.sleep(0.3)
        missing = sorted(set(jobs) - set(found))
        if missing:
            raise AssertionError(f"payload tasks never reached their state: {missing}")
        return found
    return t.once("injected", make)  # type: ignore[no-any-return]


# -- the browser session ------------------------------------------------------------------

INIT_SCRIPT = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  (window.top.__violations || window.__violations).push(e.violatedDirective + ' ' + e.blockedURI);
});
"""

INSPECT = """
() => {
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    for (const a of Array.from(el.attributes)) {
      const name = a.name.toLowerCase();
      if (name.startsWith('on')) bad.push(el.tagName + '[' + name + ']');
      if (['href', 'src', 'action', 'formaction', 'xlink:href'].includes(name)
          && /^\\s*javascript:/i.test(a.value)) bad.push(el.tagName + '[' + name + '=javascript:]');
    }
    if (el.tagName === 'IFRAME' || (el.tagName === 'SCRIPT' && !el.src)
        || (el.tagName === 'IMG' && el.getAttribute('src') === 'x')) bad.push(el.tagName);
  }
  return {pwned: window.__pwned === undefined ? null : String(window.__pwned),
          violations: (window.__violations || []).slice(), bad: bad};
}
"""


@dataclass
class Step:
    """What one view of the page showed: new executions, markup, CSP reports."""

    name: str
    pwned: str | None
    dialogs: list[str]
    bad: list[str]
    violations: list[str]
    missing_text: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.pwned is None and not self.dialogs and not self.bad and not self.violations \
            and not self.missing_text

    def describe(self) -> str:
        if self.clean:
            return "no execution, no markup, no CSP report, shown as text"
        parts = []
        if self.pwned:
            parts.append(f"EXECUTED __pwned={self.pwned}")
        if self.dialogs:
            parts.append(f"dialogs {self.dialogs}")
        if self.bad:
            parts.append(f"markup in DOM {sorted(set(self.bad))[:4]}")
        if self.violations:
            parts.append(f"CSP reports {self.violations[:2]}")
        if self.missing_text:
            parts.append(f"text not shown {[m[:30] for m in self.missing_text]}")
        return "; ".join(parts)


def browser(t: Target) -> Any:
    def make() -> Any:
        from playwright.sync_api import sync_playwright

        manager = sync_playwright()
        playwright = manager.start()
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                              headless=True)

        def close() -> None:
            instance.close()
            manager.__exit__(None, None, None)
        t.cleanups.append(close)
        return instance
    return t.once("browser", make)


def browse(t: Target, *, bypass_csp: bool) -> dict[str, Step]:
    """Every view of every payload task, in one page; cached per CSP mode."""
    return t.once(f"browse:{bypass_csp}", lambda: _browse(t, bypass_csp))  # type: ignore[no-any-return]


def _browse(t: Target, bypass_csp: bool) -> dict[str, Step]:
    injected = inject(t)
    context = browser(t).new_context(
        http_credentials={"username": BASIC_AUTH[0], "password": BASIC_AUTH[1]},
        bypass_csp=bypass_csp)
    try:
        context.add_init_script(INIT_SCRIPT)
        page = context.new_page()
        page.set_default_timeout(30_000)
        dialogs: list[str] = []

        def on_dialog(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()
        page.on("dialog", on_dialog)
        steps: dict[str, Step] = {}
        seen = {"bad": 0, "violations": 0, "dialogs": 0}

        def record(name: str, texts: list[str], scope: str = "#fo-app") -> None:
            page.wait_for_timeout(400)  # img onerror fires after a failed load
            state = page.evaluate(INSPECT)
            shown = page.evaluate("s => (document.querySelector(s) || {}).textContent || ''",
                                  scope)
            steps[name] = Step(
                name=name, pwned=state["pwned"], dialogs=dialogs[seen["dialogs"]:],
                bad=state["bad"][seen["bad"]:] if len(state["bad"]) > seen["bad"] else [],
                violations=state["violations"][seen["violations"]:],
                missing_text=[x for x in texts if x not in shown])
            seen.update(bad=len(state["bad"]), violations=len(state["violations"]),
                        dialogs=len(dialogs))

        page.goto(f"{t.rsa.base_url}/monitoring")
        page.wait_for_selector('#fo-conn[data-state="live"]')
        ids = [i.task_id for i in injected.values()]
        page.wait_for_function(
            """ids => ids.every(id => Array.from(document.querySelectorAll('#fo-tasks tr'))
                 .some(tr => tr.getAttribute('data-task-id') === id))""", arg=ids)
        page.wait_for_function(
            """([host, queue]) => Array.from(document.querySelectorAll('[data-worker]'))
                 .some(e => e.getAttribute('data-worker') === host)
               && Array.from(document.querySelectorAll('[data-queue]'))
                 .some(e => e.getAttribute('data-queue') === queue)""",
            arg=[EVIL_HOSTNAME, EVIL_QUEUE])
        # (the grid shows ids short, the task page in full: checked there)
        record("grid", [payloads("args")[0], TASK_NAME, EVIL_HOSTNAME, EVIL_QUEUE])
        for key, task in injected.items():
            # the row's Details link opens the task's own page (/monitoring/tasks/{id})
            page.evaluate("""id => Array.from(document.querySelectorAll('#fo-tasks tr'))
                .find(tr => tr.getAttribute('data-task-id') === id)
                .querySelector('[data-action="details"]').click()""", task.task_id)
            page.wait_for_function(
                """id => { const f = document.querySelector('#fo-details [data-field="id"]');
                           return f && f.textContent === id; }""", arg=task.task_id)
            record(f"details:{key}", task.texts, "#fo-details")
            page.go_back()
            page.wait_for_function(
                """id => Array.from(document.querySelectorAll('#fo-tasks tr'))
                     .some(tr => tr.getAttribute('data-task-id') === id)""", arg=task.task_id)
        # the task browser's name filter, echoed in the URL, the summary and the feed
        page.goto(f"{t.rsa.base_url}/monitoring/tasks")
        page.fill("#fo-f-name", FILTER_TEXT)
        page.click('#fo-browse-form button[type="submit"]')
        page.wait_for_timeout(1500)
        record("filter", [])
        page.click('#fo-browse-form button[type="reset"]')
        return steps
    finally:
        context.close()


def views(t: Target, *names: str) -> Check:
    checks = []
    for bypass in (False, True):
        steps = browse(t, bypass_csp=bypass)
        mode = "CSP bypassed" if bypass else "with CSP"
        for name in names:
            step = steps[name]
            checks.append(Check("no execution, no markup, no CSP report, shown as text",
                                f"{name} ({mode}): {step.describe()}", step.clean))
    return all_of(*checks)


# -- cases ------------------------------------------------------------------------------------


@case(G, "control: the detectors catch a payload that gets in (canary)")
def canary(t: Target) -> Check:
    checks = []
    for bypass in (True, False):
        context = browser(t).new_context(
            http_credentials={"username": BASIC_AUTH[0], "password": BASIC_AUTH[1]},
            bypass_csp=bypass)
        try:
            context.add_init_script(INIT_SCRIPT)
            page = context.new_page()
            page.goto(f"{t.rsa.base_url}/monitoring")
            page.evaluate("""() => document.getElementById('fo-app').insertAdjacentHTML(
                'beforeend', '<img src=x onerror="window.__pwned=\\'canary\\'">')""")
            page.wait_for_timeout(800)
            state = page.evaluate(INSPECT)
        finally:
            context.close()
        if bypass:
            checks.append(Check("without CSP: canary runs and its markup is seen",
                                f"__pwned={state['pwned']}, markup={state['bad'][:2]}",
                                state["pwned"] == "canary" and bool(state["bad"])))
        else:
            checks.append(Check("with CSP: canary blocked and reported",
                                f"__pwned={state['pwned']}, CSP reports={state['violations'][:1]}",
                                state["pwned"] is None and bool(state["violations"])))
    return all_of(*checks)


@case(G, "task args, kwargs (keys too) and result: grid and details")
def args_kwargs_result(t: Target) -> Check:
    return views(t, "grid", "details:args")


@case(G, "exception message and traceback: details")
def exception_traceback(t: Target) -> Check:
    return views(t, "details:exception")


@case(G, "task name (send_task to an unregistered name): grid, names list, details")
def task_name(t: Target) -> Check:
    return views(t, "grid", "details:name")


@case(G, "task id: row attribute, action URLs, details")
def task_id(t: Target) -> Check:
    return views(t, "grid", "details:id")


@case(G, "worker hostname and queue/routing key: worker card, queue table, details")
def worker_and_queue(t: Target) -> Check:
    return views(t, "grid", "details:queue")


@case(G, "markup typed into the task-name filter (echoed back by the feed)")
def filter_input(t: Target) -> Check:
    return views(t, "filter")


@case(G, "/monitoring headers: CSP without unsafe-inline/eval, nosniff, framing denied")
def page_headers(t: Target) -> Check:
    response = http("GET", f"{t.rsa.base_url}/monitoring", auth=t.rsa.basic_auth)
    csp = response.headers.get("Content-Security-Policy", "")
    directives = {d.strip().split(" ")[0]: d.strip() for d in csp.split(";") if d.strip()}
    script = directives.get("script-src", directives.get("default-src", ""))
    problems = []
    if response.status_code != 200:
        problems.append(f"status {response.status_code}")
    if not csp:
        problems.append("no CSP")
    if "'unsafe-inline'" in script or "'unsafe-eval'" in script or "*" in script.split():
        problems.append(f"script-src {script!r}")
    if directives.get("object-src") != "object-src 'none'":
        problems.append("object-src not 'none'")
    if "frame-ancestors" not in directives and not response.headers.get("X-Frame-Options"):
        problems.append("framing allowed")
    if response.headers.get("X-Content-Type-Options") != "nosniff":
        problems.append("no X-Content-Type-Options: nosniff")
    return Check("CSP script-src 'self', object-src 'none', frame-ancestors, nosniff",
                 "; ".join(problems) or f"ok ({script})", not problems)


@case(G, "API answers carrying payloads are JSON with nosniff and '</' escaped")
def api_json(t: Target) -> Check:
    injected = inject(t)
    token = t.local_token(READ)
    checks = []
    for path in (f"/tasks/{injected['args'].task_id}", "/tasks?limit=20", "/workers",
                 "/queues"):
        response = http("GET", t.api(path), headers=bearer(token))
        raw = response.text
        ok = response.status_code == 200 and response.headers.get(
            "Content-Type", "").startswith("application/json") and response.headers.get(
            "X-Content-Type-Options") == "nosniff" and "</script" not in raw.lower()
        checks.append(Check("application/json, nosniff, no raw '</script'",
                            f"{path}: {response.status_code} "
                            f"{response.headers.get('Content-Type')} "
                            f"nosniff={response.headers.get('X-Content-Type-Options')} "
                            f"raw</script={'</script' in raw.lower()}", ok))
    return all_of(*checks)


@case(G, "a payload in an unknown API path comes back as a JSON 404, never HTML")
def path_payload(t: Target) -> Check:
    response = http("GET", f"{t.rsa.base_url}{API}/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
                    headers=bearer(t.local_token(READ)))
    check = json_error(response, 404)
    nosniff = response.headers.get("X-Content-Type-Options") == "nosniff"
    return Check(check.expected + ", nosniff", f"{check.observed} nosniff={nosniff}",
                 check.ok and nosniff and "<script" not in response.text)


STUCK_ID = combo("stuck-id")
TASKS_TABLE_FILLED = "() => document.querySelectorAll('#tasks-table tbody tr').length > 1"
# Markup only a payload would have put there (Flower's own pages have inline
# handlers of their own, so INSPECT's generic list does not apply to them)
PAYLOAD_MARKUP = """
() => Array.from(document.querySelectorAll('img[src="x"], svg[onload], iframe[srcdoc], script'))
  .filter(e => e.tagName !== 'SCRIPT' || (e.textContent || '').includes('__pwned'))
  .map(e => e.tagName)
"""


def visit(t: Target, url: str, *, bypass_csp: bool, ready: str | None = None,
          ready_arg: Any = None, texts: tuple[str, ...] = (), scope: str = "body",
          generic: bool = True) -> Step:
    """Load one page and report what the payloads did there."""
    context = browser(t).new_context(
        http_credentials={"username": BASIC_AUTH[0], "password": BASIC_AUTH[1]},
        bypass_csp=bypass_csp)
    try:
        context.add_init_script(INIT_SCRIPT)
        page = context.new_page()
        page.set_default_timeout(30_000)
        dialogs: list[str] = []

        def on_dialog(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()
        page.on("dialog", on_dialog)
        page.goto(url)
        if ready:
            page.wait_for_function(ready, arg=ready_arg)
        page.wait_for_timeout(1000)  # img onerror fires after a failed load
        state = page.evaluate(INSPECT)
        markup = page.evaluate(PAYLOAD_MARKUP)
        shown = page.evaluate("s => (document.querySelector(s) || {}).textContent || ''", scope)
        return Step(name=url, pwned=state["pwned"], dialogs=dialogs,
                    bad=state["bad"] if generic else markup,
                    violations=state["violations"],
                    missing_text=[x for x in texts if x not in shown])
    finally:
        context.close()


@case(G, "health alert banner naming a stuck task (payload id) on a payload worker")
def alert_banner(t: Target) -> Check:
    from testing.apps import automation

    inject(t)  # the payload worker's queue is free once these are done
    automation.sleep.apply_async(args=[15], task_id=STUCK_ID, queue=EVIL_QUEUE,
                                 routing_key=EVIL_QUEUE)
    ready = "id => (document.getElementById('fo-alerts').textContent || '').includes(id)"
    checks = []
    try:
        for bypass in (False, True):
            step = visit(t, f"{t.rsa.base_url}/monitoring", bypass_csp=bypass, ready=ready,
                         ready_arg=STUCK_ID, texts=(STUCK_ID, EVIL_HOSTNAME), scope="#fo-alerts")
            mode = "CSP bypassed" if bypass else "with CSP"
            checks.append(Check("no execution, no markup, no CSP report, shown as text",
                                f"alerts ({mode}): {step.describe()}", step.clean))
    finally:  # free the payload worker (a warm shutdown would wait for the sleep)
        from urllib.parse import quote

        http("POST", t.api(f"/tasks/{quote(STUCK_ID, safe='')}/cancel"),
             headers=bearer(t.local_token()), json={})
    return all_of(*checks)


@case(G, "Flower's own pages with the same payloads (same origin: an XSS there could "
         "mint a token)", slow=True)
def flower_pages(t: Target) -> Check:
    from urllib.parse import quote

    injected = inject(t)
    base = t.rsa.base_url
    pages = {
        "task page": (f"{base}/task/{quote(injected['args'].task_id, safe='')}", None),
        "task page (payload id)": (f"{base}/task/{quote(TASK_ID, safe='')}", None),
        "task page (exception)": (f"{base}/task/{quote(injected['exception'].task_id, safe='')}",
                                  None),
        "task page (payload name)": (f"{base}/task/{quote(injected['name'].task_id, safe='')}",
                                     None),
        "tasks list": (f"{base}/tasks", TASKS_TABLE_FILLED),
        "workers": (f"{base}/workers", None),
        "worker page": (f"{base}/worker/{quote(EVIL_HOSTNAME, safe='')}", None),
        "broker": (f"{base}/broker", None),
    }
    checks = []
    for name, (url, ready) in pages.items():
        step = visit(t, url, bypass_csp=True, ready=ready, generic=False)
        checks.append(Check("no execution, no payload markup", f"{name}: {step.describe()}",
                            step.pwned is None and not step.dialogs and not step.bad))
    return all_of(*checks)


@case(G, "a forged Host header cannot add directives to the page's CSP")
def host_header_csp(t: Target) -> Check:
    import base64

    from .base import raw_http, request_bytes

    credentials = base64.b64encode(":".join(BASIC_AUTH).encode()).decode()
    request = request_bytes("GET", "/monitoring", t.rsa.port,
                            headers={"Authorization": f"Basic {credentials}"})
    forged = request.replace(f"Host: 127.0.0.1:{t.rsa.port}".encode(),
                             b"Host: x; script-src * 'unsafe-inline'")
    response = raw_http(t.rsa.port, forged)
    csp = next((line.split(":", 1)[1].strip() for line in response.head.split("\r\n")
                if line.lower().startswith("content-security-policy:")), "")
    script = [d.strip() for d in csp.split(";") if d.strip().startswith("script-src")]
    ok = response.status is None or response.status >= 400 or \
        (script == ["script-src 'self'"] and "'unsafe-inline'" not in csp)
    return Check("refused, or CSP still script-src 'self' only",
                 f"{response.status}: script-src {script}", ok)
