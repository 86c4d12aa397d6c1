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
          "Pauses declared that moved the end of the pause (overlapping 429s count once).");
}

}  // namespace omnilimit::bindings
