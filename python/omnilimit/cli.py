"""The ``omnilimit`` command: ``omnilimit COMMAND [ARGS]``, one module's ``main(argv)`` per command.

Every command reports an error the same way, with ``fail``: one line ``omnilimit COMMAND: error:
MESSAGE`` on stderr and exit status 2. A command's parser is built with ``prog="omnilimit
COMMAND"`` so that argparse's own errors (a missing or unknown argument) read the same. A command
asked for JSON (``--json FILE``, ``-`` for standard output) that fails writes ``{"source": SOURCE,
"error": MESSAGE}`` there as well (``error_json``), so that a reader of the JSON learns of the
error without parsing stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

PROG = "omnilimit"
ERROR_STATUS = 2  # a refused input, an unreadable file, a usage error: argparse's own status

# the commands as `omnilimit --help` lists them, in that order
COMMANDS = {
    "check": "validate a configuration file and show the limiters it makes (instant; check --help)",
    "simulate": "predict a run of a configuration against a simulated provider (seconds; simulate --help)",
    "demo": "run both limiters under a thread pool, no configuration needed, and print what they "
    "let through (about 7 s; demo --help)",
    "bench": "measure omnilimit against the installed peers (about 45 s; bench --help)",
    "shm": "list or remove the shared-memory segments of shared limiters (shm --help)",
    "top": "watch the limiters live: this host's shared ones, a Redis server's, or a program's metrics "
    "endpoint (top --help)",
}


def error_line(command: str, message: str) -> str:
    """``omnilimit COMMAND: error: MESSAGE``, on one line (control characters in the message are
    escaped: a name from a file cannot forge a second line)."""
    from omnilimit._shown import printable

    return f"{PROG} {command}: error: {printable(message)}"


def error_json(source: str | None, message: str) -> str:
    """The JSON a failed command writes where its JSON was asked for: ``{"source": SOURCE,
    "error": MESSAGE}`` (SOURCE: the input it could not use, e.g. the configuration file as given
    on the command line; MESSAGE: what stderr says after the prefix), with a final newline."""
    from omnilimit._shown import printable

    data = {"source": source, "error": printable(message)}
    text = json.dumps(data, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in the source (a file name that is not UTF-8)
        text = json.dumps(data, indent=2)
    return text + "\n"


def fail(command: str, message: str, *, json_to: str | None = None, source: str | None = None) -> int:
    """Reports an error as every ``omnilimit`` command does and returns the exit status, 2.

    Prints ``omnilimit COMMAND: error: MESSAGE`` to stderr. With ``json_to`` (the command's
    ``--json`` argument: a file, or ``-`` for standard output) also writes ``error_json(source,
    message)`` there; a file that cannot be written is a second error line."""
    if json_to == "-":
        sys.stdout.write(error_json(source, message))
        sys.stdout.flush()
    print(error_line(command, message), file=sys.stderr)
    if json_to and json_to != "-":  # "" as None: what `if args.json:` makes of it
        try:
            with open(json_to, "w", encoding="utf-8") as out:
                out.write(error_json(source, message))
        except OSError as error:
            print(error_line(command, f"{json_to}: cannot write the JSON: {error.strerror or error}"), file=sys.stderr)
    return ERROR_STATUS


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except BrokenPipeError:  # `omnilimit ... | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1


def _parser() -> argparse.ArgumentParser:
    """The top-level parser: it lists the commands and refuses an unknown one; each command parses
    its own arguments (``omnilimit COMMAND --help``)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Rate and concurrency limiters for LLM API calls: check and simulate a provider "
        "configuration, see the limiters at work, measure them, manage their shared memory.",
        epilog=f"'{PROG} COMMAND --help' shows a command's options. An error is one line on stderr, "
        f"'{PROG} COMMAND: error: MESSAGE', with exit status {ERROR_STATUS}.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def _version() -> str:
    from importlib.metadata import version

    return version("omnilimit")


def _main(argv: list[str]) -> int:
    if not argv:  # `omnilimit` alone: what it can do, as a usage error
        _parser().print_help(sys.stderr)
        return ERROR_STATUS
    command, rest = argv[0], argv[1:]
    if command == "check":
        from omnilimit.check import main as check

        return check(rest)
    if command == "simulate":
        from omnilimit.simulate import main as simulate

        return simulate(rest)
    if command == "demo":
        from omnilimit.demo import main as demo

        return demo(rest)
    if command == "bench":
        return bench(rest)
    if command == "shm":
        return shm(rest)
    if command == "top":
        from omnilimit.top import main as top

        return top(rest)
    _parser().parse_args(argv)  # --help: the help, exit 0; anything else: `omnilimit: error: ...`, exit 2
    return ERROR_STATUS


# --- omnilimit bench -----------------------------------------------------------------------------

BENCH_MISSING = "the benchmark suite is a separate package: from a source checkout, pip install ./benchmarks"


def bench(argv: list[str]) -> int:
    """``omnilimit bench``: the benchmark suite's own command, ``omnilimit_bench.report.main``. The
    suite is not part of omnilimit (its package lives in the source tree's benchmarks/); without it
    the command fails with one line saying how to install it."""
    try:
        import omnilimit_bench  # noqa: F401  (the package alone: an error of its modules is theirs to tell)
    except ModuleNotFoundError as error:
        if error.name != "omnilimit_bench":
            raise
        return fail("bench", BENCH_MISSING)
    from omnilimit_bench.report import main as run_suite

    return run_suite(argv)


# --- omnilimit shm -------------------------------------------------------------------------------


def _shm_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} shm",
        description="The shared-memory segments of the limiters shared between processes (backend "
        "'shm'), one per shared name, in /dev/shm. A segment outlives the processes that use it: "
        "list them, or remove one to start its limiter afresh.",
        epilog=f"'{PROG} shm' alone shows this help (exit status {ERROR_STATUS}).",
    )
    actions = parser.add_subparsers(dest="action", metavar="COMMAND", required=True)
    actions.add_parser(
        "list",
        help="the segments in /dev/shm, with their size",
        description="List the segments of shared limiters in /dev/shm: one line per segment, its "
        "shared name and its size (another user's segments are marked: not used). Exit status 0.",
    )
    remove = actions.add_parser(
        "remove",
        help="remove segments (processes using them keep their mapping)",
        description="Remove the segments of the shared limiters named. A process that has one "
        "mapped keeps using it; the next process to open the name makes a fresh one. Exit status 0 "
        f"when every segment was removed, 1 when one did not exist, {ERROR_STATUS} on an error "
        "(an invalid name, no permission).",
    )
    remove.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help="a shared limiter's name (a segment's file name without its prefix, omnilimit. by default)",
    )
    return parser


def shm(argv: list[str]) -> int:
    """``omnilimit shm list`` / ``omnilimit shm remove NAME...``; ``omnilimit shm`` alone prints
    its help to stderr and returns 2 (a usage error that shows what there is to use)."""
    parser = _shm_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return ERROR_STATUS
    args = parser.parse_args(argv)
    if args.action == "list":
        return _shm_list()
    return _shm_remove(args.names)


def _shm_list() -> int:
    import os

    from omnilimit import _core
    from omnilimit._shown import printable

    try:
        prefix = _core._shm_prefix()
    except ValueError as error:  # OMNILIMIT_SHM_PREFIX set to something unusable
        return fail("shm list", str(error))
    try:
        entries = sorted(name for name in os.listdir("/dev/shm") if name.startswith(prefix))
    except FileNotFoundError:
        return fail("shm list", "no /dev/shm on this machine")
    for entry in entries:
        info = os.stat(os.path.join("/dev/shm", entry))
        mine = "" if info.st_uid == os.geteuid() else f"\tanother user's (uid {info.st_uid}): not used"
        print(f"{printable(entry[len(prefix) :])}\t{info.st_size} bytes{mine}")
    return 0


def _shm_remove(names: list[str]) -> int:
    from omnilimit import remove_shared
    from omnilimit._shown import printable

    status = 0
    for name in names:
        try:
            removed = remove_shared(name)
        except (ValueError, OSError) as error:
            status = fail("shm remove", f"{name}: {error}")
            continue
        print(f"{printable(name)}: " + ("removed" if removed else "no such segment"))
        if not removed and status == 0:
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
