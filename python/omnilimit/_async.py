"""Coroutines on the native limiters: the event-loop side of ``acquire_async``.

A coroutine waits in the same C++ queues as threads (so one budget and one arrival order serve
both), with an ``_core.AsyncWait`` in place of a sleeping thread. When the core wakes it (a slot
handed over, a queue re-planned), from whichever thread did so, the waiter is posted to its loop's
``_core.LoopNotifier``, whose eventfd the loop watches; the notifier's ``drain`` then resolves the
waiter's current future and the coroutine asks the core where it stands. Nothing polls and no
thread is parked.

Timed waits (a rate limiter's instant, a pause's end, a timeout) do not arm a loop timer each:
the notifier also keeps the loop's timed waits, a heap of (instant, future) in C++ with a single
loop timer armed for its earliest entry (``LoopState``). A loop timer per waiter costs a
``TimerHandle``, a push into the loop's heap compared in Python, and a cancelled handle left in
that heap; a waiter here costs one push, and a future resolved otherwise is skipped when its
instant comes (the heap is compacted once it holds more than twice what was live).

Cancellation. Every wait is wrapped so that a coroutine that leaves early (timeout,
``CancelledError``, ``GeneratorExit``) takes itself out of the queue and gives back whatever was
handed to it meanwhile; a rate reservation whose time has not come is refunded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import threading
import time
import types
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, cast, overload

from omnilimit import _core
from omnilimit._shown import shown
from omnilimit._validate import token_count

F = TypeVar("F", bound=Callable[..., Any])

FOREVER_NS: Final = _core.FOREVER_NS
_monotonic_ns = _core.monotonic_ns


class LoopState:
    """What omnilimit keeps per event loop: its ``LoopNotifier`` (registered with the loop's
    ``add_reader``: the core's wake-ups) and the one loop timer of its timed waits (the notifier's
    ``wake_at``, armed here for the earliest instant). Holds the loop weakly."""

    __slots__ = ("__weakref__", "_handle", "_loop", "notifier")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)
        self._handle: asyncio.TimerHandle | None = None
        self.notifier = _core.LoopNotifier()
        self.notifier.set_arm(self._arm_weakly())

    def _arm_weakly(self) -> Callable[[int], None]:
        """``arm(at_ns)`` for the notifier, holding this state weakly (the notifier is the state's)."""
        me = weakref.ref(self)

        def arm(at_ns: int) -> None:
            state = me()
            if state is not None:
                state._arm_timer(at_ns)

        return arm

    def _arm_timer(self, at_ns: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        loop = self._loop()
        if loop is None or loop.is_closed():
            self._handle = None
            return
        delay_s = max(0.0, (at_ns - _monotonic_ns()) / 1e9)
        if not isinstance(loop, asyncio.BaseEventLoop):
            # Other loops keep whole milliseconds (uvloop: libuv's timers, rounded to the nearest):
            # a timer rounded down would fire before its instant and be armed again at once, in a
            # busy loop until the instant. Rounded up, it fires at or after it.
            delay_s = math.ceil(delay_s * 1e3) / 1e3
        self._handle = loop.call_later(delay_s, self.notifier.expire)


_states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()
_last = threading.local()  # per thread: (a weak reference to the loop last seen, its state)


def here(loop: asyncio.AbstractEventLoop) -> LoopState:
    """The loop's state, made and registered with the loop on first use (from the loop's thread).
    Its notifier is closed when the loop is garbage-collected. Kept as an attribute of the loop
    where the loop has a ``__dict__`` (asyncio's loops: the fastest look-up), else found through
    a weak map and a per-thread cache (uvloop)."""
    found: LoopState | None = getattr(loop, "_omnilimit_state", None)
    if found is not None:
        return found
    last = getattr(_last, "pair", None)
    if last is not None and last[0]() is loop:
        return cast(LoopState, last[1])
    with _states_lock:
        found = _states.get(loop)
        if found is None:
            found = LoopState(loop)
            loop.add_reader(found.notifier.fd, found.notifier.drain)
            _states[loop] = found
            weakref.finalize(loop, found.notifier.close)
            with contextlib.suppress(AttributeError):  # no __dict__ (uvloop): the map and the cache serve
                loop._omnilimit_state = found  # type: ignore[attr-defined]
    _last.pair = (weakref.ref(loop), found)
    return found


def notifier(loop: asyncio.AbstractEventLoop) -> _core.LoopNotifier:
    """The loop's notifier (see ``here``)."""
    return here(loop).notifier


def resolve(future: asyncio.Future[None]) -> None:
    """Wakes the coroutine awaiting `future` (once: a second call does nothing)."""
    if not future.done():
        future.set_result(None)


deadline: Final[Callable[[object], tuple[int, int]]] = _core._deadline
"""deadline(timeout) -> (the timeout in ns, the instant on the core's clock by which the acquire
must succeed), ``FOREVER_NS`` for None. Raises ValueError for a bad timeout, as ``acquire()``
does."""


def seconds_until(instant_ns: int) -> float:
    return max(0.0, (instant_ns - _core.monotonic_ns()) / 1e9)


def seconds_left(deadline: int) -> float:
    """The seconds until `deadline` on the core's clock, 0 once passed (inf: no deadline)."""
    return float("inf") if deadline >= _core.FOREVER_NS else seconds_until(deadline)


def timeout_left(deadline: int) -> float | None:
    """What is left of a deadline as a ``timeout`` argument: seconds (None: no deadline)."""
    return None if deadline >= _core.FOREVER_NS else seconds_until(deadline)


def wake_or_timer(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], at_ns: int) -> asyncio.Future[None]:
    """`future`, to be awaited: resolved when the core wakes the waiter, or by the loop's
    ``Deadlines`` when the core's clock reaches `at_ns` (``FOREVER_NS``: no deadline)."""
    if at_ns < FOREVER_NS:
        here(loop).notifier.wake_at(future, at_ns)
    return future


async def stand_by(limiter: Any, until_ns: int) -> None:
    """Waits until the core's clock reaches `until_ns`, or something changes the limiter's
    prospects (a refund, a new rate, a re-planned queue, ``close()``): the caller looks again
    either way. Raises LimiterClosed when the limiter is (or gets) closed."""
    loop = asyncio.get_running_loop()
    waiter = _core.AsyncWait(notifier(loop))
    waiter.future = future = loop.create_future()
    limiter._async_stand_by(waiter)  # raises LimiterClosed
    try:
        await wake_or_timer(loop, future, until_ns)
    finally:
        limiter._async_stand_by_end(waiter)
    if limiter.closed:
        raise _core.LimiterClosed("the limiter is closed")


async def event_set(event: threading.Event, wait_s: float) -> bool:
    """Waits on the loop until a ``threading.Event`` set by another thread is set (True), at most
    ``wait_s`` (False). It looks at growing intervals (1 ms to 50 ms): for rare waits, such as a
    subscription's confirmation."""
    until = time.monotonic() + wait_s
    interval = 0.001
    while not event.is_set():
        left = until - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(interval, left))
        interval = min(interval * 2, 0.05)
    return True


async def sleep_until(at_ns: int) -> None:
    """Sleeps on the loop's timer until the core's clock reaches `at_ns` (never earlier: the
    loop may fire a timer up to its clock resolution early, so look again)."""
    while (left := seconds_until(at_ns)) > 0:
        await asyncio.sleep(left)


class DefaultTimeout:
    """The ``timeout`` of a ``limit`` decorator that was given none: the limiter's own default (the
    one ``with limiter:`` waits: 120 s for a concurrency or combined limiter, 60 s for a rate
    limiter). Its one instance is ``DEFAULT_TIMEOUT``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<the limiter's default>"


DEFAULT_TIMEOUT: Final = DefaultTimeout()

_NOT_GIVEN: dict[str, object] = {"timeout": DEFAULT_TIMEOUT, "tokens": None}  # limit()'s keywords, unset


class AsyncLimiting:
    """``async with limiter:`` and ``@limiter.limit`` for a limiter class, which defines
    ``acquire`` and ``acquire_async`` (with their default timeouts), ``_async_release`` (what
    leaving ``with`` / ``async with`` does) and ``_timeout_error``. Each subclass gets the methods
    under its own name (``ConcurrencyLimiter.limit``): no message or repr names this mixin."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _NAMED_PER_CLASS:
            inherited = getattr(getattr(cls, name, None), "__code__", None)
            if name not in cls.__dict__ and inherited is _NAMED_PER_CLASS[name].__code__:
                setattr(cls, name, _renamed(_NAMED_PER_CLASS[name], cls))

    async def acquire_async(self, timeout: float | None = None) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def _async_release(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _timeout_error(self) -> BaseException:  # pragma: no cover - overridden
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        if not await self.acquire_async():
            raise self._timeout_error()  # acquire_async counted and logged the timeout
        return self

    async def __aexit__(self, *exc_info: object) -> bool:
        self._async_release()
        return False

    @overload
    def limit(self, function: F, /, *, timeout: float | None = ..., tokens: int | None = ...) -> F: ...

    @overload
    def limit(self, /, *, timeout: float | None = ..., tokens: int | None = ...) -> Callable[[F], F]: ...

    def limit(self, *args: Any, **options: Any) -> Any:
        """Decorates a function (``def`` or ``async def``) so that each call runs under this
        limiter::

            @limiter.limit                         # the default timeout, as `with limiter:`
            @limiter.limit()                       # the same
            @limiter.limit(timeout=5, tokens=800)  # acquire(timeout=5, tokens=800) at each call
            limiter.limit(function, timeout=5)     # the same, without the @

        A call acquires (on the event loop for a coroutine function), raises ``LimiterTimeout``
        when nothing came within the timeout (``None``: waits forever), runs the function and then
        releases as leaving ``with limiter:`` does (a slot freed, a request recorded with the
        tokens as reserved), even when the function raises. ``tokens`` applies where ``acquire``
        takes it (a rate or combined limiter; without a token budget it is ignored, as there).
        Raises ValueError for a bad timeout or token count, and TypeError for anything but a
        function or these keywords, here rather than at the first call."""
        owner = f"{type(self).__name__}.limit"
        function = _limit_arguments(owner, args, options)
        decorate: Callable[[Any], Any] = _decorator(lambda: self, owner, "", options, self, each_call=False)
        return decorate if function is None else decorate(function)


_NAMED_PER_CLASS: dict[str, Callable[..., Any]] = {
    name: AsyncLimiting.__dict__[name] for name in ("__aenter__", "__aexit__", "limit")
}


def _renamed(function: Callable[..., Any], owner: type) -> Callable[..., Any]:
    """A copy of `function` named as a method of `owner` (its ``__qualname__``: what a bound
    method's repr and ``help()`` show)."""
    assert isinstance(function, types.FunctionType)
    copy = types.FunctionType(
        function.__code__, function.__globals__, function.__name__, function.__defaults__, function.__closure__
    )
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__dict__.update(function.__dict__)
    copy.__doc__ = function.__doc__
    copy.__module__ = function.__module__
    copy.__annotations__ = dict(function.__annotations__)
    copy.__qualname__ = f"{owner.__qualname__}.{function.__name__}"
    return copy


def role_limit(get: Callable[[], Any], role: object, options: dict[str, Any], *, owner: str) -> Callable[[F], F]:
    """``ProviderRateLimitManager.limit(role, timeout=..., tokens=...)``: a decorator running each
    call under the limiter that ``get()`` returns at that call (a ``reload()`` may replace it, or
    change its kind). `options`: ``timeout`` and ``tokens`` (``DEFAULT_TIMEOUT``, None: not given).
    The arguments are checked here; that ``tokens`` applies to the role's limiter is checked here
    when the role is known already, and at every call."""
    if not isinstance(role, str):
        raise TypeError(f"{owner}() takes the role first (@manager.limit('writer', timeout=5)), got {shown(role)}")
    try:
        limiter = get()
    except KeyError:  # not (yet) a role of the configuration: the call says so
        limiter = None
    return _decorator(get, owner, repr(role), options, limiter, each_call=True)


def _limit_arguments(owner: str, args: tuple[Any, ...], options: dict[str, Any]) -> Callable[..., Any] | None:
    """The function of ``limit(function)``, or None for ``limit(timeout=..., tokens=...)``; a
    TypeError naming `owner` for anything else."""
    unknown = [name for name in options if name not in _NOT_GIVEN]
    if unknown:
        raise TypeError(f"{owner}() got an unexpected keyword argument {unknown[0]!r} (it takes timeout= and tokens=)")
    if len(args) > 1:
        raise TypeError(f"{owner}() takes at most one positional argument, the function, got {len(args)}")
    if not args:
        return None
    if not callable(args[0]):
        raise TypeError(
            f"{owner}() takes the function to decorate, or keywords only (@limiter.limit(timeout=5)), "
            f"got {shown(args[0])}"
        )
    return cast(Callable[..., Any], args[0])


_takes_tokens_of: dict[type, bool] = {}


def _takes_tokens(kind: type) -> bool:
    """Whether ``kind.acquire`` takes ``tokens`` (a rate or combined limiter; not a concurrency
    limiter, which refuses the keyword)."""
    known = _takes_tokens_of.get(kind)
    if known is None:
        try:
            known = "tokens" in inspect.signature(kind.acquire).parameters  # type: ignore[attr-defined]
        except (AttributeError, TypeError, ValueError):  # no signature to read: let acquire() decide
            known = True
        _takes_tokens_of[kind] = known
    return known


def is_coroutine_function(function: object) -> bool:
    """Whether calling `function` makes a coroutine: an ``async def`` function, also through
    ``functools.partial`` and bound methods, or an object whose ``__call__`` is one."""
    while True:
        if inspect.iscoroutinefunction(function):
            return True
        if isinstance(function, functools.partial):
            function = function.func
        elif inspect.ismethod(function):
            function = function.__func__
        else:
            break
    # An instance with an ``async def __call__``; not a class (calling it makes an instance).
    plain = isinstance(function, (type, types.FunctionType))
    call = None if plain else getattr(function, "__call__", None)  # noqa: B004 - the method, not callable()
    return inspect.iscoroutinefunction(call)


def timeout_error(limiter: Any, timeout: object = DEFAULT_TIMEOUT) -> BaseException:
    """What ``with limiter:`` raises on a timeout (``LimiterTimeout: Rate limit timeout after 60s
    for NAME``), naming `timeout` when one was given."""
    error: BaseException = limiter._timeout_error() if timeout is DEFAULT_TIMEOUT else limiter._timeout_error(timeout)
    return error


def _decorator(
    get: Callable[[], Any], owner: str, lead: str, given: dict[str, Any], limiter: object, *, each_call: bool
) -> Callable[[F], F]:
    """The decorator of ``owner(lead, **given)``, its arguments checked now: a bad timeout or
    token count is a ValueError, as in ``acquire``; so is ``tokens`` for `limiter` (the one known
    now, or None) when its ``acquire`` takes none, and, with `each_call`, for the limiter that
    ``get()`` returns at a call."""
    given = {name: value for name, value in given.items() if value is not _NOT_GIVEN[name]}
    written = f"{owner}({', '.join([lead] * bool(lead) + [f'{k}={shown(v)}' for k, v in given.items()])})"
    timeout = given.get("timeout", DEFAULT_TIMEOUT)
    tokens = given.get("tokens")
    try:
        if timeout is not DEFAULT_TIMEOUT:
            _core._timeout_ns(timeout)
        if tokens is not None:
            token_count(tokens)
    except ValueError as error:
        raise ValueError(f"{written}: {error}") from None

    def check(limiter: object) -> None:
        if tokens is not None and not _takes_tokens(type(limiter)):
            kind = type(limiter).__name__
            raise ValueError(
                f"{written}: tokens does not apply to a {kind}, which has no token budget (its acquire() takes "
                "no tokens); it applies to a RateLimiter or a CombinedLimiter"
            )

    if limiter is not None:
        check(limiter)
    each = check if each_call and tokens is not None else None
    acquire = dict(given)

    def decorate(function: F) -> F:
        if not callable(function):
            raise TypeError(f"{written} decorates a function (def or async def), got {shown(function)}")
        if not acquire:
            return _with_default(get, function)
        if is_coroutine_function(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                limiter = get()
                if each is not None:
                    each(limiter)
                if not await limiter.acquire_async(**acquire):
                    raise timeout_error(limiter, timeout)  # acquire_async counted and logged it
                try:
                    return await function(*args, **kwargs)
                finally:
                    limiter._async_release()  # what leaving `async with limiter:` does

            return cast(F, run_async)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            limiter = get()
            if each is not None:
                each(limiter)
            if not limiter.acquire(**acquire):
                raise timeout_error(limiter, timeout)  # acquire counted and logged it
            try:
                return function(*args, **kwargs)
            finally:
                limiter._async_release()  # what leaving `with limiter:` does

        return cast(F, run)

    decorate.__qualname__ = decorate.__name__ = written
    return decorate


def _with_default(get: Callable[[], Any], function: F) -> F:
    """`function` under ``with get():`` (``async with get():`` for a coroutine function)."""
    if is_coroutine_function(function):

        @functools.wraps(function)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            async with get():
                return await cast(Callable[..., Awaitable[Any]], function)(*args, **kwargs)

        return cast(F, run_async)

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        with get():
            return function(*args, **kwargs)

    return cast(F, run)
