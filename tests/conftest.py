import sys
import threading
import time

import pytest


def wait_until(predicate, timeout=10.0, interval=0.001):
    """Polls `predicate` (test helper only) until it is true; fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {timeout}s")
        time.sleep(interval)


def start_thread(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def tiny_switch_interval():
    """Makes the interpreter switch threads as often as it can, to shake out races."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)
