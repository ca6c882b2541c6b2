"""`--help` of every command exits 0 with its usage (click ends it with its own Exit exception,
which the one-line error handler must let through)."""

import pytest
from click.testing import CliRunner

from onnxcomp.cli import cli


@pytest.mark.parametrize("command", [[], *([name] for name in sorted(cli.commands))])
def test_help_exits_zero(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ") and "internal error" not in result.output
