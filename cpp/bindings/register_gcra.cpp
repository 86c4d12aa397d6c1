// omnilimit._core.Gcra (the algorithm, with explicit instants, for tests and advanced callers)
// and omnilimit._core.RateCore (the token bucket behind omnilimit.RateLimiter).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "acquire_methods.hpp"
#include "common.hpp"
#include "omnilimit/gcra.hpp"
#include "omnilimit/pause.hpp"
#include "pause_methods.hpp"
#include "omnilimit/window.hpp"
#include "wait.hpp"

namespace omnilimit::bindings {
namespace {

Nanos now_or(std::optional<Nanos> now) { return now ? *now : now_ns(); }

struct GcraObject final : ForkAware {
  GcraObject(Nanos interval_ns, std::int64_t burst) : bucket(interval_ns, burst) {}
  void reinit_after_fork() noexcept override { bucket.reinit_after_fork(); }
  Gcra bucket;
};

struct RateCore final : ForkAware {
  RateCore(double requests_per_minute, std::int64_t burst)
      : bucket(Gcra::interval_for(requests_per_minute, 60.0), burst) {}
  void reinit_after_fork() noexcept override { bucket.reinit_after_fork(); }

  Gcra bucket;
  Pause pause;             // the provider said "stop until" (on_rate_limited)
  RequestWindow recorded;  // record_request() calls in the last minute: the current RPM
  alignas(64) std::atomic<std::int64_t> total_acquired{0};
  std::atomic<std::int64_t> blocked{0};
};

WaitResult sleep_without_gil(Nanos until_ns) {
  return wait_without_gil(until_ns, [until_ns](Nanos step_until_ns) {
    sleep_until_ns(step_until_ns);
    return step_until_ns >= until_ns;
  });
}

struct Rate {
  using Core = RateCore;
  static constexpr Nanos kDefaultTimeoutNs = 60 * kNanosPerSecond;
  static inline PyObject* default_timeout = nullptr;

  static Outcome take(RateCore& core, Nanos timeout_ns) {
    Nanos now = now_ns();
    const Nanos deadline_ns = saturating_add(now, timeout_ns);
    for (;;) {
      if (core.pause.maybe_active()) {
        if (const Nanos end = core.pause.end_ns(now)) {
          // Paused: nothing is admitted before the end (plus this caller's jitter). Reserve only
          // then, so the callers released by the pause are spaced at the pace from its end.
          const Nanos go_at = core.pause.release_time(end);
          if (go_at > deadline_ns) return Outcome::timed_out;
          if (sleep_without_gil(go_at) == WaitResult::interrupted) return Outcome::error;
          now = now_ns();
          continue;
        }
      }
      // Decide before committing: a reservation is made only if its wait fits in the timeout.
      const Nanos max_wait_ns = deadline_ns == kForever ? kForever : std::max<Nanos>(deadline_ns - now, 0);
      const Reservation r = core.bucket.reserve(1, max_wait_ns, now);
      if (!r.admitted) return Outcome::timed_out;
      if (r.wait_ns == 0) break;
      if (sleep_without_gil(r.ready_at_ns) == WaitResult::interrupted) {
        core.bucket.refund(r, now_ns());  // KeyboardInterrupt: give the slot back if still possible
        return Outcome::error;
      }
      now = now_ns();
      // A pause declared while this caller slept voids its slot (the provider wants nothing
      // before the pause's end): wait for the end and reserve again.
      if (!core.pause.maybe_active() || core.pause.end_ns(now) == 0) break;
    }
    core.total_acquired.fetch_add(1, std::memory_order_relaxed);
    return Outcome::acquired;
  }
};

PyObject* fast_record_request(PyObject* self, PyObject* const*, Py_ssize_t nargs, PyObject* kwnames) {
  if (!no_arguments("record_request", nargs, kwnames)) return nullptr;
  RateCore* core = self_ptr<RateCore>(self);
  if (core == nullptr) return nullptr;
  core->recorded.record(coarse_now_ns());
  Py_RETURN_NONE;
}

PyObject* fast_exit(PyObject* self, PyObject* const*, Py_ssize_t, PyObject*) {
  RateCore* core = self_ptr<RateCore>(self);
  if (core == nullptr) return nullptr;
  core->recorded.record(coarse_now_ns());
  Py_RETURN_FALSE;
}

PyMethodDef fast_methods[] = {
    fast_method("acquire", fast_acquire<Rate>,
                "acquire($self, /, timeout=60)\n--\n\n"
                "Takes a token, sleeping until its reserved instant if the bucket is empty. `timeout` is\n"
                "in seconds (None: forever; 0: try once); a wait that would not fit fails at once and\n"
                "commits nothing. Returns True or False. Raises ValueError for a bad timeout."),
    fast_method("record_request", fast_record_request,
                "record_request($self, /)\n--\n\nRecords a request made (it counts in get_current_rpm())."),
    fast_method("__enter__", fast_enter<Rate>,
                "__enter__($self, /)\n--\n\nacquire() with the default timeout; raises LimiterTimeout on timeout."),
    fast_method("__exit__", fast_exit, "__exit__($self, *exc_info, /)\n--\n\nrecord_request()."),
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

void register_gcra(py::module_& m) {
  py::class_<Reservation>(m, "Reservation", "The outcome of Gcra.reserve(); pass it to refund().")
      .def_readonly("admitted", &Reservation::admitted)
      .def_readonly("wait_ns", &Reservation::wait_ns,
                    "Wait from `now` before the request may go (if not admitted: the wait it needed).")
      .def_readonly("ready_at_ns", &Reservation::ready_at_ns)
      .def_readonly("tat_ns", &Reservation::tat_ns)
      .def_readonly("increment_ns", &Reservation::increment_ns)
      .def_readonly("cost", &Reservation::cost)
      .def("__repr__", [](const Reservation& r) {
        return "Reservation(admitted=" + std::string(r.admitted ? "True" : "False") +
               ", wait_ns=" + std::to_string(r.wait_ns) + ", ready_at_ns=" + std::to_string(r.ready_at_ns) +
               ", tat_ns=" + std::to_string(r.tat_ns) + ", cost=" + std::to_string(r.cost) + ")";
      });

  py::class_<GcraObject>(m, "Gcra", R"doc(
The GCRA token bucket of the core: one atomic theoretical arrival time (TAT) in ns.

Gcra(interval_ns, burst): one token every `interval_ns` ns, at most `burst` at once. Every
method takes an optional `now_ns` (steady clock ns, the clock of time.monotonic_ns()); tests pass
fixed instants. All methods are thread-safe and lock-free except the setters.)doc")
      .def(py::init<Nanos, std::int64_t>(), py::arg("interval_ns"), py::arg("burst"))
      .def_static("interval_for", &Gcra::interval_for, py::arg("count"), py::arg("period_s"),
                  "The interval in ns for `count` requests per `period_s` seconds, rounded up.")
      .def("try_acquire",
           [](GcraObject& g, std::int64_t cost, std::optional<Nanos> now) {
             return g.bucket.try_acquire(cost, now_or(now));
           },
           py::arg("cost") = 1, py::arg("now_ns") = py::none())
      .def("reserve",
           [](GcraObject& g, std::int64_t cost, Nanos max_wait_ns, std::optional<Nanos> now) {
             return g.bucket.reserve(cost, max_wait_ns, now_or(now));
           },
           py::arg("cost") = 1, py::arg("max_wait_ns") = kForever, py::arg("now_ns") = py::none())
      .def("refund",
           [](GcraObject& g, const Reservation& r, std::optional<Nanos> now) {
             return g.bucket.refund(r, now_or(now));
           },
           py::arg("reservation"), py::arg("now_ns") = py::none())
      .def("tokens_available",
           [](const GcraObject& g, std::optional<Nanos> now) { return g.bucket.tokens_available(now_or(now)); },
           py::arg("now_ns") = py::none())
      .def("set_interval",
           [](GcraObject& g, Nanos interval_ns, std::optional<Nanos> now) {
             g.bucket.set_interval(interval_ns, now_or(now));
           },
           py::arg("interval_ns"), py::arg("now_ns") = py::none())
      .def("set_burst", [](GcraObject& g, std::int64_t burst) { g.bucket.set_burst(burst); },
           py::arg("burst"))
      .def("hold_until", [](GcraObject& g, Nanos until_ns) { g.bucket.hold_until(until_ns); },
           py::arg("until_ns"), "Admits nothing before `until_ns`, then from an empty bucket.")
      .def("limit_available",
           [](GcraObject& g, std::int64_t tokens, std::optional<Nanos> now) {
             g.bucket.limit_available(tokens, now_or(now));
           },
           py::arg("tokens"), py::arg("now_ns") = py::none(), "Leaves at most `tokens` available at `now_ns`.")
      .def_property_readonly("interval_ns", [](const GcraObject& g) { return g.bucket.interval_ns(); })
      .def_property_readonly("burst", [](const GcraObject& g) { return g.bucket.burst(); })
      .def_property_readonly("tat_ns", [](const GcraObject& g) { return g.bucket.tat_ns(); });
}

void register_rate_core(py::module_& m) {
  Rate::default_timeout = PyLong_FromLong(60);
  if (Rate::default_timeout == nullptr) throw py::error_already_set();

  py::class_<RateCore> cls(m, "RateCore", R"doc(
The native part of RateLimiter: a GCRA token bucket and a one-minute request window.

RateCore(requests_per_minute, burst). acquire(), record_request(), __enter__ and __exit__ are
implemented in C++ directly; the GIL is released only while a caller sleeps until its turn.)doc");
  cls.def(py::init<double, std::int64_t>(), py::arg("requests_per_minute"), py::arg("burst"))
      .def_property_readonly("interval_ns", [](const RateCore& c) { return c.bucket.interval_ns(); },
                             "Time between two requests at the configured rate, in ns (rounded up).")
      .def_property_readonly("burst", [](const RateCore& c) { return c.bucket.burst(); })
      .def_property_readonly("total_requests",
                             [](const RateCore& c) { return c.total_acquired.load(std::memory_order_relaxed); },
                             "Successful acquires since creation.")
      .def_property_readonly("blocked_count",
                             [](const RateCore& c) { return c.blocked.load(std::memory_order_relaxed); },
                             "Acquires that got no token (timeouts and failed tries).")
      .def("tokens_available",
           [](const RateCore& c, std::optional<Nanos> now) { return c.bucket.tokens_available(now_or(now)); },
           py::arg("now_ns") = py::none(), "Whole tokens that could be taken now without waiting.")
      .def("get_current_rpm", [](const RateCore& c) { return c.recorded.count(); },
           "record_request() calls in the last 60 seconds.")
      .def("limit_available",
           [](RateCore& c, std::int64_t tokens) { c.bucket.limit_available(tokens, now_ns()); },
           py::arg("tokens"),
           "Leaves at most `tokens` requests available now (the provider reports fewer remaining).")
      .def("_on_timeout",
           [](py::object, py::object timeout) {
             return "Rate limit timeout after " + py::str(timeout).cast<std::string>() + "s";
           },
           py::arg("timeout"), "Hook: called on a timed-out acquire; returns the message.");
  add_pause_methods(cls, [](RateCore& core, Nanos end) { core.bucket.hold_until(end); });
  add_fast_methods(cls, fast_methods);
}

}  // namespace omnilimit::bindings
