"""A command that ends before it returns must not exit with status 0.

Why: a `--plugin` file (or a relation it registers) runs code of its own, and one that called
`os._exit(0)` at import made `eval` exit 0 with no output at all: a script or CI job read that as
success. `os._exit` skips `finally` blocks and atexit handlers, so nothing after it can change the
status; `must_finish` therefore replaces `os._exit` while the command runs, and in this process
(not in forked children, such as data loader workers, whose exit is theirs) a call first says what
happened and then exits with status 1 where 0 was asked for. `sys.exit(0)` (SystemExit) from inside
a command is turned into a one-line error the same way. Any other status passes unchanged, e.g. the
143 of a SIGTERM during `data generate`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import NoReturn

from rsqair_bench.errors import BenchError


class EndedEarly(BenchError):
    """The command's code asked the process to exit with status 0 before the command returned."""


def _message(command: str, how: str) -> str:
    return (f"`{command}` was ended by {how} before it finished (a --plugin or relation file?); "
            "its output is incomplete, so the exit status is 1")


@contextlib.contextmanager
def must_finish(command: str) -> Iterator[None]:
    """Run the block (one CLI command) so that leaving it through os._exit(0) or sys.exit(0) exits non-zero."""
    real_exit = os._exit
    owner = os.getpid()

    def guarded_exit(status: int) -> NoReturn:
        if os.getpid() == owner and status == 0:
            try:
                print(f"error: {_message(command, 'os._exit(0)')}", file=sys.stderr, flush=True)
            finally:
                real_exit(1)
        real_exit(status)

    os._exit = guarded_exit  # type: ignore[assignment]
    try:
        yield
    except SystemExit as err:
        if err.code not in (0, None):
            raise
        raise EndedEarly(_message(command, f"sys.exit({err.code!r})")) from None
    finally:
        os._exit = real_exit
