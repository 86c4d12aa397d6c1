// omnilimit._core.WaitHistogram: the wait histogram behind the limiters' wait_quantile() and
// wait_max(), on its own, so that its accuracy can be checked with waits of known lengths.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <stdexcept>

#include "common.hpp"
#include "omnilimit/histogram.hpp"

namespace omnilimit::bindings {

void register_histogram(py::module_& m) {
  py::class_<WaitHistogram>(m, "WaitHistogram", R"doc(
How long callers waited: log-linear buckets (32 per power of two, 1 us to 4.9 h), lock-free, and
the longest wait exactly. A limiter keeps one (wait_quantile(), wait_max()); this one is for tests.)doc")
      .def(py::init<>())
      .def(
          "record", [](WaitHistogram& h, Nanos wait_ns) { h.record(wait_ns); }, py::arg("wait_ns"),
          "Counts one wait of `wait_ns` nanoseconds.")
      .def(
          "quantile",
          [](const WaitHistogram& h, double q, std::optional<std::int64_t> total) {
            if (!(q > 0.0 && q <= 1.0)) throw std::invalid_argument("q must be in (0, 1]");
            return h.quantile(q, total ? *total : h.recorded());
          },
          py::arg("q"), py::arg("total") = py::none(),
          "The q-quantile in ns of the waits of `total` callers (default: those recorded), the\n"
          "others having waited 0 ns.")
      .def_property_readonly("max_ns", &WaitHistogram::max, "The longest wait recorded in ns (0: none).")
      .def_property_readonly("recorded", &WaitHistogram::recorded, "Waits recorded.");
}

}  // namespace omnilimit::bindings
