"""tools/device_check.sh, the one prepared GPU check (issue 31), cannot run here (no GPU in CI), so what
can break without one is checked: the script parses as bash, every `python3 -m rsqair_bench ...` it
runs parses with the CLI's own parser (a renamed or removed flag fails here, not in a lease of a GPU),
and the suite it runs validates (tests/test_suite_config.py validates every shipped suite)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from rsqair_bench.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "device_check.sh"


def _commands() -> list[list[str]]:
    """The argument lists after `python3 -m rsqair_bench`, backslash continuations joined, $out filled in."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        match = re.search(r"python3 -m rsqair_bench (.*?)(?:\|\||\||$)", line)
        if match:
            found.append(shlex.split(match.group(1).replace('"$out', '"/tmp/out')))
    return found


def test_device_check_script_parses_as_bash() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_device_check_commands_parse_with_the_cli() -> None:
    commands = _commands()
    assert [c[0] for c in commands] == ["bench", "run"]
    for argv in commands:
        parser, _ = build_parser(only=argv[0])
        args = parser.parse_args(argv)
        assert args.subcommand == argv[0]
    bench = build_parser(only="bench")[0].parse_args(commands[0])
    assert bench.all and bench.device == "cuda"
    assert set(bench.precision) == {"fp32", "bf16"} and set(bench.modes) == {"eager", "compiled"}
    assert (ROOT / commands[1][1]).is_file()
