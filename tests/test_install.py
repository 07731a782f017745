"""``avaturn-desktop install-desktop``: the menu entry, the icon and the autostart entry in the
XDG directories, starting this very installation whatever its path holds."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from avaturn_desktop import cli, install
from avaturn_desktop.core.paths import resource


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    data, config = tmp_path / "xdg data", tmp_path / "xdg config"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    return data, config


def read_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


def exec_args(value: str) -> list[str]:
    """Decode an Exec value as a desktop would (Desktop Entry spec, "The Exec key")."""
    # 1. the string escapes of any value
    text = re.sub(
        r"\\(.)", lambda m: {"s": " ", "n": "\n", "t": "\t", "r": "\r"}.get(m[1], m[1]), value
    )
    # 2. the Exec quoting, then the field-code escape %%
    args, current, quoted, started, i = [], "", False, False, 0
    while i < len(text):
        c = text[i]
        if quoted and c == "\\" and i + 1 < len(text) and text[i + 1] in '"`$\\':
            current += text[i + 1]
            i += 2
            continue
        if c == '"':
            quoted, started = not quoted, True
        elif c == " " and not quoted:
            if current or started:
                args.append(current)
            current, started = "", False
        else:
            current += c
        i += 1
    assert not quoted, "unbalanced quotes"
    if current or started:
        args.append(current)
    return [_field_codes(a) for a in args]


def _field_codes(arg: str) -> str:
    """``%%`` is a literal percent; any other ``%x`` is a field code a launcher would expand."""
    assert re.fullmatch(r"(?:[^%]|%%)*", arg), f"a field code in {arg!r}"
    return arg.replace("%%", "%")


def test_installs_entry_icon_and_autostart_into_the_xdg_dirs(
    xdg: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, config = xdg
    assert cli.main(["install-desktop", "--autostart"]) == 0
    desktop = data / "applications" / "avaturn-desktop.desktop"
    icon = data / "icons" / "hicolor" / "scalable" / "apps" / "avaturn-desktop.svg"
    autostart = config / "autostart" / "avaturn-desktop.desktop"
    assert capsys.readouterr().out.split("\n")[:3] == [
        f"installed {desktop}",
        f"installed {icon}",
        f"installed {autostart}",
    ]
    assert icon.read_bytes() == resource("icons", "avaturn-desktop.svg").read_bytes()
    entry = read_entry(desktop)
    assert entry["Name"] == "Avaturn Desktop" and entry["Icon"] == "avaturn-desktop"
    command = exec_args(entry["Exec"])
    assert command == install.launch_command()
    assert Path(command[0]).is_absolute() and entry["TryExec"] == command[0]
    start = read_entry(autostart)
    assert exec_args(start["Exec"]) == command
    assert start["X-GNOME-Autostart-enabled"] == "true"
    assert "X-GNOME-Autostart-enabled" not in entry


def test_kiosk_autostart_and_reinstalling_without_it_and_remove(
    xdg: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, config = xdg
    autostart = config / "autostart" / "avaturn-desktop.desktop"
    assert cli.main(["install-desktop", "--autostart", "--kiosk"]) == 0
    assert exec_args(read_entry(autostart)["Exec"])[-1] == "--kiosk"
    assert "--kiosk" not in read_entry(data / "applications" / "avaturn-desktop.desktop")["Exec"]
    assert cli.main(["install-desktop"]) == 0  # without --autostart: no longer at login
    assert not autostart.exists()
    capsys.readouterr()
    assert cli.main(["install-desktop", "--remove"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not [p for p in (data, config) if any(f.is_file() for f in p.rglob("*"))]
    assert cli.main(["install-desktop", "--remove"]) == 0
    assert capsys.readouterr().out.strip() == "nothing to remove"


def test_kiosk_needs_autostart(xdg: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["install-desktop", "--kiosk"]) == 2
    assert "--kiosk needs --autostart" in capsys.readouterr().err
    assert not xdg[0].exists()


@pytest.mark.parametrize("value", ["", "relative/share"])
def test_unset_empty_or_relative_xdg_dirs_mean_the_defaults(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", value)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["install-desktop", "--autostart"]) == 0
    assert (home / ".local/share/applications/avaturn-desktop.desktop").is_file()
    assert (home / ".config/autostart/avaturn-desktop.desktop").is_file()
    assert not (tmp_path / "relative").exists()


@pytest.mark.parametrize(
    "folder",
    ["my venv", 'a "quoted" $HOME `x` \\ 100%d %% dir', "ünïcode"],
    ids=["space", "nasty", "utf8"],
)
def test_any_installation_path_round_trips_through_exec(
    folder: str, xdg: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / folder / "bin"
    bindir.mkdir(parents=True)
    script = bindir / "avaturn-desktop"
    script.write_text("#!/bin/sh\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "executable", str(bindir / "python"))
    assert install.launch_command() == [str(script)]
    assert cli.main(["install-desktop", "--autostart", "--kiosk"]) == 0
    entry = read_entry(xdg[1] / "autostart" / "avaturn-desktop.desktop")
    assert exec_args(entry["Exec"]) == [str(script), "--kiosk"]
    script.unlink()  # no console script (e.g. run from a checkout): python -m
    assert install.launch_command() == [str(bindir / "python"), "-m", "avaturn_desktop"]


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="no desktop-file-utils")
def test_the_entries_pass_desktop_file_validate(
    xdg: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / 'odd "path" $x %f' / "bin"
    bindir.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(bindir / "python"))
    assert cli.main(["install-desktop", "--autostart"]) == 0
    for path in (
        xdg[0] / "applications" / "avaturn-desktop.desktop",
        xdg[1] / "autostart" / "avaturn-desktop.desktop",
    ):
        result = subprocess.run(
            ["desktop-file-validate", str(path)], capture_output=True, text=True, check=False
        )
        problems = [ln for ln in result.stdout.splitlines() if ": hint: " not in ln]
        assert result.returncode == 0 and not problems, result.stdout


def test_an_unwritable_target_is_a_one_line_error(
    xdg: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    if os.name != "posix" or os.geteuid() == 0:
        pytest.skip("needs POSIX permissions that bind the user")
    xdg[0].mkdir()
    xdg[0].chmod(0o500)
    try:
        assert cli.main(["install-desktop"]) == 1
    finally:
        xdg[0].chmod(0o700)
    err = capsys.readouterr().err
    assert err.startswith("avaturn-desktop: could not install") and err.count("\n") == 1
