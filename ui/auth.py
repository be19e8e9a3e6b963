"""Sign-in (optional): OpenID Connect through Streamlit's own ``st.login``, an allow-list, who is signed in.

When the secrets (``.streamlit/secrets.toml``, or the files in Streamlit's ``secrets.files`` option)
hold an ``[auth]`` section, :func:`sign_in_gate` lets a run go on only for a signed-in user whose
e-mail address or domain is on the section's allow-list and whose sign-in is younger than
``session_hours``; everyone else gets a sign-in, refusal or "expired" page and the run stops before
the navigation, the note box or the model are drawn. Without ``[auth]`` the app runs as before and
the sidebar says it is unauthenticated.

Streamlit does the OpenID Connect part (Authlib): the redirect to the identity provider, the code
exchange, and the identity cookie, signed with ``cookie_secret`` (a tampered cookie is ignored, one
older than Streamlit's 30 days is refused). This module adds what a hospital needs on top: a
section that is only half filled stops the app naming the missing key (never an app that runs open
by mistake), the allow-list, a shorter session (``iat`` of the identity token, which the signed
cookie carries), and a clear page when the identity provider does not answer.

Light on purpose (no torch): the entry script calls the gate before anything heavy is imported.
"""

from __future__ import annotations

import ipaddress
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import streamlit as st

from ui.audit import record, set_run

AUTH_SECTION = "auth"
SHARED_KEYS = ("redirect_uri", "cookie_secret")
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")
ALLOW_KEYS = ("allowed_emails", "allowed_domains")
SESSION_KEY = "session_hours"
DEFAULT_SESSION_HOURS = 12.0
MAX_SESSION_HOURS = 30 * 24.0  # Streamlit's own cookie lifetime
MIN_COOKIE_SECRET = 32  # characters; e.g. python -c "import secrets; print(secrets.token_hex(32))"
PROVIDER_TIMEOUT_S = 3.0
_CLOCK_SKEW_S = 300.0
_REFUSAL_LOGGED = "auth_refusal_logged"
_MARKDOWN_CHARACTERS = frozenset("\\`*_{}[]()<>#+-.!|~:$")


class AuthConfigError(Exception):
    """The secrets' ``[auth]`` section cannot be used as it is; the message names the key to fix."""


@dataclass(frozen=True, kw_only=True)
class AccessRules:
    """What the ``[auth]`` section allows."""

    provider: str  # "default" (keys directly in [auth]) or NAME of the one [auth.NAME] table
    metadata_url: str  # the provider's /.well-known/openid-configuration
    allowed_emails: frozenset[str]  # lower-case
    allowed_domains: frozenset[str]  # lower-case, without "@"
    session_hours: float

    def admits(self, email: str) -> bool:
        """Whether ``email`` is on the allow-list (the address itself, or its domain exactly)."""
        address = email.strip().lower()
        domain = address.rpartition("@")[2]
        return address in self.allowed_emails or (bool(domain) and domain in self.allowed_domains)

    @property
    def provider_host(self) -> str:
        return urlparse(self.metadata_url).netloc


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Who runs this script run."""

    signed_in: bool
    name: str = ""
    email: str = ""

    @property
    def user(self) -> str:
        """How the audit log names the user."""
        return self.email if self.signed_in else "unauthenticated"


ANONYMOUS = Identity(signed_in=False)


def _text(section: Mapping[str, Any], key: str, where: str) -> str:
    value = section.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise AuthConfigError(f"The sign-in settings ({where}) are missing the key '{key}'. Add it to the secrets "
                              "file, or remove the whole [auth] section to run without sign-in on this machine only.")
    if not isinstance(value, str):
        raise AuthConfigError(f"'{key}' in {where} must be text (in quotes).")
    return value.strip()


def _url(section: Mapping[str, Any], key: str, where: str) -> str:
    value = _text(section, key, where)
    parsed = urlparse(value)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise AuthConfigError(f"'{key}' in {where} must be an absolute http(s) address; it is {value!r}.")
    return value


def _names(section: Mapping[str, Any], key: str) -> frozenset[str]:
    value = section.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise AuthConfigError(f"'{key}' in [auth] must be a list of text, e.g. {key} = [\"...\"].")
    return frozenset(item.strip().lower().lstrip("@") for item in value if item.strip())


def access_rules(section: Mapping[str, Any] | None) -> AccessRules | None:
    """The access rules of an ``[auth]`` section (None: there is none, the app runs without sign-in).

    Raises:
        AuthConfigError: a key is missing or unusable; the message names it.
    """
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise AuthConfigError("[auth] in the secrets must be a table of settings.")
    redirect_uri = _url(section, "redirect_uri", "[auth]")
    if not urlparse(redirect_uri).path.endswith("/oauth2callback"):
        raise AuthConfigError(f"'redirect_uri' in [auth] must end with /oauth2callback (the address the identity "
                              f"provider sends users back to); it is {redirect_uri!r}.")
    secret = _text(section, "cookie_secret", "[auth]")
    if len(secret) < MIN_COOKIE_SECRET:
        raise AuthConfigError(f"'cookie_secret' in [auth] is too short ({len(secret)} characters): it signs every "
                              f"sign-in, so use at least {MIN_COOKIE_SECRET} random characters, e.g. the output of "
                              "python -c \"import secrets; print(secrets.token_hex(32))\".")
    tables = {name: value for name, value in section.items() if isinstance(value, Mapping) and name != "client_kwargs"}
    if len(tables) > 1:
        raise AuthConfigError(f"[auth] names several identity providers ({', '.join(sorted(tables))}); this app "
                              "signs in through one. Keep one [auth.NAME] table, or put its keys in [auth] itself.")
    if tables:
        provider, provider_section = next(iter(tables.items()))
        where = f"[auth.{provider}]"
        if "_" in provider:
            raise AuthConfigError(f"The provider name '{provider}' in [auth.{provider}] may not hold '_'.")
    else:
        provider, provider_section, where = "default", section, "[auth]"
    _text(provider_section, "client_id", where)
    _text(provider_section, "client_secret", where)
    metadata_url = _url(provider_section, "server_metadata_url", where)
    emails, domains = _names(section, "allowed_emails"), _names(section, "allowed_domains")
    if not emails and not domains:
        raise AuthConfigError("The sign-in settings ([auth]) are missing the key 'allowed_emails' or "
                              "'allowed_domains': without an allow-list anyone with an account at the identity "
                              "provider could use the app. Add e.g. allowed_domains = [\"hospital.org\"].")
    hours = section.get(SESSION_KEY, DEFAULT_SESSION_HOURS)
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 < hours <= MAX_SESSION_HOURS:
        raise AuthConfigError(f"'{SESSION_KEY}' in [auth] must be a number of hours between 0 and "
                              f"{MAX_SESSION_HOURS:g}; it is {hours!r}.")
    return AccessRules(provider=provider, metadata_url=metadata_url, allowed_emails=emails, allowed_domains=domains,
                       session_hours=float(hours))


def refusal(rules: AccessRules, claims: Mapping[str, Any], now: float) -> tuple[str, str] | None:
    """Why a signed-in user may not go on: (kind, message), kind "expired" or "refused"; None: they may.

    Args:
        claims: the identity token's claims as ``st.user`` holds them (from the signed cookie).
        now: seconds since the epoch.
    """
    issued = claims.get("iat")
    if isinstance(issued, bool) or not isinstance(issued, (int, float)) or issued > now + _CLOCK_SKEW_S \
            or now - issued > rules.session_hours * 3600:
        return "expired", (f"Your sign-in has expired (this app asks again after {rules.session_hours:g} hours). "
                           "Sign in again to go on.")
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        return "refused", ("The identity provider did not tell this app your e-mail address, so it cannot check "
                           "whether you may use it. Ask the app's administrator.")
    if claims.get("email_verified") is False:
        return "refused", (f"The identity provider says your address {email} is not verified, so this app cannot "
                           "let you in. Ask the app's administrator.")
    if not rules.admits(email):
        return "refused", (f"You are signed in as {email}, but that address is not on this app's access list. "
                           "Ask the app's administrator to add you, or sign out and use another account.")
    return None


def provider_answers(metadata_url: str, timeout_s: float = PROVIDER_TIMEOUT_S) -> bool:
    """Whether the identity provider's metadata document answers within ``timeout_s``."""
    try:
        with urllib.request.urlopen(metadata_url, timeout=timeout_s) as answer:  # noqa: S310 - an http(s) URL
            return 200 <= answer.status < 300
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------------ the Streamlit side

def configured_rules() -> AccessRules | None:
    """The rules from this server's secrets (None: no [auth] section).

    Raises:
        AuthConfigError: [auth] is half filled, or a secrets file exists but cannot be read (an
            unreadable file would otherwise look like no sign-in at all).
    """
    try:
        section = st.secrets.get(AUTH_SECTION)
    except FileNotFoundError as unreadable:  # Streamlit's "no secrets" and "cannot parse" both land here
        present = [str(path) for path in st.get_option("secrets.files") or () if Path(path).is_file()]
        if present:
            raise AuthConfigError(f"The secrets file {present[0]} could not be read ({unreadable}). Fix it (it must "
                                  "be valid TOML) or remove it.") from unreadable
        return None
    return access_rules(None if section is None else dict(section))


def _plain(text: str) -> str:
    """``text`` (from the identity provider) shown as written in markdown: its markup characters escaped."""
    return "".join(f"\\{char}" if char in _MARKDOWN_CHARACTERS else char for char in text.replace("\n", " "))


def _is_loopback(address: str) -> bool:
    """Whether Streamlit's ``server.address`` reaches this machine only (empty: every address)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _stop_with(title: str, message: str, *, kind: str = "info") -> None:
    st.title(title)
    getattr(st, kind)(message, icon=":material/lock:")


def _sign_in_page(rules: AccessRules, reason: str | None = None) -> None:
    """The page of a browser that is not signed in (or whose sign-in expired); nothing of the app is drawn."""
    st.title("Clinical BERT explorer")
    if reason:
        st.warning(reason, icon=":material/schedule:")
    st.write("Sign in with your hospital account to use this app.")
    if st.button("Sign in", type="primary", icon=":material/login:"):
        if provider_answers(rules.metadata_url):
            st.login(rules.provider)
        else:
            st.error(f"The sign-in service ({rules.provider_host}) did not answer within {PROVIDER_TIMEOUT_S:g} s, so "
                     "you cannot sign in right now. Nothing is wrong with your account: try again in a few minutes, "
                     "and tell the app's administrator if it goes on.", icon=":material/cloud_off:")


def sign_in_gate() -> Identity:
    """Let this run go on only for a user the secrets allow; otherwise draw why and stop the run.

    Call it first in the entry script, after ``st.set_page_config`` and before anything else is drawn.
    """
    try:
        rules = configured_rules()
    except AuthConfigError as problem:
        _stop_with("Sign-in is not set up correctly", f"This app does not start: {problem}", kind="error")
        st.stop()
    if rules is None:
        return ANONYMOUS
    claims = st.user.to_dict()
    if claims.get("is_logged_in") is not True:  # no identity cookie, or one that failed its signature check
        _sign_in_page(rules)
        st.stop()
    refused = refusal(rules, claims, time.time())
    if refused is not None:
        kind, message = refused
        message = _plain(message)  # it quotes the address the identity provider gave
        if kind == "expired":
            _sign_in_page(rules, message)
        else:
            if not st.session_state.get(_REFUSAL_LOGGED):  # once per browser session
                st.session_state[_REFUSAL_LOGGED] = True
                set_run(user=str(claims.get("email") or claims.get("sub") or "unknown"), page="-")
                record("access", outcome="refused")
            _stop_with("Not on the access list", message, kind="warning")
            st.button("Sign out", on_click=st.logout, icon=":material/logout:")
        st.stop()
    email = str(claims["email"])
    return Identity(signed_in=True, name=str(claims.get("name") or email), email=email)


def account_sidebar(identity: Identity) -> None:
    """Who is signed in, with sign-out; or that no sign-in is configured and what the app is bound to."""
    if identity.signed_in:
        st.sidebar.caption(f"Signed in as **{_plain(identity.name)}** ({_plain(identity.email)})")
        st.sidebar.button("Sign out", on_click=st.logout, icon=":material/logout:", key="sign_out", type="tertiary")
        return
    address = str(st.get_option("server.address") or "")
    if _is_loopback(address):
        st.sidebar.caption(f"Unauthenticated: no sign-in is configured, so the app is bound to this machine "
                           f"({address}) only.", help="To share it, configure sign-in (see the README).")
    else:
        st.sidebar.warning(f"Unauthenticated: no sign-in is configured and the app listens on "
                           f"{address or 'every address'}: anyone who can reach it can use it. Configure sign-in "
                           "(see the README) or bind it to 127.0.0.1.", icon=":material/lock_open:")
