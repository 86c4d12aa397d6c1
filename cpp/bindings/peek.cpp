// omnilimit._core._peek_segment(name): a shared limiter's figures read from its segment without
// taking part (SegmentView: mapped read-only), for `omnilimit top`. The rate kinds are read here,
// the concurrency kind next to its layout (register_semaphore.cpp).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common.hpp"
#include "omnilimit/rate_policy.hpp"
#include "omnilimit/shm_view.hpp"

namespace omnilimit::bindings {
namespace {

double per_minute(Nanos interval_ns) { return interval_ns > 0 ? 60e9 / static_cast<double>(interval_ns) : 0.0; }

}  // namespace

void add_common_figures(py::dict& out, const Pause& pause, const RequestWindow& window,
                        const std::atomic<std::int64_t>& admitted, const std::atomic<std::int64_t>& blocked,
                        const std::atomic<std::int64_t>& denied, const WaitHistogram& waits) {
  const Nanos now = now_ns();
  const std::int64_t total = admitted.load(std::memory_order_relaxed);
  out["admitted"] = total;
  const std::int64_t refused = blocked.load(std::memory_order_relaxed);
  const std::int64_t denials = denied.load(std::memory_order_relaxed);
  out["timed_out"] = refused > denials ? refused - denials : 0;
  out["denied"] = denials;
  out["rate_limited"] = pause.reported();
  out["pauses"] = pause.pauses();
  const Nanos end = pause.last_end_ns();
  out["paused_for"] = end > now ? static_cast<double>(end - now) / 1e9 : 0.0;
  out["current_rpm"] = window.count(now);
  out["wait_p50_s"] = static_cast<double>(waits.quantile(0.5, total)) / 1e9;
  out["wait_p99_s"] = static_cast<double>(waits.quantile(0.99, total)) / 1e9;
  out["wait_max_s"] = static_cast<double>(waits.max()) / 1e9;
  out["wait_buckets"] = histogram_buckets(waits);
}

namespace {

py::dict peek_rate(const RateShared& rate, const TokenShared* tokens) {
  py::dict out;
  out["kind"] = "rate";
  const Nanos interval = rate.bucket.interval_ns.load(std::memory_order_relaxed);
  out["rpm_limit"] = per_minute(interval);
  out["burst"] = rate.bucket.burst.load(std::memory_order_relaxed);
  add_common_figures(out, rate.pause, rate.recorded, rate.total_acquired, rate.blocked, rate.denied, rate.waits);
  if (tokens != nullptr) {
    out["tpm_limit"] = per_minute(tokens->tokens.interval_ns.load(std::memory_order_relaxed));
    out["current_tpm"] = tokens->tokens_used.count(now_ns());
    out["tokens_admitted"] = rate.tokens_admitted.load(std::memory_order_relaxed);
    out["tokens_settled"] = rate.tokens_settled.load(std::memory_order_relaxed);
  }
  return out;
}

py::dict peek(const std::string& name) {
  const SegmentView view(name);
  switch (view.kind()) {
    case kRateSegmentKind:
      if (const auto* rate = view.payload_as<RateShared>(kRateLayout)) return peek_rate(*rate, nullptr);
      break;
    case kTokenSegmentKind:
      if (const auto* shared = view.payload_as<TokenShared>(kTokenLayout)) return peek_rate(shared->rate, shared);
      break;
    default:
      if (py::object found = peek_concurrency(view); !found.is_none()) return found;
  }
  throw SegmentMismatch("segment '" + name + "' is of a kind or layout this version of omnilimit does not read (kind " +
                        std::to_string(view.kind()) + ", layout " + std::to_string(view.header()->fingerprint) +
                        "): another version made it");
}

}  // namespace

void register_peek(py::module_& m) {
  m.def("_peek_segment", &peek, py::arg("name"),
        "The figures of the shared limiter `name` (a segment's name without its prefix), read from a\n"
        "read-only mapping of its segment: a dict with `kind` ('rate' or 'concurrency'), its limits\n"
        "and counters (every process's), `wait_buckets` as WaitHistogram.buckets(). Raises\n"
        "FileNotFoundError for no such segment, SharedStateError for one that cannot be read.");
}

}  // namespace omnilimit::bindings
