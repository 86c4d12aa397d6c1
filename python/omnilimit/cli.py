"""The ``omnilimit`` command."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omnilimit", description="Rate and concurrency limiters for LLM API calls.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="drive both limiters from a thread pool and print their stats (a few seconds)")
    commands.add_parser(
        "bench", add_help=False, help="measure omnilimit against the installed peers (about 35 s; bench --help)"
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from omnilimit.bench.report import main as bench

        return bench(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "demo":
        from omnilimit.demo import main as demo

        return demo()
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
