"""The ``omnilimit`` command."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `omnilimit ... | head`: the reader left; say nothing more
        import os
        import sys

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="omnilimit", description="Rate and concurrency limiters for LLM API calls.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "simulate",
        add_help=False,
        help="predict a run of a configuration against a simulated provider (seconds; simulate --help)",
    )
    commands.add_parser(
        "check", add_help=False, help="validate a configuration and show its effective limiters (check --help)"
    )
    commands.add_parser("demo", help="drive both limiters from a thread pool and print their stats (a few seconds)")
    commands.add_parser(
        "bench", add_help=False, help="measure omnilimit against the installed peers (about 45 s; bench --help)"
    )
    shm = commands.add_parser("shm", help="the shared-memory segments of shared limiters (list, remove)")
    shm_commands = shm.add_subparsers(dest="shm_command", required=True)
    shm_commands.add_parser("list", help="the segments in /dev/shm, with their size")
    remove = shm_commands.add_parser("remove", help="remove segments (processes using them keep their mapping)")
    remove.add_argument("names", nargs="+", metavar="NAME", help="a shared limiter's name (the part after omnilimit.)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from omnilimit.bench.report import main as bench

        return bench(rest)
    if args.command == "simulate":
        from omnilimit.simulate import main as simulate

        return simulate(rest)
    if args.command == "check":
        from omnilimit.check import main as check

        return check(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "demo":
        from omnilimit.demo import main as demo

        return demo()
    if args.command == "shm":
        return _shm(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


def _shm(args: argparse.Namespace) -> int:
    import os

    from omnilimit import _core, remove_shared
    from omnilimit._shown import printable

    if args.shm_command == "list":
        prefix = _core._shm_prefix()
        try:
            entries = sorted(name for name in os.listdir("/dev/shm") if name.startswith(prefix))
        except FileNotFoundError:
            print("no /dev/shm on this machine")
            return 1
        for entry in entries:
            info = os.stat(os.path.join("/dev/shm", entry))
            mine = "" if info.st_uid == os.geteuid() else f"\tanother user's (uid {info.st_uid}): not used"
            print(f"{printable(entry[len(prefix) :])}\t{info.st_size} bytes{mine}")
        return 0
    status = 0
    for name in args.names:
        try:
            removed = remove_shared(name)
        except (ValueError, OSError) as error:
            print(f"{name}: {error}")
            status = 1
            continue
        print(f"{name}: removed" if removed else f"{name}: no such segment")
        status = status if removed else 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
