// omnilimit._core.Gcra: the algorithm, with explicit instants, for tests and advanced callers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common.hpp"
#include "omnilimit/gcra.hpp"

namespace omnilimit::bindings {
namespace {

Nanos now_or(std::optional<Nanos> now) { return now ? *now : now_ns(); }

struct GcraObject final : ForkAware {
  GcraObject(Nanos interval_ns, std::int64_t burst) : bucket(interval_ns, burst) {}
  void reinit_after_fork() noexcept override { bucket.reinit_after_fork(); }
  Gcra bucket;
};

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
      .def("wait_for",
           [](const GcraObject& g, std::int64_t cost, std::optional<Nanos> now) {
             return g.bucket.wait_for(cost, now_or(now));
           },
           py::arg("cost") = 1, py::arg("now_ns") = py::none(), "ns until `cost` tokens are there; commits nothing.")
      .def("reserve_at",
           [](GcraObject& g, std::int64_t cost, Nanos at_ns, std::optional<Nanos> now) {
             return g.bucket.reserve_at(cost, at_ns, now_or(now));
           },
           py::arg("cost"), py::arg("at_ns"), py::arg("now_ns") = py::none(),
           "Commits `cost` tokens as an arrival at `at_ns`, if they are there then.")
      .def("charge",
           [](GcraObject& g, std::int64_t cost, std::optional<Nanos> now) { g.bucket.charge(cost, now_or(now)); },
           py::arg("cost"), py::arg("now_ns") = py::none(), "Takes `cost` more tokens, whatever the bucket holds.")
      .def("give_back",
           [](GcraObject& g, std::int64_t cost, std::optional<Nanos> now) { g.bucket.give_back(cost, now_or(now)); },
           py::arg("cost"), py::arg("now_ns") = py::none(), "Returns `cost` tokens, never beyond a full bucket.")
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

}  // namespace omnilimit::bindings
