// What a limiter's native core is given besides its limits: the store that decides for it, when
// its state lives outside this process, and the callables that tell the Python layer of a timeout
// or an over-release.
//
// A limiter whose state lives elsewhere (a Redis store, python/omnilimit/backends) keeps its core
// for what stays in this process: the counters of what was refused, the pause, the stand-by that
// close() ends, and the in-process fallback of an outage policy. Its fast methods then ask the
// store (one branch on the fast path of every other limiter), and its figures are the store's
// when the store has them.
#pragma once

#include <pybind11/pybind11.h>

#include "common.hpp"

namespace omnilimit::bindings {

enum class Outcome { acquired, timed_out, error };

struct Hooks {
  py::object store;            // None: the core decides; else the object that does (see the Store protocol)
  py::object on_timeout;       // None, or on_timeout(timeout) -> message: a caller waited in vain
  py::object on_over_release;  // None, or on_over_release(): the first release without a held slot
  // None, or on_long_wait(seconds): an admitted caller waited at least long_wait_ns (telemetry's
  // spans; set and cleared by _set_wait_hook, with the GIL held, like every read of it).
  py::object on_long_wait = py::none();
  Nanos long_wait_ns = kForever;

  bool has_store() const { return !store.is_none(); }
};

// store.acquire(limiter, *args): True, False, or an exception (Outcome::error, with it set). The
// arguments are the caller's, checked by the fast method already.
Outcome take_from_store(const Hooks& hooks, PyObject* limiter, PyObject* const* args, Py_ssize_t nargs);

// Records an admitted caller's wait of `waited_ns` in `waits` and, when it lasted at least
// long_wait_ns, calls on_long_wait(seconds); an exception from it is reported as unraisable (the
// caller keeps what it was admitted to). With the GIL held: only callers that waited get here.
void record_wait(const Hooks& hooks, WaitHistogram& waits, Nanos waited_ns);

// store.release(limiter): True when a permit was given back, False when none was held.
// Returns false with the error set when the store raised (then *released is untouched).
bool give_back_to_store(const Hooks& hooks, PyObject* limiter, bool* released);

// A figure of the limiter: `local`, the core's own, or with a store store.figure(name, local, *args).
py::object figure(const Hooks& hooks, const char* name, py::object local);
py::object figure(const Hooks& hooks, const char* name, py::object local, py::object arg);

// Counts a caller that got nothing and, for a real wait (timeout > 0), tells on_timeout(timeout)
// (which logs it). Returns false with the error set if on_timeout raised.
bool report_timeout(const Hooks& hooks, std::atomic<std::int64_t>& blocked, Nanos timeout_ns, PyObject* timeout);

// For `with limiter:` after a timed-out acquire: counts it and raises LimiterTimeout with the
// message on_timeout(timeout) returns. Always returns nullptr.
PyObject* raise_enter_timeout(const Hooks& hooks, std::atomic<std::int64_t>& blocked, PyObject* timeout);

// The first over-release of a limiter calls on_over_release() (`reported` remembers it). Returns
// false with the error set if it raised.
bool report_over_release(const Hooks& hooks, std::atomic<bool>& reported);

}  // namespace omnilimit::bindings
