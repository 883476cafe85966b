"""The `patio` command: ledger subcommands here, others plugged in by entry points."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from ledger.errors import FormatError, KeyFileError, LedgerError, VerificationError

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_FAILED = 1  # a check failed: the input was usable but is not valid
EXIT_UNUSABLE = 2  # the input could not be used at all
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `patio ... | head`


class CommandError(Exception):
    """A one-line message for stderr and the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_UNUSABLE) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    """The parser with the ledger's subcommands and every plugged-in package's."""
    parser = argparse.ArgumentParser(prog="patio", description="Patio ledger")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from ledger import commands as ledger_commands

    ledger_commands.register(commands)
    # Other packages (gateway, edge) add theirs through the "patio.commands" entry point,
    # so the ledger never imports them.
    for plugin in sorted(entry_points(group="patio.commands"), key=lambda ep: ep.name):
        plugin.load()(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors become one line on stderr and an exit code, never a traceback."""
    try:
        try:
            code = _run(argv)
        finally:  # also after --help's SystemExit: a reader gone away (`| head`) shows here
            sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that flush, too,
        # stays quiet (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CommandError as exc:
        print(f"patio: {exc}", file=sys.stderr)
        return exc.code
    except VerificationError as exc:
        print(f"patio: FAILED {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (FormatError, KeyFileError) as exc:
        print(f"patio: unusable input: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except LedgerError as exc:
        print(f"patio: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
