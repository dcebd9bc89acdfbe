"""Which way imports go: the exporter stands alone, lab/ is the harness that tests and bench share,
and nothing imports the tests; and no module grows past what a reader takes in. Read from the source
with ast, imports inside functions included."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# what each package may not import: the exporter ships alone; the harness serves the tests
FORBIDDEN = {
    "ka_exporter": {"tests", "lab", "bench"},
    "lab": {"tests"},
    "bench": {"tests"},
}


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `path`."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.partition(".")[0]


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_one_way(package: str) -> None:
    assert sources(package), f"no sources under {package}/"
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sources(package)
        for line, name in imports(path)
        if name in FORBIDDEN[package]
    ]
    assert not wrong, "\n".join(wrong)


def _distribution(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def test_the_exporter_imports_only_what_it_declares() -> None:
    """Every third-party package ka_exporter imports is a runtime dependency in pyproject.toml,
    and what only tests and bench need (scapy) is not."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {_distribution(r) for r in project["dependencies"]}
    owners = importlib.metadata.packages_distributions()
    third_party = {
        (path.relative_to(ROOT), name)
        for path in sources("ka_exporter")
        for _, name in imports(path)
        if name not in sys.stdlib_module_names and name != "ka_exporter"
    }
    undeclared = [
        f"{path} imports {name} ({', '.join(owners.get(name, ['not installed']))})"
        for path, name in sorted(third_party)
        if not {_distribution(d) for d in owners.get(name, [])} & declared
    ]
    assert not undeclared, "\n".join(undeclared)
    assert "scapy" not in declared


def modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import of a ka_exporter module in `path`."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:  # `from ka_exporter.notify import keepalived`
                yield node.lineno, f"{node.module}.{alias.name}"


def within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


# what a part of the exporter may import of ka_exporter: the delivery core knows nothing of VRRP
# or of where alerts come from; the ka-notify app builds on the core, never on the exporter's
CONTRACTS = {
    "ka_exporter/alerting": ("ka_exporter.alerting",),
    "ka_exporter/notify": (
        "ka_exporter.alerting",
        "ka_exporter.notify",
        "ka_exporter.flags",
        "ka_exporter.runtime",
        "ka_exporter.web",
        "ka_exporter.webconfig",
        "ka_exporter.version",
    ),
}


@pytest.mark.parametrize("part", sorted(CONTRACTS))
def test_each_part_imports_only_what_its_contract_allows(part: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sources(part)
        for line, module in modules(path)
        if within(module, "ka_exporter")
        and module != "ka_exporter"
        and not within(module, *CONTRACTS[part])
    ]
    assert not wrong, "\n".join(wrong)


def test_libraries_do_not_import_their_command_line() -> None:
    """The command lines are entry points; nothing imports them (ka-notify's may start its
    daemon, in ka_exporter.notify.service, which does not import it back)."""
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sources("ka_exporter")
        for line, module in modules(path)
        if within(module, "ka_exporter.cli", "ka_exporter.notify.cli")
    ]
    assert not wrong, "\n".join(wrong)


def test_only_the_ka_notify_app_imports_it() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sources("ka_exporter")
        if "notify" not in path.relative_to(ROOT).parts
        for line, module in modules(path)
        if within(module, "ka_exporter.notify")
    ]
    assert not wrong, "\n".join(wrong)


# past this a module holds more than one job and wants splitting along its own sections
MAX_LINES = 600


def test_no_module_outside_the_tests_is_over_the_size_a_reader_takes_in() -> None:
    long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in sources("ka_exporter") + sources("lab") + sources("bench")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert not long, "\n".join(long)
