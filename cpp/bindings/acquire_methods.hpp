// The fast acquire(timeout=...) and __enter__ that both limiter kinds share.
//
// A Kind describes one limiter class of the bindings:
//   using Core = ...;                                  its C++ object, with Hooks hooks and
//                                                      std::atomic<int64_t> blocked, denied
//   static Outcome take(Core&, Nanos timeout_ns);      how it waits (GIL released inside)
//   static void after_store(Core&, Outcome);          what it notes of the store's answer
//   static constexpr Nanos kDefaultTimeoutNs;          acquire()'s default timeout
//   static inline PyObject* default_timeout;           the same default as a Python int, for messages
//
// With a store (store.hpp), the store decides instead of take(); the counting and the timeout
// report stay here, the same for every store.
#pragma once

#include <pybind11/pybind11.h>

#include "common.hpp"
#include "store.hpp"

namespace omnilimit::bindings {

inline PyObject* timeout_keyword = nullptr;  // interned "timeout", set by the module

// acquire(timeout=<default>) -> bool
template <class Kind>
PyObject* fast_acquire(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    PyObject* timeout = nullptr;
    if (!parse_optional_arg("acquire", timeout_keyword, args, nargs, kwnames, &timeout)) return nullptr;
    Nanos timeout_ns = Kind::kDefaultTimeoutNs;
    if (timeout != nullptr && !parse_timeout(timeout, &timeout_ns)) return nullptr;
    auto* core = self_ptr<typename Kind::Core>(self);
    if (core == nullptr) return nullptr;
    Outcome outcome;
    if (core->hooks.has_store()) {
      outcome = take_from_store(core->hooks, self, &timeout, timeout == nullptr ? 0 : 1);
      Kind::after_store(*core, outcome);
    } else {
      outcome = Kind::take(*core, timeout_ns);
    }
    switch (outcome) {
      case Outcome::acquired: Py_RETURN_TRUE;
      case Outcome::error: return nullptr;
      case Outcome::timed_out: break;
    }
    if (timeout_ns == 0) core->denied.fetch_add(1, std::memory_order_relaxed);
    if (!report_timeout(core->hooks, core->blocked, timeout_ns, timeout ? timeout : Kind::default_timeout)) {
      return nullptr;
    }
    Py_RETURN_FALSE;
  });
}

// __enter__() -> self: acquire() with the default timeout, LimiterTimeout when it times out.
template <class Kind>
PyObject* fast_enter(PyObject* self, PyObject* const*, Py_ssize_t, PyObject*) {
  return guarded([&]() -> PyObject* {
    auto* core = self_ptr<typename Kind::Core>(self);
    if (core == nullptr) return nullptr;
    Outcome outcome;
    if (core->hooks.has_store()) {
      outcome = take_from_store(core->hooks, self, nullptr, 0);
      Kind::after_store(*core, outcome);
    } else {
      outcome = Kind::take(*core, Kind::kDefaultTimeoutNs);
    }
    switch (outcome) {
      case Outcome::acquired: Py_INCREF(self); return self;
      case Outcome::error: return nullptr;
      case Outcome::timed_out: break;
    }
    return raise_enter_timeout(core->hooks, core->blocked, Kind::default_timeout);
  });
}

}  // namespace omnilimit::bindings
