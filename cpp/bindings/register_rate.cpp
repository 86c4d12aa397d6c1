// omnilimit._core.RateCore: the token bucket behind omnilimit.RateLimiter, with an optional token
// budget (tokens per minute) reserved together with each request.
//
// Without a token budget a RateCore is one lock-free Gcra. With one, requests and tokens live in a
// DualBucket (see dual_bucket.hpp): every acquire takes both at one instant, and callers that
// must wait queue in arrival order, re-planned whenever the budget changes. What a call
// reserved is remembered per thread (LatestReservations), so that record_request(tokens=used) in
// the same thread settles the difference; a call that moves to another thread detaches its
// reservation first (_detach_reservation) and settles it from there (_settle).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "acquire_methods.hpp"
#include "async_wait.hpp"
#include "common.hpp"
#include "omnilimit/dual_bucket.hpp"
#include "omnilimit/gcra.hpp"
#include "omnilimit/histogram.hpp"
#include "omnilimit/pause.hpp"
#include "omnilimit/schedule.hpp"
#include "omnilimit/shm_segment.hpp"
#include "omnilimit/window.hpp"
#include "pause_methods.hpp"
#include "wait.hpp"

namespace omnilimit::bindings {
namespace {

PyObject* tokens_keyword = nullptr;  // interned "tokens"
std::atomic<std::uint64_t> last_rate_id{0};

// What the processes sharing a rate limiter share: the payload of its segment
// (rate_limit_backend: shm). Every member is lock-free atomics, built in place by the segment's
// creator. An in-process limiter keeps one of its own.
struct RateShared {
  GcraWords bucket;
  Pause pause;             // the provider said "stop until" (on_rate_limited): every process waits
  RequestWindow recorded;  // record_request() calls in the last minute: the current RPM
  alignas(64) std::atomic<std::int64_t> total_acquired{0};
  std::atomic<std::int64_t> blocked{0};
  std::atomic<std::int64_t> denied{0};  // acquire(timeout=0) refused
  WaitHistogram waits;                  // how long the callers that had to wait waited
};
constexpr std::uint32_t kRateSegmentKind = 1;

// The segment of a shared rate limiter: opened, or created with fresh words for this rate.
std::unique_ptr<SharedSegment> open_rate_segment(const std::string& name, Nanos interval_ns, std::int64_t burst) {
  if (name.empty()) return nullptr;
  return std::make_unique<SharedSegment>(name, kRateSegmentKind, sizeof(RateShared), 0, [&](void* at) {
    auto* shared = new (at) RateShared();
    Gcra::init_words(shared->bucket, interval_ns, burst);
  });
}

std::unique_ptr<RateShared> local_rate_state(bool shared, Nanos interval_ns, std::int64_t burst) {
  if (shared) return nullptr;
  auto state = std::make_unique<RateShared>();
  Gcra::init_words(state->bucket, interval_ns, burst);
  return state;
}

struct RateCore final : ForkAware {
  RateCore(double requests_per_minute, std::int64_t burst, double tokens_per_minute, std::int64_t token_burst,
           const std::string& shm_name)
      : segment(open_rate_segment(shm_name, Gcra::interval_for(requests_per_minute, 60.0), burst)),
        local(local_rate_state(segment != nullptr, Gcra::interval_for(requests_per_minute, 60.0), burst)),
        shared(segment ? *static_cast<RateShared*>(segment->payload()) : *local),
        bucket(shared.bucket),
        pause(shared.pause),
        recorded(shared.recorded),
        total_acquired(shared.total_acquired),
        blocked(shared.blocked),
        denied(shared.denied),
        waits(shared.waits) {
    if (!(tokens_per_minute >= 0.0)) throw std::invalid_argument("tokens_per_minute must be >= 0 (0: no token budget)");
    if (segment && !segment->created()) {
      // An existing segment keeps its state; limits configured differently here apply from now on,
      // for every process (the latest configuration wins; the Python layer logs it).
      const Nanos interval = Gcra::interval_for(requests_per_minute, 60.0);
      if (bucket.interval_ns() != interval || bucket.burst() != burst) {
        limits_before = {bucket.interval_ns(), bucket.burst()};
        if (bucket.interval_ns() != interval) bucket.set_interval(interval);
        if (bucket.burst() != burst) bucket.set_burst(burst);
      }
    }
    if (tokens_per_minute > 0.0) {
      if (segment) throw std::invalid_argument("a limiter with a token budget cannot be shared between processes yet");
      dual = std::make_unique<DualBucket>(bucket.interval_ns(), burst, Gcra::interval_for(tokens_per_minute, 60.0),
                                          token_burst);
      async_reservation = py::reinterpret_steal<py::object>(PyContextVar_New("omnilimit.reservation", nullptr));
      if (!async_reservation) throw py::error_already_set();
    }
  }
  void reinit_after_fork() noexcept override {
    bucket.reinit_after_fork();  // a shared bucket is left alone: the other processes use it
    if (dual) dual->reinit_after_fork();
    schedule.reinit_after_fork();
  }

  // The request bucket: the lone Gcra, or the request half of the DualBucket.
  const Gcra& requests() const noexcept { return dual ? dual->requests() : bucket; }
  void hold_until(Nanos end) {
    if (dual) dual->hold_until(end); else bucket.hold_until(end);
  }
  void limit_available(std::int64_t n, Nanos now) {
    if (dual) dual->limit_available_requests(n, now); else bucket.limit_available(n, now);
  }

  const std::uint64_t id = last_rate_id.fetch_add(1, std::memory_order_relaxed) + 1;  // never reused
  std::unique_ptr<SharedSegment> segment;  // set for a limiter shared between processes
  std::pair<Nanos, std::int64_t> limits_before{0, 0};  // an existing segment's (interval, burst) on opening
  std::unique_ptr<RateShared> local;       // set otherwise
  RateShared& shared;
  Gcra bucket;                       // over shared.bucket; unused when `dual` is set
  std::unique_ptr<DualBucket> dual;  // set when there is a token budget
  // With a token budget: a ContextVar holding the tokens of the current task's latest unsettled
  // reservation (coroutines share their loop's thread, so a thread-local cannot tell them apart).
  py::object async_reservation;
  Pause& pause;
  Schedule schedule;  // where this process's sleepers wait; set_rate() moves their instants
  RequestWindow& recorded;
  RequestWindow tokens_used;  // tokens recorded in the last minute: the current TPM
  std::atomic<std::int64_t>& total_acquired;
  std::atomic<std::int64_t>& blocked;
  std::atomic<std::int64_t>& denied;
  std::atomic<std::int64_t> sleeping{0};  // this process's callers waiting for their instant or a pause's end
  WaitHistogram& waits;
};

// Counts a caller in RateCore::sleeping for as long as it lives.
class Sleeping {
 public:
  explicit Sleeping(RateCore& core) : count_(core.sleeping) { count_.fetch_add(1, std::memory_order_relaxed); }
  ~Sleeping() { count_.fetch_sub(1, std::memory_order_relaxed); }
  Sleeping(const Sleeping&) = delete;
  Sleeping& operator=(const Sleeping&) = delete;

 private:
  std::atomic<std::int64_t>& count_;
};

// Each thread's latest unsettled token reservation per limiter (a few limiters per thread; the
// oldest entry makes room for a new limiter, and its reservation then stands as reserved).
class LatestReservations {
 public:
  void remember(std::uint64_t limiter, std::int64_t tokens) noexcept {
    Entry* slot = nullptr;
    for (Entry& e : entries_) {
      if (e.limiter == limiter) slot = &e;
    }
    if (slot == nullptr) {
      slot = &entries_[next_];
      next_ = (next_ + 1) % kTracked;
    }
    *slot = Entry{limiter, tokens};
  }
  // The tokens of the thread's latest reservation on `limiter`, forgotten; nullopt if none.
  std::optional<std::int64_t> take(std::uint64_t limiter) noexcept {
    for (Entry& e : entries_) {
      if (e.limiter == limiter) {
        e.limiter = 0;
        return e.tokens;
      }
    }
    return std::nullopt;
  }

 private:
  struct Entry {
    std::uint64_t limiter = 0;
    std::int64_t tokens = 0;
  };
  static constexpr int kTracked = 4;
  Entry entries_[kTracked];
  int next_ = 0;
};
thread_local LatestReservations latest_reservations;

// Sleeps (GIL released) until `until_ns`: a pause's end, which no rate change moves.
WaitResult sleep_without_gil(Nanos until_ns) {
  return wait_without_gil(until_ns, [until_ns](Nanos step_until_ns) {
    sleep_until_ns(step_until_ns);
    return step_until_ns >= until_ns;
  });
}

// A sleeper that wakes more than this after its instant (and more than one interval) has missed
// its turn: it books again instead of going. Going would spend a slot from the past, and a busy
// event loop or an overloaded machine wakes many sleepers late at once: together they would
// burst. Within the tolerance a late sleeper keeps its slot, so ordinary wake-up latency costs
// nothing; beyond it, lateness costs capacity, never a burst: a window of any length W then sees
// at most burst + (W + tolerance) / interval admissions.
constexpr Nanos kLateToleranceNs = 5'000'000;

bool missed_turn(const Gcra& bucket, Nanos ready_ns, Nanos now) {
  return now - ready_ns > std::max(bucket.interval_ns(), kLateToleranceNs);
}

// A request (no token budget) from the lone Gcra: one reservation, then the sleep until its
// instant, which rate changes move (Schedule). `again`: book again (a rate change overlapped the
// booking, the sleeper lost track of the changes, or it woke too late: see kLateToleranceNs).
Outcome take_from_gcra(RateCore& core, Nanos now, Nanos deadline_ns, std::optional<Sleeping>& sleeping, bool* again) {
  const Nanos max_wait_ns = deadline_ns == kForever ? kForever : std::max<Nanos>(deadline_ns - now, 0);
  std::uint64_t epoch = core.schedule.epoch();
  const Reservation r = core.bucket.reserve(1, max_wait_ns, now);
  if (!r.admitted) return Outcome::timed_out;
  if (r.wait_ns == 0) return Outcome::acquired;
  if (!core.schedule.stable(epoch)) {  // the slot is spent; book again at the new pace
    *again = true;
    return Outcome::acquired;
  }
  Nanos ready_ns = r.ready_at_ns;
  Schedule::Woke woke = Schedule::Woke::deadline;
  if (!sleeping) sleeping.emplace(core);
  const WaitResult result = wait_without_gil(deadline_ns, [&](Nanos until_ns) {
    woke = core.schedule.wait(ready_ns, epoch, until_ns);
    return woke != Schedule::Woke::deadline;
  });
  if (result != WaitResult::done) {
    // KeyboardInterrupt, or a slower rate moved the instant past the timeout: give the slot
    // back if still possible.
    core.bucket.refund(r, now_ns());
    return result == WaitResult::interrupted ? Outcome::error : Outcome::timed_out;
  }
  *again = woke == Schedule::Woke::lost || missed_turn(core.bucket, ready_ns, now_ns());
  return Outcome::acquired;
}

// A request and `tokens` from the DualBucket: admitted at once, or queued until the head of the
// queue (see dual_bucket.hpp).
Outcome take_from_queue(RateCore& core, std::int64_t tokens, Nanos now, Nanos deadline_ns,
                        std::optional<Sleeping>& sleeping) {
  DualBucket::Ticket ticket(*core.dual, tokens, deadline_ns);
  DualBucket::Status status = core.dual->arrive(ticket, now);
  if (status == DualBucket::Status::queued) {
    if (!sleeping) sleeping.emplace(core);
    const WaitResult result = wait_without_gil(deadline_ns, [&](Nanos until_ns) {
      status = core.dual->wait(ticket, until_ns);
      return status != DualBucket::Status::queued;
    });
    if (result == WaitResult::interrupted) return Outcome::error;  // ~Ticket leaves the queue
  }
  return status == DualBucket::Status::admitted ? Outcome::acquired : Outcome::timed_out;
}

// acquire(): a pause first, then the request (and `tokens`, with a budget). Nothing is taken
// when the wait would not fit in the timeout.
Outcome take_request(RateCore& core, Nanos timeout_ns, std::int64_t tokens) {
  Nanos now = now_ns();
  const Nanos started_ns = now;
  const Nanos deadline_ns = saturating_add(now, timeout_ns);
  std::optional<Sleeping> sleeping;  // engaged at the first wait
  for (;;) {
    if (core.pause.maybe_active()) {
      if (const Nanos end = core.pause.end_ns(now)) {
        // Paused: nothing is admitted before the end (plus this caller's jitter). Reserve only
        // then, so the callers released by the pause are spaced at the pace from its end.
        const Nanos go_at = core.pause.release_time(end);
        if (go_at > deadline_ns) return Outcome::timed_out;
        if (!sleeping) sleeping.emplace(core);
        if (sleep_without_gil(go_at) == WaitResult::interrupted) return Outcome::error;
        now = now_ns();
        continue;
      }
    }
    bool again = false;
    const Outcome outcome = core.dual ? take_from_queue(core, tokens, now, deadline_ns, sleeping)
                                      : take_from_gcra(core, now, deadline_ns, sleeping, &again);
    if (outcome != Outcome::acquired) return outcome;
    now = now_ns();
    if (again) continue;
    // A pause declared while this caller slept voids its slot (the provider wants nothing
    // before the pause's end): wait for the end and reserve again.
    if (!core.pause.maybe_active() || core.pause.end_ns(now) == 0) break;
  }
  if (core.dual) latest_reservations.remember(core.id, tokens);
  if (sleeping) core.waits.record(now - started_ns);
  core.total_acquired.fetch_add(1, std::memory_order_relaxed);
  return Outcome::acquired;
}

// `tokens`: a whole number >= 0 (not a bool). Returns false with ValueError set otherwise.
bool parse_tokens(PyObject* value, std::int64_t* tokens) {
  if (PyLong_Check(value) && !PyBool_Check(value)) {
    int overflow = 0;
    const long long n = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (n == -1 && PyErr_Occurred()) return false;
    if (overflow == 0 && n >= 0 && n <= (1LL << 62)) {
      *tokens = n;
      return true;
    }
  }
  PyErr_Format(PyExc_ValueError, "tokens must be a whole number >= 0 (at most 2**62), got %R", value);
  return false;
}

struct Rate {
  using Core = RateCore;
  static constexpr Nanos kDefaultTimeoutNs = 60 * kNanosPerSecond;
  static inline PyObject* default_timeout = nullptr;
  static Outcome take(RateCore& core, Nanos timeout_ns) { return take_request(core, timeout_ns, 0); }
};

// acquire(timeout=60, tokens=0) -> bool
PyObject* fast_acquire(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    PyObject* names[2] = {timeout_keyword, tokens_keyword};
    PyObject* values[2] = {nullptr, nullptr};
    if (!parse_optional_args("acquire", names, 2, args, nargs, kwnames, values)) return nullptr;
    Nanos timeout_ns = Rate::kDefaultTimeoutNs;
    if (values[0] != nullptr && !parse_timeout(values[0], &timeout_ns)) return nullptr;
    std::int64_t tokens = 0;
    if (values[1] != nullptr && !parse_tokens(values[1], &tokens)) return nullptr;
    RateCore* core = self_ptr<RateCore>(self);
    if (core == nullptr) return nullptr;
    switch (take_request(*core, timeout_ns, tokens)) {
      case Outcome::acquired: Py_RETURN_TRUE;
      case Outcome::error: return nullptr;
      case Outcome::timed_out: break;
    }
    if (timeout_ns == 0) core->denied.fetch_add(1, std::memory_order_relaxed);
    PyObject* shown = values[0] != nullptr ? values[0] : Rate::default_timeout;
    if (!report_timeout(self, core->blocked, timeout_ns, shown)) return nullptr;
    Py_RETURN_FALSE;
  });
}

// The current task's latest unsettled reservation on `core` (a coroutine's acquire_async), taken.
std::optional<std::int64_t> take_task_reservation(RateCore& core) {
  PyObject* value = nullptr;
  if (PyContextVar_Get(core.async_reservation.ptr(), Py_None, &value) != 0) throw py::error_already_set();
  const py::object held = py::reinterpret_steal<py::object>(value);
  if (held.is_none()) return std::nullopt;
  PyObject* token = PyContextVar_Set(core.async_reservation.ptr(), Py_None);
  if (token == nullptr) throw py::error_already_set();
  Py_DECREF(token);
  return held.cast<std::int64_t>();
}

// What a finished call used: settles the thread's latest reservation (with a budget) and counts
// the request and its tokens. `used` < 0: "as reserved".
void record(RateCore& core, std::int64_t used) {
  const Nanos now = coarse_now_ns();
  core.recorded.record(now);
  std::int64_t reserved = 0;
  if (core.dual) {
    if (std::optional<std::int64_t> mine = latest_reservations.take(core.id)) {
      reserved = *mine;
    } else {
      reserved = take_task_reservation(core).value_or(0);
    }
    if (used >= 0 && used != reserved) core.dual->settle(reserved, used, now_ns());
  }
  const std::int64_t counted = used >= 0 ? used : reserved;
  if (counted > 0) core.tokens_used.record(now, counted);
}

// record_request(tokens=None)
PyObject* fast_record_request(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    PyObject* value = nullptr;
    if (!parse_optional_arg("record_request", tokens_keyword, args, nargs, kwnames, &value)) return nullptr;
    std::int64_t used = -1;
    if (value != nullptr && value != Py_None && !parse_tokens(value, &used)) return nullptr;
    RateCore* core = self_ptr<RateCore>(self);
    if (core == nullptr) return nullptr;
    record(*core, used);
    Py_RETURN_NONE;
  });
}

PyObject* fast_exit(PyObject* self, PyObject* const*, Py_ssize_t, PyObject*) {
  RateCore* core = self_ptr<RateCore>(self);
  if (core == nullptr) return nullptr;
  record(*core, -1);
  Py_RETURN_FALSE;
}

PyMethodDef fast_methods[] = {
    fast_method("acquire", fast_acquire,
                "acquire($self, /, timeout=60, tokens=0)\n--\n\n"
                "Takes a request (and `tokens` of the token budget, at the same instant, when there is\n"
                "one), sleeping until its reserved instant if need be. `timeout` is in seconds (None:\n"
                "forever; 0: try once); a wait that would not fit fails at once and commits nothing.\n"
                "Returns True or False. Raises ValueError for a bad timeout or token count."),
    fast_method("record_request", fast_record_request,
                "record_request($self, /, tokens=None)\n--\n\n"
                "Records a request made (it counts in get_current_rpm()). `tokens`: what it really used;\n"
                "with a token budget, the difference from the calling thread's latest reservation is\n"
                "charged or given back. None: as reserved."),
    fast_method("__enter__", fast_enter<Rate>,
                "__enter__($self, /)\n--\n\nacquire() with the default timeout; raises LimiterTimeout on timeout."),
    fast_method("__exit__", fast_exit, "__exit__($self, *exc_info, /)\n--\n\nrecord_request()."),
    {nullptr, nullptr, 0, nullptr}};

// ---- coroutines (acquire_async) --------------------------------------------------------------

void count_async_acquired(RateCore& core, Nanos started_ns) {
  if (started_ns != 0) core.waits.record(now_ns() - started_ns);
  core.total_acquired.fetch_add(1, std::memory_order_relaxed);
}

// No token budget: books the next instant if it comes by `deadline_ns`. Returns the seconds to
// sleep on the loop's timer (0.0: acquired now, counted), or None when it would not fit.
py::object async_reserve(py::object self, AsyncWait& w, Nanos deadline_ns) {
  RateCore& core = self.cast<RateCore&>();
  if (core.dual) throw std::logic_error("a limiter with a token budget queues tickets");
  for (;;) {
    const Nanos now = now_ns();
    const Nanos max_wait_ns = deadline_ns == kForever ? kForever : std::max<Nanos>(deadline_ns - now, 0);
    std::uint64_t epoch = core.schedule.epoch();
    const Reservation r = core.bucket.reserve(1, max_wait_ns, now);
    if (!r.admitted) return py::none();
    if (r.wait_ns == 0) {
      count_async_acquired(core, 0);
      return py::float_(0.0);
    }
    if (!core.schedule.stable(epoch)) continue;  // a rate change overlapped: the slot is spent
    w.bucket = &core.bucket;
    w.reservation = r;
    w.epoch = epoch;
    w.ready_ns = r.ready_at_ns;
    w.owner = self;
    w.started_ns = now;
    w.count_waiting(core.sleeping);
    w.schedule = &core.schedule;
    core.schedule.listen(w.listener);
    return py::float_(static_cast<double>(r.wait_ns) / 1e9);
  }
}

// After the timer, or a rate change's wake-up: the reservation's instant moved through the rate
// changes made meanwhile.
// Returns the seconds still to sleep (> 0: a slower rate), 0.0 when the turn has come (acquired,
// counted), or -1.0 when the changes were too many to follow or the coroutine woke too late
// (book again; the slot is spent).
double async_reserve_check(RateCore& core, AsyncWait& w) {
  if (w.bucket != &core.bucket) throw std::logic_error("this AsyncWait holds no reservation here");
  if (!core.schedule.follow(w.ready_ns, w.epoch)) {
    core.schedule.stop_listening(w.listener);
    w.bucket = nullptr;  // the slot is spent
    w.stop_counting();
    return -1.0;
  }
  const Nanos now = now_ns();
  if (w.ready_ns > now) return static_cast<double>(w.ready_ns - now) / 1e9;
  core.schedule.stop_listening(w.listener);
  if (missed_turn(core.bucket, w.ready_ns, now)) {  // the loop ran late: book again (see above)
    w.bucket = nullptr;
    w.stop_counting();
    return -1.0;
  }
  count_async_acquired(core, w.started_ns);
  w.bucket = nullptr;
  w.stop_counting();
  return 0.0;
}

// A coroutine gives up before its instant: the reservation goes back if still possible.
void async_refund(RateCore& core, AsyncWait& w) {
  if (w.bucket != &core.bucket) return;
  core.schedule.stop_listening(w.listener);
  core.bucket.refund(w.reservation, now_ns());
  w.bucket = nullptr;
  w.stop_counting();
}

// With a token budget: a ticket for one request and `tokens`. 0: admitted now (counted), 1:
// queued (wake-ups come through the waiter), 2: refused (its turn would not come by the deadline).
int async_ticket(py::object self, AsyncWait& w, std::int64_t tokens, Nanos deadline_ns) {
  RateCore& core = self.cast<RateCore&>();
  if (!core.dual) throw std::logic_error("a limiter without a token budget books reservations");
  if (w.ticket) throw std::logic_error("this AsyncWait was already used");
  w.ticket.emplace(*core.dual, tokens, deadline_ns, &w);
  w.tokens = tokens;
  w.owner = self;
  const Nanos now = now_ns();
  switch (core.dual->arrive(*w.ticket, now)) {
    case DualBucket::Status::admitted:
      count_async_acquired(core, 0);
      return 0;
    case DualBucket::Status::refused:
      return 2;
    case DualBucket::Status::queued:
      break;
  }
  w.started_ns = now;
  w.count_waiting(core.sleeping);
  return 1;
}

// A queued ticket looks again: (0 admitted and counted | 1 queued | 2 refused, seconds until it
// should look again if nothing wakes it first, or None).
py::tuple async_ticket_poll(RateCore& core, AsyncWait& w) {
  if (!w.ticket || !core.dual) throw std::logic_error("this AsyncWait holds no ticket here");
  Nanos wake_at = kForever;
  const Nanos now = now_ns();
  switch (core.dual->poll(*w.ticket, now, &wake_at)) {
    case DualBucket::Status::admitted:
      count_async_acquired(core, w.started_ns);
      w.stop_counting();
      return py::make_tuple(0, py::none());
    case DualBucket::Status::refused:
      w.stop_counting();
      return py::make_tuple(2, py::none());
    case DualBucket::Status::queued:
      break;
  }
  if (wake_at == kForever) return py::make_tuple(1, py::none());
  return py::make_tuple(1, static_cast<double>(std::max<Nanos>(wake_at - now, 0)) / 1e9);
}

std::int64_t check_tokens(std::int64_t n) {
  if (n < 0) throw py::value_error("token counts must be >= 0");
  return n;
}

}  // namespace

void register_rate_core(py::module_& m) {
  Rate::default_timeout = PyLong_FromLong(60);
  tokens_keyword = PyUnicode_InternFromString("tokens");
  if (Rate::default_timeout == nullptr || tokens_keyword == nullptr) throw py::error_already_set();

  py::class_<RateCore> cls(m, "RateCore", R"doc(
The native part of RateLimiter: a GCRA token bucket, an optional token budget reserved together
with each request, and one-minute windows of requests and tokens.

RateCore(requests_per_minute, burst, tokens_per_minute=0.0, token_burst=1): tokens_per_minute 0
means no token budget. acquire(), record_request(), __enter__ and __exit__ are implemented in C++
directly; the GIL is released only while a caller sleeps until its turn.)doc");
  cls.def(py::init<double, std::int64_t, double, std::int64_t, const std::string&>(), py::arg("requests_per_minute"),
          py::arg("burst"), py::arg("tokens_per_minute") = 0.0, py::arg("token_burst") = 1, py::arg("shm_name") = "")
      .def_property_readonly("interval_ns", [](const RateCore& c) { return c.requests().interval_ns(); },
                             "Time between two requests at the configured rate, in ns (rounded up).")
      .def_property_readonly("burst", [](const RateCore& c) { return c.requests().burst(); })
      .def_property_readonly("has_token_budget", [](const RateCore& c) { return static_cast<bool>(c.dual); })
      .def_property_readonly(
          "shared_name", [](const RateCore& c) -> py::object {
            return c.segment ? py::object(py::str(c.segment->name())) : py::object(py::none());
          },
          "The name of the shared-memory segment this limiter shares with other processes (None: in-process).")
      .def_property_readonly(
          "_shared_limits_before",
          [](const RateCore& c) -> py::object {
            if (c.limits_before.first == 0) return py::none();
            return py::make_tuple(60e9 / static_cast<double>(c.limits_before.first), c.limits_before.second);
          },
          "For a shared limiter that opened an existing segment: its (RPM, burst) before this one's\n"
          "configuration applied (None: created here).")
      .def_property_readonly("token_burst",
                             [](const RateCore& c) { return c.dual ? c.dual->tokens().burst() : std::int64_t{0}; })
      .def_property_readonly("total_requests",
                             [](const RateCore& c) { return c.total_acquired.load(std::memory_order_relaxed); },
                             "Successful acquires since creation.")
      .def_property_readonly("blocked_count",
                             [](const RateCore& c) { return c.blocked.load(std::memory_order_relaxed); },
                             "Acquires that got no token (timeouts and failed tries).")
      .def("tokens_available",
           [](const RateCore& c, std::optional<Nanos> now) {
             return c.requests().tokens_available(now ? *now : now_ns());
           },
           py::arg("now_ns") = py::none(), "Whole requests that could go now without waiting.")
      .def("token_budget_available",
           [](const RateCore& c) { return c.dual ? c.dual->tokens_available(now_ns()) : std::int64_t{0}; },
           "Tokens of the token budget that could be taken now without waiting (0 without a budget).")
      .def("get_current_rpm", [](const RateCore& c) { return c.recorded.count(); },
           "record_request() calls in the last 60 seconds.")
      .def("get_current_tpm", [](const RateCore& c) { return c.tokens_used.count(); },
           "Tokens recorded (used, or reserved when not given) in the last 60 seconds.")
      .def("limit_available", [](RateCore& c, std::int64_t n) { c.limit_available(check_tokens(n), now_ns()); },
           py::arg("requests"), "Leaves at most `requests` available now (the provider reports fewer remaining).")
      .def("limit_token_budget",
           [](RateCore& c, std::int64_t n) {
             if (c.dual) c.dual->limit_available_tokens(check_tokens(n), now_ns());
           },
           py::arg("tokens"), "Leaves at most `tokens` of the token budget available now.")
      .def("set_rate",
           [](RateCore& c, double requests_per_minute) {
             const Nanos interval = Gcra::interval_for(requests_per_minute, 60.0);
             const Nanos now = now_ns();
             if (c.dual) {  // the queue is re-planned
               c.dual->set_request_interval(interval, now);
               return;
             }
             c.schedule.change(now, interval, [&] {
               const Nanos old = c.bucket.interval_ns();
               c.bucket.set_interval(interval, now);
               return old;
             });
           },
           py::arg("requests_per_minute"),
           "Changes the rate now, keeping what is owed (converted to the new pace). Sleeping waiters\n"
           "move with it: a faster rate wakes them sooner, at once if their turn has come.")
      .def("set_burst",
           [](RateCore& c, std::int64_t burst) {
             if (c.dual) c.dual->set_request_burst(burst); else c.bucket.set_burst(burst);
           },
           py::arg("burst"),
           "Changes the burst now. With a token budget the queued callers are re-planned; without\n"
           "one, the callers already asleep keep their instants.")
      .def("set_tokens_per_minute",
           [](RateCore& c, double tokens_per_minute) {
             if (!c.dual) throw py::value_error("this limiter has no token budget (create it with tokens_per_minute)");
             c.dual->set_token_interval(Gcra::interval_for(tokens_per_minute, 60.0), now_ns());
           },
           py::arg("tokens_per_minute"),
           "Changes the token budget's rate now, keeping what is owed (converted to the new pace); the\n"
           "queued callers are re-planned: one that may go now goes now.")
      .def("set_token_burst",
           [](RateCore& c, std::int64_t burst) {
             if (!c.dual) throw py::value_error("this limiter has no token budget (create it with tokens_per_minute)");
             c.dual->set_token_burst(burst);
           },
           py::arg("token_burst"), "Changes the token burst now; the queued callers are re-planned.")
      .def("_detach_reservation",
           [](RateCore& c) -> std::int64_t {
             std::optional<std::int64_t> tokens = latest_reservations.take(c.id);
             if (!tokens && c.dual) tokens = take_task_reservation(c);
             if (!tokens) throw py::key_error("this thread (or task) holds no unsettled reservation on this limiter");
             return *tokens;
           },
           "Forgets the calling thread's (or asyncio task's) latest reservation and returns its tokens\n"
           "(to settle elsewhere).")
      .def("_settle",
           [](RateCore& c, std::int64_t reserved, std::int64_t used) {
             check_tokens(reserved);
             check_tokens(used);
             if (c.dual && used != reserved) c.dual->settle(reserved, used, now_ns());
             c.recorded.record(coarse_now_ns());
             if (used > 0) c.tokens_used.record(coarse_now_ns(), used);
           },
           py::arg("reserved"), py::arg("used"), "Settles a detached reservation and records the request.")
      .def("_on_timeout",
           [](py::object, py::object timeout) {
             return "Rate limit timeout after " + py::str(timeout).cast<std::string>() + "s";
           },
           py::arg("timeout"), "Hook: called on a timed-out acquire; returns the message.");
  cls.def_property_readonly(
         "waiting", [](const RateCore& c) { return c.sleeping.load(std::memory_order_relaxed); },
         "Callers waiting now for their instant (or a pause's end).")
      .def("predicted_wait",
           [](RateCore& c, std::int64_t tokens) {
             const Nanos now = now_ns();
             Nanos wait = c.dual ? c.dual->predicted_wait(check_tokens(tokens), now) : c.bucket.wait_for(1, now);
             if (const Nanos end = c.pause.end_ns(now)) wait = std::max(wait, end - now);
             return static_cast<double>(wait) / 1e9;
           },
           py::arg("tokens") = 0, "Seconds a caller arriving now would wait (for `tokens` too).");
  cls.def("_async_reserve", &async_reserve, py::arg("waiter"), py::arg("deadline_ns"))
      .def("_async_reserve_check", &async_reserve_check, py::arg("waiter"))
      .def("_async_refund", &async_refund, py::arg("waiter"))
      .def("_async_ticket", &async_ticket, py::arg("waiter"), py::arg("tokens"), py::arg("deadline_ns"))
      .def("_async_ticket_poll", &async_ticket_poll, py::arg("waiter"))
      .def("_async_ticket_leave",
           [](RateCore& core, AsyncWait& w) {
             if (w.ticket && core.dual) core.dual->leave(*w.ticket);
             w.stop_counting();
           },
           py::arg("waiter"))
      .def_property_readonly(
          "_async_reservation", [](const RateCore& c) { return c.async_reservation; },
          "With a token budget: the ContextVar of the current task's latest unsettled reservation.");
  add_pause_methods(cls, [](RateCore& core, Nanos end) { core.hold_until(end); });
  add_metric_methods(cls);
  add_fast_methods(cls, fast_methods);
}

}  // namespace omnilimit::bindings
