"""Configuration files and the command line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fieldc2.cli import build_parser, main
from fieldc2.config import DEFAULT_TOML, Config, load_config
from fieldc2.errors import ConfigError


def test_default_toml_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(DEFAULT_TOML)
    loaded = load_config(path)
    assert loaded.stream == Config().stream
    assert loaded.multicast == Config().multicast
    assert loaded.store == Config().store
    assert loaded.tls == Config().tls
    assert loaded.http == Config().http
    assert loaded.enrollment == Config().enrollment
    assert loaded.groups == Config().groups
    assert loaded.bus == Config().bus
    assert str(loaded.data_dir) == "fieldc2-data"
    assert tomllib.loads(DEFAULT_TOML)["stream"]["tcp_port"] == 8087


def test_overrides_beat_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[stream]\ntcp_port = 9000\n[groups]\nmembers = { "B" = ["Red"] }\n')
    cfg = load_config(path, **{"stream.tcp_port": 9100, "http.port": None})
    assert cfg.stream.tcp_port == 9100
    assert cfg.http.port == 8443
    assert cfg.groups.members == {"B": ("Red",)}


@pytest.mark.parametrize(("text", "message"), [
    ("[stream]\ntcp_prot = 1\n", "unknown keys"),
    ("[stream]\ntcp_port = 'x'\n", "expected int"),
    ("[stream]\ntcp_enabled = 1\n", "expected bool"),
    ("[tls]\nhostnames = 'cp.example'\n", "expected a list of strings"),
    ("colour = 'red'\n", "unknown top-level key"),
    ("[stream\n", "not valid TOML"),
])
def test_bad_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file_tells_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fieldc2 init"):
        load_config(tmp_path / "absent.toml")


def test_init_writes_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "fieldc2.toml"
    assert main(["init", str(target)]) == 0
    assert target.read_text() == DEFAULT_TOML
    assert main(["init", str(target)]) == 1
    assert "--force" in capsys.readouterr().err


def test_serve_flags_reach_the_config(tmp_path: Path) -> None:
    from fieldc2.cli import _config

    args = build_parser().parse_args(
        ["serve", "--bind", "0.0.0.0", "--tcp-port", "1", "--http-port", "2",
         "--data-dir", str(tmp_path), "--multicast"])
    cfg = _config(args)
    assert (cfg.bind, cfg.stream.tcp_port, cfg.http.port) == ("0.0.0.0", 1, 2)
    assert cfg.data_dir == tmp_path and cfg.multicast.enabled


def test_bad_config_exits_with_a_message(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "fieldc2 init" in capsys.readouterr().err
