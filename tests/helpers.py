"""Helpers the tests share (import them: ``from helpers import wait_until``); the fixtures are in
conftest.py."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest


def need(module: str, extra: str = "test-all", *, load: bool = True):
    """Imports ``module`` for a test (or a whole test module) that cannot run without it (with
    ``load=False`` only checks that it is installed: None): without it the test is skipped, naming
    the extra that installs it, except under CI (the CI environment variable set), where it fails:
    CI installs everything and must run every test."""
    import importlib
    import importlib.util

    try:
        if not load:
            if importlib.util.find_spec(module) is None:
                raise ImportError(f"no module named {module!r}")
            return None
        return importlib.import_module(module)
    except ImportError as error:
        message = f"{module} is not installed ({error}; pip install '.[{extra}]' brings it)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run every test", pytrace=False)
        pytest.skip(message, allow_module_level=True)


def wait_until(predicate, timeout=10.0, interval=0.001):
    """Polls `predicate` (test helper only) until it is true; fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {timeout}s")
        time.sleep(interval)


_import_seconds: list[float] = []


def common_start(children: int) -> float:
    """A ``time.monotonic()`` instant (system-wide on Linux) at which `children` processes started
    now will all have imported omnilimit and be ready: a lead measured on this machine, since an
    editable install (which checks its build on import) or a loaded machine imports far slower
    than an installed wheel."""
    if not _import_seconds:
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import omnilimit, json, threading"], check=True, timeout=300)
        _import_seconds.append(time.monotonic() - started)
    cores = max(1, len(os.sched_getaffinity(0)))
    return time.monotonic() + 1.0 + 2.0 * _import_seconds[0] * max(1.0, children / cores)


def run_children(count, body, **values):
    """Starts `count` Python processes running `body` (formatted with `values`); returns their
    stdout, parsed as JSON, once all have finished."""
    script = textwrap.dedent(body).format(**values)
    children = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        results.append(json.loads(out))
    return results


def spawn(script, **values):
    """A Python process running `script` (dedented, formatted with `values`), its stdin, stdout
    and stderr piped as text: a child the test talks to line by line. ``finish(child)`` ends it."""
    code = textwrap.dedent(script).format(**values)
    pipe = subprocess.PIPE
    return subprocess.Popen([sys.executable, "-c", code], stdin=pipe, stdout=pipe, stderr=pipe, text=True)


def finish(child):
    """Kills `child` (if still running) and closes its pipes."""
    if child.poll() is None:
        child.kill()
    if not child.stdout.closed:
        child.communicate()


def start_thread(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def with_the_suite() -> dict[str, str]:
    """The environment for a child process that must import the benchmark suite's package,
    ``benchmarks/omnilimit_bench``, uninstalled (as pytest's ``pythonpath`` lets the tests do)."""
    benchmarks = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [benchmarks, os.environ.get("PYTHONPATH")]))}
