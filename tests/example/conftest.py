"""Fixtures of the COVID CXR example's tests."""

import pytest
import reproduce


@pytest.fixture
def cli(capsys):
    """Runs ``reproduce.main(argv)`` in this process: ``(exit code, stdout, stderr stripped)``,
    a refusal's ``SystemExit`` taken as its code."""

    def run(argv):
        try:
            code = reproduce.main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err.strip()

    return run
