// omnilimit._core.RequestWindow: events in the last 60 s, in constant memory.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>

#include "common.hpp"
#include "omnilimit/window.hpp"

namespace omnilimit::bindings {

void register_window(py::module_& m) {
  py::class_<RequestWindow>(m, "RequestWindow", R"doc(
Events in the last 60 seconds: 1200 buckets of 50 ms, lock-free, about 9.6 KB whatever the rate.

Instants are steady clock ns; without `now_ns` the coarse clock (a scheduler tick) is read.)doc")
      .def(py::init<>())
      .def("record",
           [](RequestWindow& w, std::optional<Nanos> now, std::uint32_t n) {
             w.record(now ? *now : coarse_now_ns(), n);
           },
           py::arg("now_ns") = py::none(), py::arg("n") = 1)
      .def("count",
           [](const RequestWindow& w, std::optional<Nanos> now) {
             return w.count(now ? *now : coarse_now_ns());
           },
           py::arg("now_ns") = py::none(), "Estimated events in (now - 60 s, now].")
      .def_property_readonly_static("bucket_ns", [](py::object) { return RequestWindow::kBucketNs; })
      .def_property_readonly_static("buckets", [](py::object) { return RequestWindow::kBuckets; });
}

}  // namespace omnilimit::bindings
