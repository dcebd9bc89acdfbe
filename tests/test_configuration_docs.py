"""docs/configuration.md against the code: every flag and TOML key, both ways, so it cannot drift.

Flags come from each command's own `--help`; TOML keys from what the config checker and each sink
factory actually look up (a mapping that records every key asked for, present or not).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ka_exporter.alerting import config
from ka_exporter.alerting.config import TOP_KEYS, sink_factories
from ka_exporter.model import ModelConfig

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "configuration.md"
BIN = Path(sys.executable).parent
HEADING = re.compile(r"^#{2,3} (.+)$", re.MULTILINE)
OPTION = re.compile(r"^  (--[\w.-]+)(.*?)(?=^  -|\Z)", re.MULTILINE | re.DOTALL)
ENV = re.compile(r"\[env (\w+)\]")
# a smallest valid table of each sink type: what the factory must have to build at all
MINIMAL: dict[str, dict[str, Any]] = {
    "smtp": {"host": "mail.example", "from": "ka@example.com", "to": ["ops@example.com"]},
    "webhook": {"url": "https://hooks.example/ka"},
    "alertmanager": {"urls": ["http://127.0.0.1:9093"]},
    "slack": {"url_env": "KA_TEST_SLACK_URL"},
}


def sections() -> dict[str, str]:
    text = DOC.read_text()
    marks = list(HEADING.finditer(text))
    return {
        m.group(1): text[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        for i, m in enumerate(marks)
    }


def rows(section: str) -> list[list[str]]:
    """The body rows of the section's table, cells stripped."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def documented(heading: str, column: int = 0) -> set[str]:
    return {name for row in rows(sections()[heading]) for name in spans(row[column])}


def options(*command: str) -> dict[str, str | None]:
    """Flag -> environment variable (or None), read from the command's --help."""
    env = {**os.environ, "COLUMNS": "1000"}  # one line per option
    text = subprocess.run(
        [str(BIN / command[0]), *command[1:], "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    found = {}
    for match in OPTION.finditer(text.partition("\noptions:\n")[2]):
        if match.group(1) == "--help":
            continue
        variable = ENV.search(match.group(2))
        found[match.group(1)] = variable.group(1) if variable else None
    return found


@pytest.mark.parametrize(
    ("heading", "command"),
    [
        ("`ka-exporter`", ("ka-exporter",)),
        ("`ka-exporter analyze FILE`", ("ka-exporter", "analyze")),
        ("`ka-notify`", ("ka-notify",)),
        ("`ka-notify daemon`", ("ka-notify", "daemon")),
    ],
)
def test_every_flag_and_its_variable(heading: str, command: tuple[str, ...]) -> None:
    code = options(*command)
    table = {spans(row[0])[0]: spans(row[1]) for row in rows(sections()[heading])}
    assert set(table) == set(code)
    for flag, variable in code.items():
        assert table[flag] == ([variable] if variable else []), flag


def test_the_small_commands() -> None:
    table = rows(sections()["`ka-notify drain`, `queue`, `test`, `check-config`"])
    for command in ("drain", "queue", "test", "check-config"):
        flags = {
            f for row in table if spans(row[0])[0].split()[0] == command for f in spans(row[1])
        }
        assert flags == set(options("ka-notify", command)), command


def test_model_defaults() -> None:
    table = {spans(row[0])[0]: spans(row[2]) for row in rows(sections()["`ka-exporter`"])}
    defaults = ModelConfig()
    for flag in ("master-tolerance", "split-brain-debounce", "expire-after", "max-routers"):
        value = getattr(defaults, flag.replace("-", "_"))
        assert float(table[f"--vrrp.{flag}"][0]) == value, flag


class Asked(dict[str, Any]):
    """A table that remembers every key looked up, whether it is there or not."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)


def test_top_level_keys() -> None:
    assert documented("Top level") == TOP_KEYS


def test_damping_and_route_keys() -> None:
    damping, route = Asked(), Asked({"sinks": ["s"]})
    config._damping(damping, lambda *a, **k: None)
    config._routes([route], {"s"}, lambda *a, **k: None)
    assert documented("`[damping]`") == damping.asked
    assert documented("`[[route]]`") == route.asked


@pytest.mark.parametrize("kind", MINIMAL)
def test_sink_keys(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KA_TEST_SLACK_URL", "https://hooks.example/slack")
    table = Asked(MINIMAL[kind])
    sink_factories()[kind]("s", table)
    # a secret is asked for inline only to be refused: the page lists its _file and _env forms
    asked = {k for k in table.asked if f"{k}_file" not in table.asked}
    assert documented(f'`type = "{kind}"`') == asked
    assert documented("`[[sink]]`, every type") <= asked | {"name", "type"}
