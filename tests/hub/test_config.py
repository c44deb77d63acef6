"""Configuration parsing without a server: defaults < RHUB_* environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.core.config import Config


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(__import__("os").environ):
        if k.startswith("RHUB_"):
            monkeypatch.delenv(k)
    c = Config.from_env()
    assert (c.host, c.port, c.data_dir, c.fsync, c.jwt_secret) == (
        "127.0.0.1",
        8765,
        Path("data"),
        "interval",
        None,
    )
    assert c.allowed_origins == [] and c.stream_ttl_s is None and c.demo is False


def test_environment_is_parsed_by_field_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHUB_PORT", "9000")
    monkeypatch.setenv("RHUB_FSYNC_INTERVAL_MS", "2.5")
    monkeypatch.setenv("RHUB_DEMO", "yes")
    monkeypatch.setenv("RHUB_ALLOWED_ORIGINS", " https://a.example , ,https://b.example")
    monkeypatch.setenv("RHUB_DATA_DIR", "/tmp/x")
    monkeypatch.setenv("RHUB_STREAM_TTL_S", "60")
    monkeypatch.setenv("RHUB_JWT_SECRET", "k")
    c = Config.from_env()
    assert c.port == 9000 and c.fsync_interval_ms == 2.5 and c.demo is True
    assert c.allowed_origins == ["https://a.example", "https://b.example"]
    assert c.data_dir == Path("/tmp/x") and c.stream_ttl_s == 60.0 and c.jwt_secret == "k"


@pytest.mark.parametrize(
    "raw, want", [("1", True), ("true", True), ("ON", True), ("0", False), ("no", False)]
)
def test_booleans(monkeypatch: pytest.MonkeyPatch, raw: str, want: bool) -> None:
    monkeypatch.setenv("RHUB_DEMO", raw)
    assert Config.from_env().demo is want


def test_flags_override_environment_and_none_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHUB_PORT", "9000")
    monkeypatch.setenv("RHUB_HOST", "127.0.0.2")
    c = Config.from_env(port=1234, host=None, data_dir="rel")
    assert c.port == 1234 and c.host == "127.0.0.2" and c.data_dir == Path("rel")


def test_a_bad_number_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHUB_PORT", "eighty")
    with pytest.raises(ValueError):
        Config.from_env()


def test_off_turns_an_optional_duration_off_from_a_flag_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.__main__ import configure, parser

    monkeypatch.setenv("RHUB_PRODUCER_LEASE_S", "5")
    args = parser().parse_args(["serve", "--producer-lease-s", "off", "--stream-ttl-s", "60"])
    cfg, _ = configure(args)
    assert cfg.producer_lease_s is None and cfg.stream_ttl_s == 60.0
    with pytest.raises(SystemExit):  # argparse's own one-line error, exit code 2
        parser().parse_args(["serve", "--open-ttl-s", "soon"])


def test_durable_streams_settings_are_checked_like_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.core.config import ConfigError
    from hub.protocols.durable import DurableConfig

    monkeypatch.setenv("RHUB_DS_LONG_POLL_S", "2.5")
    ds = DurableConfig.from_hub(Config.from_env())
    assert ds.long_poll_s == 2.5 and ds.sse_max_s == 60.0
    monkeypatch.setenv("RHUB_DS_SSE_MAX_S", "abc")
    with pytest.raises(ConfigError, match="RHUB_DS_SSE_MAX_S"):
        Config.from_env()
