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

py::tuple histogram_buckets(const WaitHistogram& h) {
  py::list buckets;
  const Nanos longest = h.max();
  for (int i = 0; i < WaitHistogram::kBuckets; ++i) {
    const std::int64_t n = h.count(i);
    if (n == 0) continue;
    const Nanos lo = WaitHistogram::lower_edge(i);
    Nanos up = WaitHistogram::upper_edge(i);
    // The waits of a bucket lie below its upper edge, and none above the maximum: the bucket
    // holding the maximum (the last one, always) ends there (just above it: its edge is open).
    if (longest >= lo && (longest < up || i == WaitHistogram::kBuckets - 1)) up = longest + 1;
    buckets.append(py::make_tuple(lo, up, n));
  }
  return py::make_tuple(buckets, h.sum_us(), longest);
}

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
      .def("buckets", &histogram_buckets,
           "(buckets, sum_us, max_ns): the non-empty buckets as (lower_ns, upper_ns, count), each\n"
           "holding the waits w with lower_ns <= w < upper_ns (the one holding the maximum ends just\n"
           "above it), the total of the waits in whole microseconds and the longest wait.")
      .def_property_readonly("max_ns", &WaitHistogram::max, "The longest wait recorded in ns (0: none).")
      .def_property_readonly("recorded", &WaitHistogram::recorded, "Waits recorded.");
}

}  // namespace omnilimit::bindings
