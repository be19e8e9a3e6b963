"""The server's own settings in .streamlit/config.toml: real Streamlit options, with the values the app needs."""

from __future__ import annotations

import tomllib
from pathlib import Path

from streamlit import config

CONFIG = Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml"


def settings() -> dict[str, object]:
    """Every option the file sets, by Streamlit's dotted name."""
    with open(CONFIG, "rb") as handle:
        sections = tomllib.load(handle)
    return {f"{section}.{name}": value for section, options in sections.items() for name, value in options.items()}


def test_every_setting_is_an_option_streamlit_knows() -> None:
    known = config.get_config_options()
    assert [name for name in settings() if name not in known] == []


def test_no_full_garbage_collection_after_every_script_run() -> None:
    # Streamlit's default collects the whole heap (over half a million objects with a model loaded, about
    # 0.35 s holding the interpreter lock) after every rerun of every session: under 8 sessions that was
    # 80% of the lock and cut the pages served per minute to a third.
    assert config.get_config_options()["runner.postScriptGC"].default_val is True
    assert settings()["runner.postScriptGC"] is False


def test_the_server_sends_no_usage_statistics_and_listens_on_localhost() -> None:
    chosen = settings()
    assert chosen["browser.gatherUsageStats"] is False
    assert chosen["server.address"] == "127.0.0.1"
    assert chosen["server.enableXsrfProtection"] is True
