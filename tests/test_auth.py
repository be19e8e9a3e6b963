"""Sign-in settings, the allow-list, the session lifetime and the audit log, without a browser.

The end-to-end sign-in against a real OpenID Connect provider is in test_auth_browser.py.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import streamlit.testing.v1.app_test as app_test_module
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

from cbert_core.errors import NoteTooLongError
from ui import state
from ui.audit import AUDIT_LOGGER, audit_work, audited, set_run
from ui.auth import AccessRules, AuthConfigError, access_rules, refusal
from ui.sidebar import MODEL_OTHER

APP = str(Path(__file__).resolve().parent.parent / "app.py")
MARKER = "Zebrafinch-Quillwort-7341 reports crushing chest pain radiating to the left arm."
MARKER_WORDS = ("Zebrafinch", "Quillwort", "7341", "crushing", "radiating")  # none of them is a log field's
SECRET = "s" * 40
COMPLETE = {
    "redirect_uri": "https://explorer.hospital.example/oauth2callback",
    "cookie_secret": SECRET,
    "client_id": "cbert-explorer",
    "client_secret": "xyz",
    "server_metadata_url": "https://login.hospital.example/.well-known/openid-configuration",
    "allowed_domains": ["Hospital.Example"],
    "allowed_emails": ["visiting.doctor@other.example"],
}


class _NavigationPagesManager(PagesManager):
    """As in test_app_pages: leave Streamlit's legacy pages/ mode the way the real server does."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        PagesManager.uses_pages_directory = False


app_test_module.PagesManager = _NavigationPagesManager


def without(key: str) -> dict:
    return {name: value for name, value in COMPLETE.items() if name != key}


def test_a_complete_section_gives_the_rules() -> None:
    rules = access_rules(COMPLETE)
    assert rules is not None and rules.provider == "default"
    assert rules.metadata_url == COMPLETE["server_metadata_url"]
    assert rules.allowed_domains == {"hospital.example"} and rules.allowed_emails == {"visiting.doctor@other.example"}
    assert rules.session_hours == 12.0
    assert access_rules(None) is None  # no [auth]: the app runs without sign-in


@pytest.mark.parametrize("key", ["redirect_uri", "cookie_secret", "client_id", "client_secret", "server_metadata_url"])
def test_a_half_filled_section_names_the_missing_key(key: str) -> None:
    with pytest.raises(AuthConfigError, match=f"'{key}'"):
        access_rules(without(key))
    with pytest.raises(AuthConfigError, match=f"'{key}'"):
        access_rules({**COMPLETE, key: "  "})  # empty counts as missing


def test_no_allow_list_weak_secret_or_wrong_addresses_are_refused() -> None:
    with pytest.raises(AuthConfigError, match="allowed_emails' or 'allowed_domains"):
        access_rules({name: value for name, value in COMPLETE.items() if not name.startswith("allowed")})
    with pytest.raises(AuthConfigError, match="cookie_secret.*too short"):
        access_rules({**COMPLETE, "cookie_secret": "xxx"})
    with pytest.raises(AuthConfigError, match="oauth2callback"):
        access_rules({**COMPLETE, "redirect_uri": "https://explorer.hospital.example/"})
    with pytest.raises(AuthConfigError, match="server_metadata_url.*absolute"):
        access_rules({**COMPLETE, "server_metadata_url": "login.hospital.example"})
    with pytest.raises(AuthConfigError, match="session_hours"):
        access_rules({**COMPLETE, "session_hours": 0})


def test_one_named_provider_table_is_the_provider() -> None:
    provider = {key: COMPLETE[key] for key in ("client_id", "client_secret", "server_metadata_url")}
    shared = {key: value for key, value in COMPLETE.items() if key not in provider}
    rules = access_rules({**shared, "entra": provider})
    assert rules is not None and rules.provider == "entra"
    with pytest.raises(AuthConfigError, match=r"\[auth.entra\].*'client_secret'"):
        access_rules({**shared, "entra": {**provider, "client_secret": ""}})
    with pytest.raises(AuthConfigError, match="several identity providers"):
        access_rules({**shared, "entra": provider, "okta": provider})


def claims(email: str, *, age_s: float = 60.0, **more: object) -> dict:
    return {"email": email, "iat": time.time() - age_s, "sub": "x", **more}


def test_the_allow_list_admits_listed_addresses_and_domains_only() -> None:
    rules = access_rules(COMPLETE)
    now = time.time()
    assert refusal(rules, claims("Dr.Smith@HOSPITAL.example"), now) is None
    assert refusal(rules, claims("visiting.doctor@other.example"), now) is None
    for outsider in ("someone@other.example", "x@hospital.example.evil.org", "x@sub.hospital.example"):
        kind, message = refusal(rules, claims(outsider), now)
        assert kind == "refused" and outsider in message and "access list" in message
    assert refusal(rules, claims("dr@hospital.example", email_verified=False), now)[0] == "refused"
    assert refusal(rules, {"sub": "x", "iat": now}, now)[0] == "refused"  # no e-mail address given


def test_an_old_or_undated_sign_in_has_expired() -> None:
    rules = AccessRules(provider="default", metadata_url="https://x/", allowed_emails=frozenset(),
                        allowed_domains=frozenset({"hospital.example"}), session_hours=2.0)
    now = time.time()
    assert refusal(rules, claims("a@hospital.example", age_s=1.5 * 3600), now) is None
    assert refusal(rules, claims("a@hospital.example", age_s=2.5 * 3600), now)[0] == "expired"
    assert refusal(rules, {"email": "a@hospital.example"}, now)[0] == "expired"  # no iat: not trusted
    assert refusal(rules, claims("a@hospital.example", age_s=-3600), now)[0] == "expired"  # issued in the future


@pytest.fixture()
def audit_lines():
    """What the audit logger writes, as parsed JSON objects."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger(AUDIT_LOGGER)
    keep = Keep()
    logger.addHandler(keep)
    yield lines
    logger.removeHandler(keep)


def test_an_audit_line_per_analysis_names_the_outcome_never_the_message(audit_lines) -> None:
    class Loaded:
        class info:  # noqa: N801 - stands in for ModelInfo
            name, key = "tiny-model", "folder:/tiny"

    def summarize(loaded: object, text: str, *, progress: object = None) -> int:
        return len(text)

    def too_long(loaded: object, text: str, *, progress: object = None) -> int:
        raise NoteTooLongError(f"The note is too long: {text}")

    @audited()
    def computed(function, *inputs, label: str, **arguments):
        return function(*inputs, **arguments)

    set_run(user="dr@hospital.example", page="Attribution")
    assert computed(summarize, Loaded(), MARKER, label=f"Scoring {MARKER}") == len(MARKER)
    with pytest.raises(NoteTooLongError):
        computed(too_long, Loaded(), MARKER, label="x")
    first, second = (json.loads(line) for line in audit_lines)
    assert {key: first[key] for key in ("event", "user", "page", "analysis", "model", "outcome")} == {
        "event": "analysis", "user": "dr@hospital.example", "page": "Attribution", "analysis": "summarize",
        "model": "tiny-model", "outcome": "ok"}
    assert first["seconds"] >= 0 and first["time"].endswith("+00:00")
    assert (second["analysis"], second["outcome"], second["error"]) == ("too_long", "refused", "NoteTooLongError")
    assert all(word not in line for word in MARKER_WORDS for line in audit_lines)


def test_the_app_writes_one_audit_line_per_analysis_and_no_note_text(audit_lines) -> None:
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state[state.NOTE_TEXT] = MARKER
    at.run()
    assert not at.exception, at.exception
    at.run()  # a redraw of the same page: nothing new to log
    assert not at.exception, at.exception
    assert audit_lines, "no audit line was written"
    records = [json.loads(line) for line in audit_lines]
    traces = [entry for entry in records if entry["analysis"] == "trace"]
    assert len(traces) == 1
    assert traces[0]["user"] == "unauthenticated" and traces[0]["page"] == "Note"
    assert traces[0]["model"] == "all-MiniLM-L6-v2 (bundled)" and traces[0]["outcome"] == "ok"
    for word in MARKER_WORDS:
        assert all(word not in line for line in audit_lines), word


def test_work_outside_the_shared_caches_gets_a_line_every_time_with_its_outcome(audit_lines) -> None:
    set_run(user="dr@hospital.example", page="Fine-tune")
    for _ in range(2):  # each run is its own line (a training run is never handed over from a cache)
        with audit_work("fine_tune", "tiny-model"):
            pass
    with audit_work("fine_tune", "tiny-model") as fields:
        fields["outcome"] = "cancelled"
    with pytest.raises(NoteTooLongError), audit_work("fine_tune", "tiny-model"):
        raise NoteTooLongError(f"The note is too long: {MARKER}")
    records = [json.loads(line) for line in audit_lines]
    assert [(entry["analysis"], entry["outcome"]) for entry in records] == [
        ("fine_tune", "ok"), ("fine_tune", "ok"), ("fine_tune", "cancelled"), ("fine_tune", "refused")]
    assert {(entry["user"], entry["page"], entry["model"]) for entry in records} == {
        ("dr@hospital.example", "Fine-tune", "tiny-model")}
    assert records[-1]["error"] == "NoteTooLongError"
    assert all(word not in line for word in MARKER_WORDS for line in audit_lines)


def test_a_fine_tuning_run_in_the_app_writes_its_audit_line(audit_lines, tiny_dir: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state[state.MODEL_CHOICE] = MODEL_OTHER
    at.session_state[state.MODEL_CUSTOM] = str(tiny_dir)
    at.session_state["ft_epochs"] = 1
    at.run()
    at.switch_page("pages/finetune.py").run()
    assert not at.exception, at.exception
    at.button(key="go_train").click().run()
    assert not at.exception, at.exception
    runs = [entry for entry in map(json.loads, audit_lines) if entry["analysis"] == "fine_tune"]
    assert len(runs) == 1
    assert runs[0]["page"] == "Fine-tune" and runs[0]["outcome"] == "ok" and runs[0]["seconds"] > 0


def test_without_auth_the_sidebar_says_unauthenticated_and_bound_to_this_machine() -> None:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    captions = " ".join(caption.value for caption in at.sidebar.caption)
    assert "Unauthenticated" in captions and "127.0.0.1" in captions


def test_a_half_filled_auth_section_stops_the_app_naming_the_key() -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = without("client_secret")
    at.run()
    assert not at.exception, at.exception
    assert any("'client_secret'" in error.value for error in at.error)
    assert not at.text_area and not at.sidebar.selectbox  # no note box, no model choice: nothing of the app


def test_with_auth_a_browser_that_is_not_signed_in_gets_the_sign_in_page_only() -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = COMPLETE
    at.run()
    assert not at.exception, at.exception
    assert [button.label for button in at.button] == ["Sign in"]
    assert not at.text_area and not at.sidebar.selectbox and not at.sidebar.caption
