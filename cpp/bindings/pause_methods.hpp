// pause(), paused_for and pauses; the metrics counters; the stand-by methods: the same on both
// limiter kinds (see omnilimit/pause.hpp and omnilimit/standby.hpp).
#pragma once

#include <pybind11/pybind11.h>

#include <cmath>
#include <stdexcept>

#include "common.hpp"
#include "store.hpp"
#include "omnilimit/clock.hpp"
#include "omnilimit/pause.hpp"
#include "omnilimit/standby.hpp"
#include "wait.hpp"

namespace omnilimit::bindings {

// Adds the pause methods to `cls`, whose C++ type has a `Pause pause` member. `on_hold(core, end)`
// runs after a pause was declared, with the end in effect (the rate limiter empties its bucket).
template <class Core, class OnHold>
void add_pause_methods(pybind11::class_<Core>& cls, OnHold on_hold) {
  namespace py = pybind11;
  cls.def(
         "pause",
         [on_hold](Core& core, double seconds) {
           if (!std::isfinite(seconds) || seconds < 0.0) {
             throw std::invalid_argument("seconds must be a finite number >= 0");
           }
           const Nanos now = now_ns();
           const Nanos end = core.pause.hold_until(saturating_add(now, seconds_to_ns(seconds)), now);
           if (end != 0) on_hold(core, end);
           return end == 0 ? 0.0 : static_cast<double>(end - now) / 1e9;
         },
         py::arg("seconds"),
         "Admits nothing for `seconds` (a pause in effect that ends later stays). Callers that meet\n"
         "the pause wait for its end plus a jitter of at most 1/8 of it (250 ms at most), within\n"
         "their timeout. Returns the seconds until the pause in effect ends.")
      .def_property_readonly(
          "paused_for",
          [](Core& core) {
            const Nanos now = now_ns();
            const Nanos end = core.pause.end_ns(now);
            return end == 0 ? 0.0 : static_cast<double>(end - now) / 1e9;
          },
          "Seconds until the pause in effect ends (0.0: none).")
      .def_property_readonly(
          "pauses", [](const Core& core) { return core.pause.pauses(); },
          "Pauses declared that moved the end of the pause (overlapping 429s count once).")
      .def_property_readonly(
          "rate_limited_count", [](const Core& core) { return core.pause.reported(); },
          "429s (and exhausted budgets) reported through on_rate_limited / on_response.")
      .def("_note_rate_limited", [](Core& core) { core.pause.note_reported(); })
      .def(
          "_pause_go_in",
          [](Core& core) {
            const Nanos now = now_ns();
            const Nanos end = core.pause.end_ns(now);
            return end == 0 ? 0.0 : static_cast<double>(core.pause.release_time(end) - now) / 1e9;
          },
          "Seconds until a caller arriving now may go under the pause in effect (its jitter\n"
          "included; 0.0: no pause). For coroutines, which wait for it on their loop's timer.");
}

// wait_quantile(q), wait_max() and the counters behind metrics(): `Core` has `WaitHistogram
// waits`, and the atomics total_acquired, blocked and denied.
template <class Core>
void add_metric_methods(pybind11::class_<Core>& cls) {
  namespace py = pybind11;
  cls.def(
         "wait_quantile",
         [](const Core& core, double q) {
           if (!(q > 0.0 && q <= 1.0)) throw std::invalid_argument("q must be in (0, 1]");
           const Nanos ns = core.waits.quantile(q, core.total_acquired.load(std::memory_order_relaxed));
           return figure(core.hooks, "wait_quantile", py::float_(static_cast<double>(ns) / 1e9), py::float_(q));
         },
         py::arg("q"),
         "The q-quantile of admitted callers' waits in seconds (within 5% of the exact value from\n"
         "1 us to 4.9 h, never above wait_max(); 0.0 for callers that did not wait).")
      .def(
          "wait_max",
          [](const Core& core) {
            return figure(core.hooks, "wait_max", py::float_(static_cast<double>(core.waits.max()) / 1e9));
          },
          "The longest wait of an admitted caller in seconds, exactly (0.0 if nobody waited).")
      .def(
          "_wait_buckets",
          [](const Core& core) { return figure(core.hooks, "wait_buckets", histogram_buckets(core.waits)); },
          "The wait histogram of the callers that waited: (buckets, sum_us, max_ns), buckets as\n"
          "(lower_ns, upper_ns, count) (WaitHistogram.buckets()).")
      .def_property_readonly(
          "denied_count", [](const Core& core) { return core.denied.load(std::memory_order_relaxed); },
          "acquire(timeout=0) calls refused (part of blocked_count).")
      .def(
          "_set_wait_hook",
          [](Core& core, py::object hook, double threshold_s) {
            if (!(threshold_s >= 0.0) || !std::isfinite(threshold_s)) {
              throw std::invalid_argument("the threshold must be a finite number of seconds >= 0");
            }
            core.hooks.long_wait_ns = hook.is_none() ? kForever : static_cast<Nanos>(threshold_s * 1e9);
            core.hooks.on_long_wait = std::move(hook);
          },
          py::arg("hook"), py::arg("threshold_s") = 0.0,
          "Calls hook(seconds) after each admitted caller that waited at least threshold_s, in that\n"
          "caller's thread (or task), the GIL held; None removes it. The hook must not reference the\n"
          "limiter (the native core is invisible to the garbage collector: a cycle would never be freed).")
      .def_property_readonly(
          "_blocked_here", [](const Core& core) { return core.blocked.load(std::memory_order_relaxed); },
          "The refusals this core counted (blocked_count without a store's figure: with Redis,\n"
          "this process's; shared through a segment, every process's), of which denied_count.")
      .def(
          "_refused",
          [](py::object self, py::object timeout, bool denied) {
            Core& core = self.cast<Core&>();
            Nanos timeout_ns = 0;
            if (!parse_timeout(timeout.ptr(), &timeout_ns)) throw py::error_already_set();
            denied = denied || timeout_ns == 0;
            if (denied) core.denied.fetch_add(1, std::memory_order_relaxed);
            if (!report_timeout(core.hooks, core.blocked, denied ? 0 : timeout_ns, timeout.ptr())) {
              throw py::error_already_set();
            }
          },
          py::arg("timeout"), py::arg("denied") = false,
          "Counts (and logs) an acquire made in Python (a coroutine's, a CombinedLimiter's) that got\n"
          "nothing, as acquire() does. `denied`: refused without waiting (the fail-fast form): counted\n"
          "as a denial, not logged.");
}

// For limiters whose waits are written in Python (the Redis limiters): the core's Standby
// (`Standby standby` and `std::atomic<bool> closed` in `Core`) from Python. A waiter reads
// _standby_generation() before it looks at the budget, then _stand_by(generation, until_ns);
// whoever changes the budget calls _notify_standing(); close() wakes everyone.
template <class Core>
void add_standby_methods(pybind11::class_<Core>& cls) {
  namespace py = pybind11;
  cls.def(
         "_standby_generation",
         [](const Core& core) { return core.standby.generation(); },
         "The stand-by generation, to read before looking at the budget.")
      .def(
          "_stand_by",
          [](Core& core, std::uint32_t seen, Nanos until_ns) {
            const Standby::Watch watch(core.standby);
            const WaitResult result = stand_by(watch, seen, until_ns);
            if (result == WaitResult::interrupted) throw py::error_already_set();
            return result == WaitResult::done || core.closed.load();
          },
          py::arg("seen"), py::arg("until_ns"),
          "Sleeps (GIL released) until the stand-by generation moves from `seen` or close() (True),\n"
          "or the clock reaches `until_ns` (False). KeyboardInterrupt is raised from the main thread.")
      .def(
          "_notify_standing", [](Core& core) { core.standby.notify(); },
          "Wakes every caller standing by (the budget changed in a way that may bring their turn).");
}

}  // namespace omnilimit::bindings
