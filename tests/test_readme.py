"""README.md stays true: its quickstart runs, its two set-up commands are well formed."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block(marker):
    match = re.search(
        rf"<!-- {marker} -->\s*```[a-z]*\n(.*?)```\s*<!-- /{marker} -->", README, re.S
    )
    assert match, f"README.md has no block between <!-- {marker} --> markers"
    return match.group(1)


def test_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _block("quickstart")
    assert len(code.strip().splitlines()) <= 25
    exec(compile(code, "README.md quickstart", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "mobile_freeze_net.keras").exists()


def test_exactly_two_setup_commands():
    section = README.split("## Set-up commands for a fresh machine", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```[a-z]*\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    main, test = (_block("main-command").strip(), _block("test-command").strip())
    assert [b.strip() for b in blocks] == [main, test]
    for command in (main, test):
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install")
        assert "\n" not in command
    script = re.search(r"(examples/\S+\.py)", main)
    assert script and (ROOT / script.group(1)).is_file()
    for backend in ("tensorflow", "torch", "jax"):
        assert backend in test
    assert "pytest" in test


@pytest.mark.parametrize("page", re.findall(r"\]\((docs/[^)]+|CHANGELOG.md)\)", README))
def test_linked_pages_exist(page):
    assert (ROOT / page).is_file(), page
