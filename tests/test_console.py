"""The ops console, driven in the real Chromium: several people on one inbox at once.

The console runs under waitress on a free port (in a thread of the test process) on a
fresh queue; each person has their own browser context (own cookies), as on their own
machine. Every check of what happened reads the queue database, not the page.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from test_escalations import escalated_case

from bots.config import Settings, load_settings
from bots.console.server import ConsoleServer
from bots.legacy.browser import find_browser, launch_options
from bots.models import RefundRequest
from bots.queue import CaseState, Queue
from bots.queue.staff import Staff

PW = "a long enough password"
PEOPLE = {"sue": "supervisor", "ana": "agent", "bo": "agent", "vic": "viewer"}
HOSTILE_NAME = "<script>window.__xss = 1</script>"
HOSTILE_TEXT = '"><img src=x onerror="window.__xss = 2"> =HYPERLINK("http://evil.example","x")'


@dataclass
class Console:
    url: str
    queue: Queue
    staff: Staff
    settings: Settings


def make_settings(tmp_path: Path, **console: object) -> Settings:
    return load_settings(None, queue_url=f"sqlite:///{tmp_path / 'q.sqlite'}",
                         runs_dir=str(tmp_path / "runs"),
                         console={"four_eyes_above": "50.00", "login_rate_limit": "200 per minute",
                                  "sla_hours": 4, **console})


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    from paths import ROOT

    monkeypatch.chdir(ROOT)
    settings = make_settings(tmp_path)
    queue = Queue(settings.queue_url)
    staff = Staff.on(queue)
    for name, role in PEOPLE.items():
        staff.add_user(name, role, PW)
    with ConsoleServer(settings, host="127.0.0.1", port=0, secret_key="test-key") as server:
        yield Console(server.url, queue, staff, settings)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(**launch_options(find_browser()))
        try:
            yield b
        finally:
            b.close()


def login(browser: Browser, console: Console, name: str) -> Page:
    page = browser.new_context().new_page()
    page.on("dialog", lambda d: pytest.fail(f"a dialog opened: {d.message}"))
    page.goto(f"{console.url}/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PW)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/inbox"))
    return page


def flash(page: Page) -> str:
    return page.locator(".flash").first.inner_text()


def decide(page: Page, decision: str, amount: str = "", comment: str = "checked") -> str:
    page.check(f"input[name=decision][value={decision}]")
    page.fill("#amount", amount)
    page.fill("#comment", comment)
    page.click("#decide")
    page.wait_for_load_state()
    return flash(page)


def human_decisions(queue: Queue, case_id: int) -> list[tuple[str, str]]:
    return [(a.actor, a.detail) for a in queue.audit_trail(case_id) if a.event == "human_decision"]


@pytest.mark.e2e
def test_a_supervisor_and_two_agents_work_the_inbox_at_once(served: Console,
                                                           browser: Browser) -> None:
    q = served.queue
    big = escalated_case(q, 1)  # the bot proposes 94.97: above the four-eyes 50.00
    small = escalated_case(q, 2, proposed="30.00")
    third = escalated_case(q, 3, proposed="20.00")
    sue, ana, bo = (login(browser, served, n) for n in ("sue", "ana", "bo"))
    assert ana.locator("#inbox tbody tr").count() == 3

    # ana and bo both open the big case; ana claims it; bo's open page is now out of turn
    for page in (ana, bo):
        page.goto(f"{served.url}/cases/{big}")
    ana.click("#claim")
    assert "is yours" in flash(ana) and ana.locator("#assignee").inner_text() == "ana"
    out = decide(bo, "approve")
    assert "claimed by ana" in out
    assert q.get_case(big).state == CaseState.ESCALATED  # type: ignore[union-attr]

    # ana approves: above the limit, it waits for a second person (not ana herself)
    assert "second person" in decide(ana, "approve", comment="customer is right")
    assert ana.locator("#confirm-approve").count() == 0
    assert q.get_case(big).state == CaseState.ESCALATED  # type: ignore[union-attr]
    bo.goto(f"{served.url}/cases/{big}")
    bo.fill("#four-eyes input[name=comment]", "agreed")
    bo.click("#confirm-approve")
    assert "applied" in flash(bo)
    done = q.get_case(big)
    assert done is not None and done.state == CaseState.QUEUED and done.human_agent == "ana"
    assert human_decisions(q, big) == [("ana", "approve by ana: customer is right "
                                                "(second approval: bo)")]

    # two agents decide the same unclaimed case from pages opened at the same moment
    for page in (ana, bo):
        page.goto(f"{served.url}/cases/{small}")
    assert "applied" in decide(ana, "partial", "12.50")
    refused = decide(bo, "reject", comment="no")
    assert "not waiting for a decision" in refused or "claimed by ana" in refused
    assert human_decisions(q, small) == [("ana", "partial by ana (12.50): checked")]

    # a supervisor decides a case claimed by an agent; the viewer can only look
    bo.goto(f"{served.url}/cases/{third}")
    bo.click("#claim")
    sue.goto(f"{served.url}/cases/{third}")
    assert "applied" in decide(sue, "reject", comment="used item")
    assert human_decisions(q, third) == [("sue", "reject by sue: used item")]
    vic = login(browser, served, "vic")
    vic.goto(f"{served.url}/cases/{big}")
    assert vic.locator("#decide").count() == 0 and vic.locator("#claim").count() == 0
    trail = {(a.actor, a.event) for c in (big, small, third) for a in q.audit_trail(c)}
    assert {("ana", "claimed"), ("ana", "four_eyes_requested"), ("bo", "four_eyes_confirmed"),
            ("bo", "claimed"), ("sue", "human_decision")} <= trail


@pytest.mark.e2e
def test_a_stale_decision_is_refused_in_the_console(served: Console, browser: Browser) -> None:
    q = served.queue
    case = escalated_case(q, 1, proposed="20.00")
    ana = login(browser, served, "ana")
    ana.goto(f"{served.url}/cases/{case}")
    # While ana reads, the customer writes again (intake links the contact to the case).
    q.add_request(RefundRequest(
        channel="chat", source_id="chat-77", received_at=datetime.now(UTC),
        reason_text="Actually I found the parcel, no refund needed", order_number="ORD-100001",
        customer_email="c1@example.com"))
    out = decide(ana, "approve")
    assert "changed since you looked" in out
    assert human_decisions(q, case) == []
    ana.reload()
    assert "no refund needed" in ana.locator("#contacts").inner_text()
    assert "applied" in decide(ana, "reject", comment="customer found it")


@pytest.mark.e2e
def test_hostile_customer_text_is_rendered_as_text(served: Console, browser: Browser) -> None:
    q = served.queue
    case = escalated_case(q, 1, name=HOSTILE_NAME)
    q.add_request(RefundRequest(
        channel="portal", source_id="web-1", received_at=datetime.now(UTC),
        reason_text=HOSTILE_TEXT, order_number="ORD-100001", customer_email="c1@example.com",
        customer_name=HOSTILE_TEXT))
    ana = login(browser, served, "ana")
    ana.goto(f"{served.url}/inbox?q=%3Cscript")
    ana.goto(f"{served.url}/inbox")
    assert HOSTILE_NAME in ana.locator("#inbox").inner_text()
    ana.goto(f"{served.url}/cases/{case}")
    assert ana.locator("#customer-name").inner_text() == HOSTILE_NAME
    assert HOSTILE_TEXT in ana.locator("#contacts").inner_text()
    assert ana.locator("img[src=x]").count() == 0 and ana.locator("main script").count() == 0
    assert ana.evaluate("window.__xss") is None
    # and a comment typed by an agent is shown as text in the audit trail too
    decide(ana, "reject", comment=HOSTILE_TEXT)
    assert HOSTILE_TEXT in ana.locator("#audit").inner_text()
    assert ana.evaluate("window.__xss") is None


def test_two_agents_clicking_at_the_same_moment_decide_once(served: Console) -> None:
    """Real concurrent requests (two sessions, two threads) on one unclaimed case."""
    case = escalated_case(served.queue, 1, proposed="20.00")
    clients = [_session(served, name) for name in ("ana", "bo")]
    forms = [_form(c, f"/cases/{case}", "decide-form") for c in clients]
    start = threading.Barrier(2)
    answers: list[str] = []

    def click(client: httpx.Client, form: dict[str, str]) -> None:
        start.wait()
        r = client.post(f"/cases/{case}/decide", data={**form, "decision": "approve",
                                                      "amount": "", "comment": "go"},
                        follow_redirects=True)
        answers.append(r.text)

    threads = [threading.Thread(target=click, args=pair) for pair in zip(clients, forms,
                                                                           strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(human_decisions(served.queue, case)) == 1
    assert sum("approve applied" in a for a in answers) == 1


def test_forms_need_a_csrf_token_and_roles_are_enforced(served: Console) -> None:
    case = escalated_case(served.queue, 1, proposed="20.00")
    ana = _session(served, "ana")
    form = _form(ana, f"/cases/{case}", "decide-form")
    no_token = {k: v for k, v in form.items() if k != "csrf_token"}
    r = ana.post(f"/cases/{case}/decide", data={**no_token, "decision": "approve"})
    assert r.status_code == 400 and human_decisions(served.queue, case) == []
    vic = _session(served, "vic")
    token = _token(vic.get("/inbox").text)
    r = vic.post(f"/cases/{case}/decide", data={"csrf_token": token, "decision": "approve"})
    assert r.status_code == 403
    assert vic.post(f"/cases/{case}/claim", data={"csrf_token": token}).status_code == 403
    r = ana.post(f"/cases/{case}/retry", data={"csrf_token": _token(ana.get("/queue").text)})
    assert r.status_code == 403  # retries are for supervisors
    assert ana.get("/runs/../../etc/files/passwd").status_code == 404
    assert ana.get("/runs/20261201-101010-abcd/files/../q.sqlite").status_code == 404


def test_the_session_cookie_is_httponly_and_samesite(served: Console) -> None:
    client = _session(served, "ana")
    cookie = next(c for c in client.cookies.jar if c.name == "refund_bots_console")
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite") == "Strict"
    headers = client.get("/inbox").headers
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none'
    assert headers["X-Frame-Options"] == "DENY"


def test_login_is_rate_limited_and_says_nothing_about_names(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from paths import ROOT

    monkeypatch.chdir(ROOT)
    settings = make_settings(tmp_path, login_rate_limit="3 per minute")
    Staff.on(Queue(settings.queue_url)).add_user("ana", "agent", PW)
    with ConsoleServer(settings, host="127.0.0.1", port=0, secret_key="k") as server, \
            httpx.Client(base_url=server.url) as client:
        token = _token(client.get("/login").text)
        wrong_name = client.post("/login", data={"csrf_token": token, "username": "nobody",
                                                 "password": PW})
        wrong_pw = client.post("/login", data={"csrf_token": token, "username": "ana",
                                               "password": "nope nope nope"})
        assert wrong_name.status_code == wrong_pw.status_code == 401
        assert _flash(wrong_name.text) == _flash(wrong_pw.text)
        client.post("/login", data={"csrf_token": token, "username": "ana", "password": "x"})
        blocked = client.post("/login", data={"csrf_token": token, "username": "ana",
                                              "password": PW})
        assert blocked.status_code == 429  # even the right password waits now


def test_a_changed_password_ends_open_sessions(served: Console) -> None:
    ana = _session(served, "ana")
    assert ana.get("/inbox").status_code == 200
    served.staff.set_password("ana", PW + "!")
    assert ana.get("/inbox").status_code == 302  # back to the login page


# -- helpers for the raw-HTTP tests ------------------------------------------------------------


def _token(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def _flash(html: str) -> str:
    m = re.search(r'class="flash [a-z]+"[^>]*>([^<]*)<', html)
    return m.group(1) if m else ""


def _session(console: Console, name: str) -> httpx.Client:
    client = httpx.Client(base_url=console.url, timeout=20)
    token = _token(client.get("/login").text)
    r = client.post("/login", data={"csrf_token": token, "username": name, "password": PW})
    assert r.status_code == 302, r.text[:300]
    return client


def _form(client: httpx.Client, path: str, form_id: str) -> dict[str, str]:
    html = client.get(path).text
    m = re.search(rf'<form[^>]*id="{form_id}".*?</form>', html, re.S)
    assert m, html[:1000]
    return {k: v for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"',
                                         m.group(0))}


def test_amounts_shown_are_money() -> None:
    from bots.console.views import FILTERS

    assert FILTERS["amount"](Decimal("1234.5")) == "1,234.50"
