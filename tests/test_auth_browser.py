"""Sign-in end to end: the real app in headless Chromium against a real OpenID Connect provider.

The provider (the ``oidc-provider-mock`` package) runs in this process on a local port with two users:
Alice, whose domain is on the app's allow-list, and Mallory, whose is not. The app is started as
`make run` starts it, with a secrets file (given through STREAMLIT_SECRETS_FILES) that configures
sign-in and an audit log file. What an unauthenticated browser receives is checked on the websocket
itself, not only on the screen. The tests run in order: the first one is the first request the fresh
server gets, the last one stops the provider.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from oidc_provider_mock import User, run_server_in_thread
from streamlit.web.server.starlette.starlette_app_utils import create_signed_value

from browser_support import MODEL_READY, free_port, needs_chromium, running_app, screenshot, set_note, settle
from cbert_core.text.examples import DEFAULT_EXAMPLE, EXAMPLE_NOTES

pytestmark = needs_chromium
SECRET = "test-cookie-secret-" + "0123456789abcdef" * 3
ALICE = {"email": "alice@hospital.example", "email_verified": True, "name": "Alice Doe"}
MALLORY = {"email": "mallory@elsewhere.example", "email_verified": True, "name": "Mallory"}
MARKER = "Zebrafinch-Quillwort-7341 reports crushing chest pain radiating to the left arm."
MARKER_WORDS = ("Zebrafinch", "Quillwort", "7341", "crushing", "radiating")
# What only the app itself sends: page titles, the note box, the model section, the default note.
APP_CONTENT = ("Inside the model", "Tokenization", "Attention", "Fine-tune", "Clinical note", "In force",
               "Running the note", EXAMPLE_NOTES[DEFAULT_EXAMPLE][:40])
SIGN_IN = "button:has-text('Sign in')"
USER_COOKIE = "_streamlit_user"


@dataclass
class Provider:
    url: str
    stop: object


@pytest.fixture(scope="module")
def provider():
    with ExitStack() as stack:
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")  # the provider speaks http on loopback
        server = stack.enter_context(run_server_in_thread(
            port=free_port(), user_claims=[User(sub="alice", claims=ALICE), User(sub="mallory", claims=MALLORY)]))
        yield Provider(url=f"http://localhost:{server.server_port}", stop=stack.close)


@pytest.fixture(scope="module")
def signed_app(provider, tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth")
    secrets = folder / "secrets.toml"
    secrets.write_text(f"""[auth]
redirect_uri = "http://127.0.0.1:{{port}}/oauth2callback"
cookie_secret = "{SECRET}"
client_id = "cbert-explorer"
client_secret = "any-secret-the-mock-accepts"
server_metadata_url = "{provider.url}/.well-known/openid-configuration"
allowed_domains = ["hospital.example"]
""", encoding="utf-8")
    audit = folder / "audit.jsonl"
    with running_app(env={"HF_HUB_OFFLINE": "1", "CBERT_MODEL": "", "STREAMLIT_SECRETS_FILES": str(secrets),
                          "CBERT_AUDIT_LOG": str(audit)}, log_dir=folder) as server:
        server.audit_path = audit
        yield server


@pytest.fixture(scope="module")
def chromium():
    from browser_support import browser

    with browser() as instance:
        yield instance


class Frames:
    """Every websocket frame a tab received."""

    def __init__(self, tab) -> None:
        self.received: list[bytes] = []
        tab.on("websocket", lambda socket_: socket_.on("framereceived", self._keep))

    def _keep(self, payload: str | bytes) -> None:
        self.received.append(payload if isinstance(payload, bytes) else payload.encode())

    def app_content(self) -> list[str]:
        """The app's own texts found in the frames (should be none for a browser that may not use the app)."""
        blob = b"".join(self.received)
        return [text for text in APP_CONTENT if text.encode() in blob]


def new_tab(chromium):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    return tab, Frames(tab)


def sign_in_as(tab, user: str) -> None:
    tab.locator(SIGN_IN).click(timeout=240_000)
    tab.wait_for_url("**/oauth2/authorize**", timeout=60_000)
    tab.get_by_role("button", name=user, exact=True).click()


def sidebar_top_screenshot(tab, name: str) -> None:
    """The sidebar scrolled to its top (the account line is above the model and note sections)."""
    tab.locator('[data-testid="stSidebarContent"]').evaluate("element => element.scrollTo(0, 0)")
    tab.locator('[data-testid="stSidebar"]').screenshot(path=str(screenshot(tab, name)))


def signed_cookie(server, claims: dict, *, secret: str = SECRET, issued_s_ago: float = 60.0,
                  signed_s_ago: float = 0.0) -> str:
    """An identity cookie as Streamlit writes it after a sign-in, signed with ``secret``."""
    port = server.url.rsplit(":", 1)[1]
    payload = {**claims, "sub": "x", "iat": int(time.time() - issued_s_ago), "exp": int(time.time() + 3600),
               "origin": f"http://127.0.0.1:{port}", "is_logged_in": True, "provider": "default"}
    with mock.patch("itsdangerous.timed.time.time", return_value=time.time() - signed_s_ago):
        return create_signed_value(secret, USER_COOKIE, json.dumps(payload)).decode()


def open_with_cookie(chromium, server, value: str):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.add_cookies([{"name": USER_COOKIE, "value": value, "url": server.url}])
    tab = context.new_page()
    frames = Frames(tab)
    tab.goto(server.url)
    return tab, frames


def test_a_fresh_server_sends_an_unauthenticated_browser_only_the_sign_in_page(chromium, signed_app) -> None:
    tab, frames = new_tab(chromium)
    tab.goto(f"{signed_app.url}/attention")  # the first request: Streamlit would run that page file on its own
    tab.wait_for_selector(SIGN_IN, timeout=240_000)
    time.sleep(2)
    screenshot(tab, "auth_sign_in")
    assert frames.app_content() == []
    assert tab.locator(MODEL_READY).count() == 0
    tab.goto(signed_app.url)
    tab.wait_for_selector(SIGN_IN, timeout=60_000)
    assert frames.app_content() == []
    tab.context.close()


def test_sign_in_use_the_app_sign_out_and_be_asked_again(chromium, signed_app) -> None:
    tab, frames = new_tab(chromium)
    tab.goto(signed_app.url)
    sign_in_as(tab, "alice")
    tab.wait_for_selector(MODEL_READY, timeout=240_000)
    settle(tab)
    assert tab.get_by_text("Signed in as Alice Doe").count() == 1
    assert frames.app_content()  # the signed-in user gets the app
    set_note(tab, MARKER)
    settle(tab)
    screenshot(tab, "auth_signed_in")
    sidebar_top_screenshot(tab, "auth_sidebar_signed_in")
    lines = [json.loads(line) for line in signed_app.audit_path.read_text(encoding="utf-8").splitlines()]
    mine = [line for line in lines if line["user"] == ALICE["email"] and line["event"] == "analysis"]
    assert any(line["analysis"] == "trace" and line["page"] == "Note" and line["outcome"] == "ok" for line in mine)
    assert {line["model"] for line in mine} == {"all-MiniLM-L6-v2 (bundled)"}
    for word in MARKER_WORDS:  # the marker note reached the model, but no piece of it the logs
        assert word not in signed_app.audit_path.read_text(encoding="utf-8")
        assert word not in signed_app.log()

    tab.get_by_role("button", name="Sign out").click()
    end_session = tab.get_by_role("button", name="End session")  # the provider's own sign-out page
    end_session.click(timeout=60_000)
    tab.wait_for_selector(SIGN_IN, timeout=60_000)
    assert tab.locator(MODEL_READY).count() == 0
    assert not [cookie for cookie in tab.context.cookies() if cookie["name"].startswith(USER_COOKIE)]
    tab.goto(signed_app.url)  # asked again, also on a new visit
    tab.wait_for_selector(SIGN_IN, timeout=60_000)
    assert tab.locator(MODEL_READY).count() == 0
    tab.context.close()


def test_a_user_not_on_the_allow_list_is_refused_and_gets_nothing_of_the_app(chromium, signed_app) -> None:
    tab, frames = new_tab(chromium)
    tab.goto(signed_app.url)
    sign_in_as(tab, "mallory")
    tab.wait_for_selector("text=not on this app's access list", timeout=120_000)
    time.sleep(2)
    screenshot(tab, "auth_refused")
    assert frames.app_content() == []
    assert tab.get_by_role("button", name="Sign out").count() == 1
    lines = [json.loads(line) for line in signed_app.audit_path.read_text(encoding="utf-8").splitlines()]
    assert any(line["event"] == "access" and line["user"] == MALLORY["email"] and line["outcome"] == "refused"
               for line in lines)
    tab.context.close()


def test_tampered_forged_and_expired_identity_cookies_are_refused(chromium, signed_app) -> None:
    genuine = signed_cookie(signed_app, ALICE)
    tab, frames = open_with_cookie(chromium, signed_app, genuine)  # the control: a cookie made this way works
    tab.wait_for_selector(MODEL_READY, timeout=240_000)
    assert frames.app_content()
    tab.context.close()

    payload, _, rest = genuine.partition(".")
    tampered = payload + "." + ("A" if rest[0] != "A" else "B") + rest[1:]  # one character changed
    forged = signed_cookie(signed_app, {**ALICE, "email": "eve@hospital.example"}, secret="not-the-" + SECRET)
    too_old_for_streamlit = signed_cookie(signed_app, ALICE, signed_s_ago=40 * 86400)  # past its 31 days
    for value in (tampered, forged, too_old_for_streamlit):
        tab, frames = open_with_cookie(chromium, signed_app, value)
        tab.wait_for_selector(SIGN_IN, timeout=120_000)
        time.sleep(1.5)
        assert frames.app_content() == [] and tab.locator(MODEL_READY).count() == 0
        tab.context.close()

    expired = signed_cookie(signed_app, ALICE, issued_s_ago=13 * 3600)  # older than session_hours (12)
    tab, frames = open_with_cookie(chromium, signed_app, expired)
    tab.wait_for_selector("text=Your sign-in has expired", timeout=120_000)
    tab.wait_for_selector(SIGN_IN, timeout=10_000)
    time.sleep(1.5)
    screenshot(tab, "auth_expired")
    assert frames.app_content() == [] and tab.locator(MODEL_READY).count() == 0
    tab.context.close()


def test_the_identity_provider_down_at_sign_in_gives_a_clear_page(chromium, signed_app, provider) -> None:
    provider.stop()
    tab, frames = new_tab(chromium)
    tab.goto(signed_app.url)
    tab.locator(SIGN_IN).click(timeout=240_000)
    tab.wait_for_selector("text=did not answer", timeout=60_000)
    screenshot(tab, "auth_provider_down")
    message = tab.inner_text("body")
    assert "sign-in service (localhost:" in message and "try again in a few minutes" in message
    assert frames.app_content() == []
    assert "Traceback" not in signed_app.log()
    tab.context.close()


def test_nothing_of_the_note_reached_the_server_log(signed_app) -> None:
    log = Path(signed_app.log_path).read_text(encoding="utf-8", errors="replace")
    assert all(word not in log for word in MARKER_WORDS)
