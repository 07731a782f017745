"""The staff PIN: a salted slow hash in an owner-only file, a constant-time check, and a lock
that grows with every wrong PIN and survives a restart."""

from __future__ import annotations

import hmac
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from avaturn_desktop.core.errors import ConfigError
from avaturn_desktop.core.pin import (
    PIN_FILE_NAME,
    LockoutPolicy,
    PinFileError,
    PinLockedError,
    PinNotSetError,
    ScryptParams,
    StaffPin,
    check_pin,
)

FAST = ScryptParams(n=2**8, r=8, p=1)  # the tests' cost; the default is checked once below


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / PIN_FILE_NAME


def make(path: Path, clock: Clock, **kw: object) -> StaffPin:
    return StaffPin(path, params=FAST, clock=clock, **kw)  # type: ignore[arg-type]


@pytest.fixture
def pin(path: Path, clock: Clock) -> StaffPin:
    p = make(path, clock)
    p.set("4821")
    return p


def test_right_and_wrong(pin: StaffPin) -> None:
    assert pin.verify("4821") is True
    assert pin.verify("4822") is False
    assert pin.verify("48210") is False
    assert pin.verify("") is False
    assert pin.verify("４８２１") is False  # full-width digits are not the PIN
    assert pin.failures == 4
    assert pin.verify("4821") is True
    assert pin.failures == 0


def test_the_file_holds_a_salted_hash_owner_only(path: Path, clock: Clock) -> None:
    old_umask = os.umask(0)  # even with a careless umask
    try:
        first = make(path, clock)
        first.set("482193")
    finally:
        os.umask(old_umask)
    text = path.read_text()
    assert "482193" not in text
    data = json.loads(text)
    assert data["kdf"] == "scrypt" and data["n"] == FAST.n
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first.set("482193")
    again = json.loads(path.read_text())
    assert again["salt"] != data["salt"] and again["hash"] != data["hash"]  # a fresh salt
    assert not [p for p in path.parent.iterdir() if p.name != PIN_FILE_NAME]  # no temp files


def test_a_file_readable_by_others_is_made_owner_only(pin: StaffPin, path: Path) -> None:
    if os.name != "posix":
        pytest.skip("POSIX modes")
    os.chmod(path, 0o644)
    assert pin.verify("4821")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_comparison_is_constant_time(pin: StaffPin, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert pin.verify("1111") is False
    assert pin.verify("x") is False  # cannot be a PIN: still hashed and compared
    assert len(calls) == 2 and all(len(a) == len(b) == 32 for a, b in calls)


@pytest.mark.parametrize("bad", ["123", "1234567890123", "12a4", "12 34", "١٢٣٤", ""])
def test_a_pin_is_4_to_12_ascii_digits(bad: str, path: Path, clock: Clock) -> None:
    with pytest.raises(ConfigError):
        make(path, clock).set(bad)
    assert not path.exists()


def test_good_pins() -> None:
    assert check_pin("0000") == "0000"
    assert check_pin("123456789012") == "123456789012"


def test_the_lock_grows_and_refuses_even_the_right_pin(pin: StaffPin, clock: Clock) -> None:
    for _ in range(4):  # four free wrong tries
        assert pin.verify("0000") is False
        assert pin.locked_for() == 0
    assert pin.verify("0000") is False  # the fifth locks
    assert pin.locked_for() == 30
    with pytest.raises(PinLockedError, match="30 s") as locked:
        pin.verify("4821")  # right, but locked: not even looked at
    assert locked.value.seconds_left == 30
    assert pin.failures == 5  # a refused try does not count
    clock.now += 29
    with pytest.raises(PinLockedError):
        pin.verify("0000")
    clock.now += 1
    assert pin.verify("0000") is False
    assert pin.locked_for() == 60  # doubled
    clock.now += 60
    assert pin.verify("0000") is False
    assert pin.locked_for() == 120
    clock.now += 120
    assert pin.verify("4821") is True
    assert pin.failures == 0 and pin.locked_for() == 0


def test_the_lock_has_a_ceiling_and_a_clock_set_back_cannot_stretch_it(
    path: Path, clock: Clock
) -> None:
    pin = make(path, clock, policy=LockoutPolicy(free_tries=1, first_lock_s=30, max_lock_s=300))
    pin.set("4821")
    for _ in range(10):
        assert pin.verify("0000") is False
        clock.now += pin.locked_for()
    assert pin.verify("0000") is False
    assert pin.locked_for() == 300
    clock.now -= 86_400  # the clock jumps back a day
    assert pin.locked_for() == 300
    with pytest.raises(PinLockedError, match="5 min"):
        pin.verify("4821")


def test_a_restart_keeps_the_count_and_the_lock(pin: StaffPin, path: Path, clock: Clock) -> None:
    for _ in range(5):
        pin.verify("0000")
    after_restart = make(path, clock)
    assert after_restart.failures == 5
    with pytest.raises(PinLockedError):
        after_restart.verify("4821")


def test_setting_a_new_pin_starts_the_count_again(pin: StaffPin) -> None:
    for _ in range(5):
        pin.verify("0000")
    pin.set("7777")
    assert pin.locked_for() == 0
    assert pin.verify("7777") and not pin.verify("4821")


def test_no_pin(path: Path, clock: Clock) -> None:
    pin = make(path, clock)
    assert not pin.is_set and pin.locked_for() == 0
    with pytest.raises(PinNotSetError):
        pin.verify("4821")
    pin.set("4821")
    pin.clear()
    assert not pin.is_set
    pin.clear()  # twice is fine


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        "[]",
        '{"format": 1}',
        '{"format": 2, "kdf": "scrypt"}',
        "{{PIN}}",
    ],
)
def test_a_damaged_file_keeps_the_console_locked(pin: StaffPin, path: Path, content: str) -> None:
    if content == "{{PIN}}":  # a valid file with the hash cut short
        data = json.loads(path.read_text())
        data["hash"] = data["hash"][:8]
        content = json.dumps(data)
    path.write_text(content)
    assert pin.is_set
    with pytest.raises(PinFileError, match="Delete it"):
        pin.verify("4821")


def test_a_weaker_hash_is_made_again_with_the_current_cost(path: Path, clock: Clock) -> None:
    make(path, clock).set("4821")
    stronger = StaffPin(path, params=ScryptParams(n=2**9), clock=clock)
    assert stronger.verify("4821")
    assert json.loads(path.read_text())["n"] == 2**9
    assert stronger.verify("4821") and make(path, clock).verify("4821")


def test_the_default_cost_works(tmp_path: Path) -> None:
    """OpenSSL refuses scrypt above 32 MiB unless told more may be used."""
    pin = StaffPin(tmp_path / PIN_FILE_NAME)
    pin.set("4821")
    assert pin.verify("4821")


def test_open_default_lives_in_the_data_dir(_isolated_home: Path) -> None:
    pin = StaffPin.open_default()
    assert pin.path == _isolated_home / PIN_FILE_NAME


@pytest.fixture(autouse=True)
def _no_leftover_umask() -> Iterator[None]:
    before = os.umask(0o022)
    os.umask(before)
    yield
    assert os.umask(before) == before
