// The one place where the bindings release the GIL.
//
// A caller that must wait (for a slot, or for its reserved instant) sleeps in the core with the
// GIL released, so every other Python thread runs at full speed meanwhile. Only the main thread
// can receive KeyboardInterrupt (CPython runs signal handlers there alone), and a core wait is
// not interrupted by signals, so the main thread waits in slices of at most kSignalSliceNs and
// runs pending signal handlers, with the GIL, between slices. Other threads sleep in one piece
// until they are woken or their deadline passes: no polling.
//
// The GIL is never requested while a core mutex is held: `step` takes and drops core locks
// itself and returns before the GIL is taken back.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <exception>

#include "omnilimit/clock.hpp"
#include "omnilimit/standby.hpp"

namespace omnilimit::bindings {

inline constexpr Nanos kSignalSliceNs = 50'000'000;  // 50 ms: KeyboardInterrupt within ~50 ms

// True in the thread that runs Python's signal handlers. Needs the GIL.
bool in_signal_thread();

enum class WaitResult { done, deadline, interrupted };

// Runs `step(until_ns) -> bool done` with the GIL released until it reports done or the steady
// clock passes `deadline_ns` (kForever: never). `step` must return by `until_ns`. `interrupted`
// means a signal handler raised: the Python error is set and the caller must undo its claim
// (cancel, refund) before returning nullptr.
template <class Step>
WaitResult wait_without_gil(Nanos deadline_ns, Step&& step) {
  const bool check_signals = in_signal_thread();
  for (;;) {
    const Nanos until =
        check_signals ? std::min(deadline_ns, saturating_add(now_ns(), kSignalSliceNs)) : deadline_ns;
    bool done = false;
    std::exception_ptr failure;
    PyThreadState* thread_state = PyEval_SaveThread();
    try {
      done = step(until);
    } catch (...) {
      failure = std::current_exception();
    }
    PyEval_RestoreThread(thread_state);
    if (failure) std::rethrow_exception(failure);
    if (done) return WaitResult::done;
    if (check_signals && PyErr_CheckSignals() != 0) return WaitResult::interrupted;
    if (until >= deadline_ns) return WaitResult::deadline;
  }
}

// Stands by (GIL released) until the stand-by generation moves from `seen` (done: something
// changed, look again) or the clock reaches `until_ns` (deadline).
inline WaitResult stand_by(const Standby::Watch& watch, std::uint32_t seen, Nanos until_ns) {
  return wait_without_gil(until_ns, [&](Nanos step_until_ns) { return watch.wait(seen, step_until_ns); });
}

}  // namespace omnilimit::bindings
