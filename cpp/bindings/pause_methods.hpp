// pause(), paused_for and pauses: the same on both limiter kinds (see omnilimit/pause.hpp).
#pragma once

#include <pybind11/pybind11.h>

#include <cmath>
#include <stdexcept>

#include "omnilimit/clock.hpp"
#include "omnilimit/pause.hpp"

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
      .def("_note_rate_limited", [](Core& core) { core.pause.note_reported(); });
}

// wait_quantile(q) and the counters behind metrics(): `Core` has `WaitHistogram waits`, and the
// atomics total_acquired, blocked and denied.
template <class Core>
void add_metric_methods(pybind11::class_<Core>& cls) {
  namespace py = pybind11;
  cls.def(
         "wait_quantile",
         [](const Core& core, double q) {
           if (!(q > 0.0 && q <= 1.0)) throw std::invalid_argument("q must be in (0, 1]");
           const Nanos ns = core.waits.quantile(q, core.total_acquired.load(std::memory_order_relaxed));
           return static_cast<double>(ns) / 1e9;
         },
         py::arg("q"),
         "The q-quantile of admitted callers' waits in seconds (an upper bound within 25%; 0.0 for\n"
         "callers that did not wait).")
      .def_property_readonly(
          "denied_count", [](const Core& core) { return core.denied.load(std::memory_order_relaxed); },
          "acquire(timeout=0) calls refused (part of blocked_count).");
}

}  // namespace omnilimit::bindings
