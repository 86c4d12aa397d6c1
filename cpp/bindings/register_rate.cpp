// omnilimit._core.RateCore: the token bucket behind omnilimit.RateLimiter, with an optional token
// budget (tokens per minute) reserved together with each request.
//
// Without a token budget a RateCore is one lock-free Gcra. With one, requests and tokens live in a
// DualBucket (see dual_bucket.hpp): every acquire takes both at one instant, and callers that
// must wait queue in arrival order, re-planned whenever the budget changes. What a call
// reserved is remembered per thread (LatestReservations), so that record_request(tokens=used) in
// the same thread settles the difference; a call that moves to another thread detaches its
// reservation first (_detach_reservation) and settles it from there (_settle).
//
// The shared layout (RateShared) and the acquire decisions (RatePolicy) live in the core
// (rate_policy.hpp); this file reads the clock, books, waits with the GIL released, and speaks
// Python.
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
#include "omnilimit/rate_policy.hpp"
#include "omnilimit/schedule.hpp"
#include "omnilimit/shm_segment.hpp"
#include "omnilimit/standby.hpp"
#include "omnilimit/window.hpp"
#include "omnilimit/window_guard.hpp"
#include "pause_methods.hpp"
#include "wait.hpp"

namespace omnilimit::bindings {
namespace {

PyObject* tokens_keyword = nullptr;     // interned "tokens"
PyObject* fail_fast_keyword = nullptr;  // interned "fail_fast"
PyObject* zero_tokens = nullptr;        // 0, acquire()'s default token count
std::atomic<std::uint64_t> last_rate_id{0};

struct RateCore final : ForkAware {
  RateCore(double requests_per_minute, std::int64_t burst, double tokens_per_minute, std::int64_t token_burst,
           const std::string& shm_name, Hooks given_hooks)
      : hooks(std::move(given_hooks)),
        segment(open_rate_segment(shm_name, Gcra::interval_for(requests_per_minute, 60.0), burst,
                                  token_interval(tokens_per_minute), token_burst)),
        local(local_rate_state(segment != nullptr, Gcra::interval_for(requests_per_minute, 60.0), burst)),
        shared(segment ? rate_part(*segment, tokens_per_minute > 0.0) : *local),
        tokens_shared(token_part(segment.get(), tokens_per_minute > 0.0)),
        bucket(shared.bucket),
        pause(shared.pause),
        recorded(shared.recorded),
        tokens_used(tokens_shared != nullptr ? tokens_shared->tokens_used : own_tokens_used),
        total_acquired(shared.total_acquired),
        blocked(shared.blocked),
        denied(shared.denied),
        tokens_admitted(shared.tokens_admitted),
        tokens_settled(shared.tokens_settled),
        waits(shared.waits) {
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
    if (tokens_shared != nullptr) {  // one queue and one budget for every process on the host
      dual = std::make_unique<DualBucket>(tokens_shared->queue, shared.bucket, tokens_shared->tokens);
      const Nanos token_interval_ns = token_interval(tokens_per_minute);
      if (!segment->created() && dual->tokens().interval_ns() != token_interval_ns) {
        dual->set_token_interval(token_interval_ns, now_ns());
      }
      if (!segment->created() && dual->tokens().burst() != token_burst) dual->set_token_burst(token_burst);
    } else if (tokens_per_minute > 0.0) {
      dual = std::make_unique<DualBucket>(bucket.interval_ns(), burst, token_interval(tokens_per_minute), token_burst);
    }
    if (!segment && !dual) guard = std::make_unique<WindowGuard>(bucket.interval_ns(), bucket.burst());
    if (dual) {
      async_reservation = py::reinterpret_steal<py::object>(PyContextVar_New("omnilimit.reservation", nullptr));
      if (!async_reservation) throw py::error_already_set();
      // Every re-plan of the queue may bring a turn closer for a caller standing by outside it.
      dual->on_replan([](void* standby) noexcept { static_cast<Standby*>(standby)->notify(); }, &standby);
    }
  }
  // The token bucket's interval for `tokens_per_minute` (0: no token budget). Throws
  // std::invalid_argument for a negative or non-finite rate.
  static Nanos token_interval(double tokens_per_minute) {
    if (!(tokens_per_minute >= 0.0)) throw std::invalid_argument("tokens_per_minute must be >= 0 (0: no token budget)");
    return tokens_per_minute > 0.0 ? Gcra::interval_for(tokens_per_minute, 60.0) : 0;
  }
  void reinit_after_fork() noexcept override {
    bucket.reinit_after_fork();  // a shared bucket is left alone: the other processes use it
    if (dual) dual->reinit_after_fork();
    schedule.reinit_after_fork();
    standby.reinit_after_fork(segment != nullptr);
    if (guard) guard->reinit_after_fork();
    // The parent's waiters are not the child's: they count in neither `waiting` nor the child's
    // budget. An in-process bucket gives back the instants they had booked (a shared one is the
    // parent's too: its sleepers still go there).
    const std::int64_t parents_bookings = booked.exchange(0, std::memory_order_relaxed);
    sleeping.store(0, std::memory_order_relaxed);
    if (!segment && !dual && parents_bookings > 0) {
      try {
        bucket.give_back(parents_bookings, now_ns());
      } catch (...) {  // (it cannot throw for a count >= 1; nothing may escape a fork handler)
      }
    }
  }
  // Wakes every waiter of this process (thread or coroutine: asleep on an instant, queued,
  // standing by or paused) with LimiterClosed; later acquires raise it. Other processes sharing
  // the segment are not closed.
  void close() {
    closed.store(true);
    if (dual) dual->close();
    schedule.close();
    standby.notify();
  }

  // The request bucket: the lone Gcra, or the request half of the DualBucket.
  const Gcra& requests() const noexcept { return dual ? dual->requests() : bucket; }
  void hold_until(Nanos end) {
    if (dual) dual->hold_until(end); else bucket.hold_until(end);
  }
  // How long after `now` a caller arriving then for `tokens` would wait: behind the queue or the
  // bucket's bookings, and a pause in effect. Books nothing.
  Nanos wait_for_turn(std::int64_t tokens, Nanos now) {
    if (tokens < 0) throw std::invalid_argument("token counts must be >= 0");
    const Nanos wait = dual ? dual->predicted_wait(tokens, now) : bucket.wait_for(1, now);
    return RatePolicy::turn_wait(wait, pause.end_ns(now), now);
  }
  // Whether that caller's turn comes by `deadline_ns`: by the store that decides (it says how long
  // a caller would wait: predicted_wait), or by this core. With the GIL held.
  bool turn_within(std::int64_t tokens, Nanos deadline_ns) {
    const Nanos now = now_ns();
    if (hooks.has_store()) {
      const double wait_s = figure(hooks, "predicted_wait", py::float_(0.0), py::int_(tokens)).cast<double>();
      const Nanos wait = wait_s >= 9.2e9 ? kForever : static_cast<Nanos>(std::max(wait_s, 0.0) * 1e9);
      // (a pause heard from any host is this core's too)
      return RatePolicy::turn_within(RatePolicy::turn_wait(wait, pause.end_ns(now), now), now, deadline_ns);
    }
    return RatePolicy::turn_within(wait_for_turn(tokens, now), now, deadline_ns);
  }
  void limit_available(std::int64_t n, Nanos now) {
    if (dual) dual->limit_available_requests(n, now); else bucket.limit_available(n, now);
  }

  const std::uint64_t id = last_rate_id.fetch_add(1, std::memory_order_relaxed) + 1;  // never reused
  Hooks hooks;  // the store that decides (a Redis limiter's), the timeout report
  std::unique_ptr<SharedSegment> segment;  // set for a limiter shared between processes
  std::pair<Nanos, std::int64_t> limits_before{0, 0};  // an existing segment's (interval, burst) on opening
  std::unique_ptr<RateShared> local;       // set otherwise
  RateShared& shared;
  TokenShared* tokens_shared;  // the segment's token budget (shared, with a token budget), or nullptr
  Gcra bucket;                       // over shared.bucket; unused when `dual` is set
  std::unique_ptr<DualBucket> dual;  // set when there is a token budget
  // In process without a token budget: no second holds more admissions than the bucket allows in
  // one, however late its sleepers wake (window_guard.hpp). A shared bucket's processes, and the
  // token budget's queue, keep the bucket's own bound.
  std::unique_ptr<WindowGuard> guard;
  // With the guard: sleepers up to RatePolicy::kCatchUpNs late keep their slots. Off for a leased
  // share of a fleet's budget (each process's pacing is what keeps the fleet's bound).
  std::atomic<bool> catch_up{true};
  bool catching_up() const noexcept { return guard != nullptr && catch_up.load(std::memory_order_relaxed); }
  // With a token budget: a ContextVar holding the tokens of the current task's latest unsettled
  // reservation (coroutines share their loop's thread, so a thread-local cannot tell them apart).
  py::object async_reservation;
  Pause& pause;
  // Where this process's sleepers wait; set_rate() moves their instants (shared: those of every
  // process's sleepers).
  Schedule schedule{shared.schedule, segment != nullptr};
  Standby standby{shared.standby, segment != nullptr};  // where callers wait whose turn is out of reach
  std::atomic<bool> closed{false};                       // close() was called (in this process)
  RequestWindow& recorded;
  RequestWindow own_tokens_used;  // unused when shared with a token budget
  RequestWindow& tokens_used;     // tokens recorded in the last minute: the current TPM
  std::atomic<std::int64_t>& total_acquired;
  std::atomic<std::int64_t>& blocked;
  std::atomic<std::int64_t>& denied;
  std::atomic<std::int64_t>& tokens_admitted;  // with a token budget: reserved by admitted callers
  std::atomic<std::int64_t>& tokens_settled;   // recorded as used
  std::atomic<std::int64_t> sleeping{0};  // this process's callers waiting for their instant or a pause's end
  std::atomic<std::int64_t> booked{0};    // of those, the ones asleep on a booked instant (a lone Gcra)
  WaitHistogram& waits;
};

thread_local LatestReservations latest_reservations;

using Turn = RatePolicy::Turn;
using Step = RatePolicy::Step;

Outcome closed_error() {
  PyErr_SetString(limiter_closed_error, "the limiter is closed");
  return Outcome::error;
}

// A request (no token budget) from the lone Gcra: one reservation if its instant comes by the
// deadline, then the sleep until that instant, which rate changes move (Schedule). nullopt:
// KeyboardInterrupt or LimiterClosed, set.
std::optional<Turn> take_from_gcra(RateCore& core, Nanos now, Nanos deadline_ns, std::optional<Counted>& sleeping) {
  const Nanos max_wait_ns = RatePolicy::max_wait(now, deadline_ns);
  std::uint64_t epoch = core.schedule.epoch();
  const Reservation r = core.bucket.reserve(1, max_wait_ns, now);
  switch (RatePolicy::after_booking(r, [&] { return core.schedule.stable(epoch); })) {
    case RatePolicy::Booked::beyond_deadline: return Turn::beyond_deadline;
    case RatePolicy::Booked::go: return Turn::went;
    case RatePolicy::Booked::again: return Turn::again;  // the slot is spent; book again at the new pace
    case RatePolicy::Booked::sleep: break;
  }
  Nanos ready_ns = r.ready_at_ns;
  Schedule::Woke woke = Schedule::Woke::deadline;
  if (!sleeping) sleeping.emplace(core.sleeping);
  const Counted booked(core.booked);
  const WaitResult result = wait_without_gil(deadline_ns, [&](Nanos until_ns) {
    woke = core.schedule.wait(ready_ns, epoch, until_ns);
    return woke != Schedule::Woke::deadline;
  });
  if (result != WaitResult::done || woke == Schedule::Woke::closed) {
    // KeyboardInterrupt, close(), or the deadline came first (a slower rate moved the instant
    // past it): give the slot back if still possible (the callers standing by may use it).
    if (core.bucket.refund(r, now_ns())) core.standby.notify();
    if (result == WaitResult::interrupted) return std::nullopt;
    if (woke == Schedule::Woke::closed) {
      closed_error();
      return std::nullopt;
    }
    return Turn::beyond_deadline;
  }
  if (woke == Schedule::Woke::lost || RatePolicy::missed_turn(core.bucket, ready_ns, now_ns(), core.catching_up())) {
    return Turn::again;
  }
  return Turn::went;
}

// A request and `tokens` from the DualBucket: admitted at once, or queued (or standing by) until
// its turn or its deadline (see dual_bucket.hpp). nullopt: KeyboardInterrupt or LimiterClosed, set.
std::optional<Turn> take_from_queue(RateCore& core, std::int64_t tokens, Nanos now, Nanos deadline_ns,
                                    bool fail_fast, std::optional<Counted>& sleeping) {
  DualBucket::Ticket ticket(*core.dual, tokens, deadline_ns, nullptr, !fail_fast);
  DualBucket::Status status = core.dual->arrive(ticket, now);
  if (status == DualBucket::Status::queued) {
    if (!sleeping) sleeping.emplace(core.sleeping);
    const WaitResult result = wait_without_gil(deadline_ns, [&](Nanos until_ns) {
      status = core.dual->wait(ticket, until_ns);
      return status != DualBucket::Status::queued;
    });
    if (result == WaitResult::interrupted) return std::nullopt;  // ~Ticket leaves the queue
  }
  switch (status) {
    case DualBucket::Status::admitted: return Turn::went;
    case DualBucket::Status::closed:
      closed_error();
      return std::nullopt;
    default: return Turn::beyond_deadline;  // refused, or still queued at the deadline (~Ticket leaves)
  }
}

// acquire(): a pause first, then the request (and `tokens`, with a budget). The timeout contract:
// True as soon as the caller may go; False only once the timeout has passed. A caller whose turn
// (or a pause's end) lies beyond its deadline books nothing and stands by, woken by any change
// that may bring its turn within reach (see standby.hpp), until its deadline. `fail_fast`: such a
// caller gets False at once instead (x/time/rate's rule); `timeout` 0 tries once. The decisions
// are RatePolicy's; this loop reads the clock, books, waits and reports.
Outcome take_request(RateCore& core, Nanos timeout_ns, std::int64_t tokens, bool fail_fast) {
  if (core.closed.load(std::memory_order_relaxed)) return closed_error();
  Nanos now = now_ns();
  if (!core.dual && !core.pause.maybe_active() && core.bucket.try_acquire(1, now)) {
    if (!core.guard || core.guard->admit(now) == 0) {
      core.total_acquired.fetch_add(1, std::memory_order_relaxed);  // the uncontended path: one CAS
      return Outcome::acquired;
    }
    core.bucket.give_back(1, now);  // this second is full: the full path waits for room
  }
  const Nanos started_ns = now;
  const Nanos deadline_ns = saturating_add(now, timeout_ns);
  std::optional<Counted> sleeping;      // engaged at the first wait
  std::optional<Standby::Watch> watch;  // engaged at the first stand-by
  for (;;) {
    // Read before this look at the budget: a change made after it ends the stand-by below.
    const std::uint32_t seen = watch ? watch->generation() : 0;
    const Nanos end = core.pause.maybe_active() ? core.pause.end_ns(now) : 0;
    Step step;
    if (end != 0) {  // paused: wait for the end (plus this caller's jitter), then book
      step = RatePolicy::under_pause(core.pause.release_time(end), now, deadline_ns, fail_fast);
    } else {
      const std::optional<Turn> turn = core.dual ? take_from_queue(core, tokens, now, deadline_ns, fail_fast, sleeping)
                                                 : take_from_gcra(core, now, deadline_ns, sleeping);
      if (!turn) return Outcome::error;
      now = now_ns();
      // A pause declared while this caller slept voids a slot that went (see after_turn).
      const Nanos end_now = *turn == Turn::went && core.pause.maybe_active() ? core.pause.end_ns(now) : 0;
      step = RatePolicy::after_turn(*turn, end_now, now, deadline_ns, fail_fast);
    }
    if (step.kind == Step::Kind::go) break;
    if (step.kind == Step::Kind::again) continue;
    if (step.kind == Step::Kind::refuse) return Outcome::timed_out;
    if (!watch) {  // stand_by: registered from now on, look once more before sleeping
      watch.emplace(core.standby);
      continue;
    }
    if (!sleeping) sleeping.emplace(core.sleeping);
    if (stand_by(*watch, seen, step.until_ns) == WaitResult::interrupted) return Outcome::error;
    if (core.closed.load()) return closed_error();
    now = now_ns();
  }
  if (core.guard) {  // the turn came: go when the last second has room (window_guard.hpp)
    for (;;) {
      now = now_ns();
      const Nanos room_at = core.guard->admit(now);
      if (room_at == 0) break;
      if (room_at > deadline_ns && (fail_fast || now >= deadline_ns)) return Outcome::timed_out;
      if (!sleeping) sleeping.emplace(core.sleeping);
      const Nanos until_ns = std::min(room_at, deadline_ns);
      const WaitResult waited = wait_without_gil(until_ns, [&](Nanos step_until_ns) {
        sleep_until_ns(step_until_ns);
        return now_ns() >= until_ns;
      });
      if (waited == WaitResult::interrupted) return Outcome::error;
    }
  }
  if (core.dual) {
    latest_reservations.remember(core.id, tokens);
    core.tokens_admitted.fetch_add(tokens, std::memory_order_relaxed);
  }
  if (sleeping) record_wait(core.hooks, core.waits, now - started_ns);
  core.total_acquired.fetch_add(1, std::memory_order_relaxed);
  return Outcome::acquired;
}

// For CombinedLimiter, which must not hold its concurrency slot while its rate turn is out of
// reach: stands by (GIL released) until a caller for `tokens` arriving now would have its turn by
// `deadline_ns` (true), or the deadline passes (false). Books nothing. Raises LimiterClosed.
bool wait_for_turn_within(RateCore& core, std::int64_t tokens, Nanos deadline_ns) {
  Standby::Watch watch(core.standby);
  std::optional<Counted> sleeping;
  for (;;) {
    const std::uint32_t seen = watch.generation();
    if (core.closed.load()) {
      closed_error();
      throw py::error_already_set();
    }
    if (core.turn_within(tokens, deadline_ns)) return true;
    if (now_ns() >= deadline_ns) return false;
    // Time alone brings no turn closer (a pause's end and the bucket's instants are fixed): only
    // a change does.
    if (!sleeping) sleeping.emplace(core.sleeping);
    if (stand_by(watch, seen, deadline_ns) == WaitResult::interrupted) throw py::error_already_set();
  }
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

// A keyword flag: True or False (a bool; 0 and 1 too). Returns false with ValueError set otherwise.
bool parse_flag(const char* name, PyObject* value, bool* flag) {
  if (value == Py_True || value == Py_False) {
    *flag = value == Py_True;
    return true;
  }
  if (PyLong_CheckExact(value)) {
    const long n = PyLong_AsLong(value);
    if (n == 0 || n == 1) {
      *flag = n == 1;
      return true;
    }
    PyErr_Clear();
  }
  PyErr_Format(PyExc_ValueError, "%s must be True or False, got %R", name, value);
  return false;
}

struct Rate {
  using Core = RateCore;
  static constexpr Nanos kDefaultTimeoutNs = 60 * kNanosPerSecond;
  static inline PyObject* default_timeout = nullptr;
  static Outcome take(RateCore& core, Nanos timeout_ns) { return take_request(core, timeout_ns, 0, false); }
  static void after_store(RateCore&, Outcome) {}
};

// acquire(timeout=60, tokens=0, fail_fast=False) -> bool
PyObject* fast_acquire(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    PyObject* names[3] = {timeout_keyword, tokens_keyword, fail_fast_keyword};
    PyObject* values[3] = {nullptr, nullptr, nullptr};
    if (!parse_optional_args("acquire", names, 3, args, nargs, kwnames, values)) return nullptr;
    Nanos timeout_ns = Rate::kDefaultTimeoutNs;
    if (values[0] != nullptr && !parse_timeout(values[0], &timeout_ns)) return nullptr;
    std::int64_t tokens = 0;
    if (values[1] != nullptr && !parse_tokens(values[1], &tokens)) return nullptr;
    bool fail_fast = false;
    if (values[2] != nullptr && !parse_flag("fail_fast", values[2], &fail_fast)) return nullptr;
    RateCore* core = self_ptr<RateCore>(self);
    if (core == nullptr) return nullptr;
    Outcome outcome;
    if (core->hooks.has_store()) {
      PyObject* given[3] = {values[0] != nullptr ? values[0] : Rate::default_timeout,
                            values[1] != nullptr ? values[1] : zero_tokens, fail_fast ? Py_True : Py_False};
      outcome = take_from_store(core->hooks, self, given, 3);
      if (outcome == Outcome::acquired && core->dual) {
        latest_reservations.remember(core->id, tokens);
        core->tokens_admitted.fetch_add(tokens, std::memory_order_relaxed);
      }
    } else {
      outcome = take_request(*core, timeout_ns, tokens, fail_fast);
    }
    switch (outcome) {
      case Outcome::acquired: Py_RETURN_TRUE;
      case Outcome::error: return nullptr;
      case Outcome::timed_out: break;
    }
    // A refusal without a wait (a try, or the fail-fast form) is a denial, not a timeout: counted,
    // never logged.
    const bool denied = timeout_ns == 0 || fail_fast;
    if (denied) core->denied.fetch_add(1, std::memory_order_relaxed);
    PyObject* shown = values[0] != nullptr ? values[0] : Rate::default_timeout;
    if (!report_timeout(core->hooks, core->blocked, denied ? 0 : timeout_ns, shown)) return nullptr;
    Py_RETURN_FALSE;
  });
}

// Charges or gives back `used - reserved` tokens: in the store that decides (a shared budget), or
// in the core's own queue.
void settle(RateCore& core, std::int64_t reserved, std::int64_t used) {
  if (core.hooks.has_store()) {
    core.hooks.store.attr("settle")(reserved, used);
  } else {
    core.dual->settle(reserved, used, now_ns());
  }
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
    if (used >= 0 && used != reserved) settle(core, reserved, used);
  }
  const std::int64_t counted = used >= 0 ? used : reserved;
  if (counted > 0) {
    core.tokens_used.record(now, counted);
    if (core.dual) core.tokens_settled.fetch_add(counted, std::memory_order_relaxed);
  }
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
                "acquire($self, /, timeout=60, tokens=0, fail_fast=False)\n--\n\n"
                "Takes a request (and `tokens` of the token budget, at the same instant, when there is\n"
                "one), sleeping until its reserved instant if need be. `timeout` is in seconds (None:\n"
                "forever; 0: try once). Returns True as soon as the caller may go, False once `timeout`\n"
                "has passed; a caller whose turn lies beyond its timeout books nothing and stands by,\n"
                "going if a change brings its turn within reach. `fail_fast=True`: False at once, booking\n"
                "nothing, when the turn lies beyond the timeout. Raises LimiterClosed after close(),\n"
                "ValueError for a bad timeout, token count or flag."),
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

void count_async_acquired(RateCore& core, Nanos started_ns, std::int64_t tokens = 0) {
  if (started_ns != 0) record_wait(core.hooks, core.waits, now_ns() - started_ns);
  if (tokens > 0) core.tokens_admitted.fetch_add(tokens, std::memory_order_relaxed);
  core.total_acquired.fetch_add(1, std::memory_order_relaxed);
}

void raise_if_closed(const RateCore& core) {
  if (core.closed.load()) {
    closed_error();
    throw py::error_already_set();
  }
}

// No token budget: books the next instant if it comes by `deadline_ns`. Returns the seconds to
// sleep on the loop's timer (0.0: acquired now, counted), or None when it would not fit (nothing
// booked: the coroutine stands by). Raises LimiterClosed.
py::object async_reserve(py::object self, AsyncWait& w, Nanos deadline_ns) {
  RateCore& core = self.cast<RateCore&>();
  if (core.dual) throw std::logic_error("a limiter with a token budget queues tickets");
  raise_if_closed(core);
  for (;;) {
    const Nanos now = now_ns();
    const Nanos max_wait_ns = RatePolicy::max_wait(now, deadline_ns);
    std::uint64_t epoch = core.schedule.epoch();
    const Reservation r = core.bucket.reserve(1, max_wait_ns, now);
    const RatePolicy::Booked booked = RatePolicy::after_booking(r, [&] { return core.schedule.stable(epoch); });
    if (booked == RatePolicy::Booked::beyond_deadline) return py::none();
    if (booked == RatePolicy::Booked::again) continue;  // a rate change overlapped: the slot is spent
    Nanos ready_ns = r.ready_at_ns;
    if (booked == RatePolicy::Booked::go) {
      ready_ns = core.guard ? core.guard->admit(now) : 0;
      if (ready_ns == 0) {
        count_async_acquired(core, 0);
        return py::float_(0.0);
      }
      w.guarded = true;  // the turn came, the last second is full: wait for room (window_guard.hpp)
    }
    w.bucket = &core.bucket;
    w.reservation = r;
    w.epoch = epoch;
    w.ready_ns = ready_ns;
    w.owner = self;
    w.started_ns = now;
    w.count_waiting(core.sleeping);
    w.count_booking(core.booked);
    w.schedule = &core.schedule;
    w.standby = &core.standby;  // a refund (the waiter dropped early) wakes the callers standing by
    core.schedule.listen(w.listener);
    return py::float_(static_cast<double>(ready_ns - now) / 1e9);
  }
}

void async_refund(RateCore& core, AsyncWait& w);

// After the timer, or a rate change's wake-up: the reservation's instant moved through the rate
// changes made meanwhile.
// Returns the seconds still to sleep (> 0: a slower rate), 0.0 when the turn has come (acquired,
// counted), or -1.0 when the changes were too many to follow or the coroutine woke too late
// (book again; the slot is spent).
double async_reserve_check(RateCore& core, AsyncWait& w) {
  if (w.bucket != &core.bucket) throw std::logic_error("this AsyncWait holds no reservation here");
  if (core.closed.load()) {
    async_refund(core, w);
    raise_if_closed(core);
  }
  if (!core.schedule.follow(w.ready_ns, w.epoch)) {
    core.schedule.stop_listening(w.listener);
    w.bucket = nullptr;  // the slot is spent
    w.end_booking();
    w.stop_counting();
    return -1.0;
  }
  const Nanos now = now_ns();
  if (w.ready_ns > now) return static_cast<double>(w.ready_ns - now) / 1e9;
  if (!w.guarded && RatePolicy::missed_turn(core.bucket, w.ready_ns, now, core.catching_up())) {
    core.schedule.stop_listening(w.listener);  // the loop ran late: book again (kLateToleranceNs)
    w.bucket = nullptr;
    w.end_booking();
    w.stop_counting();
    return -1.0;
  }
  if (core.guard) {  // the turn came: go when the last second has room (window_guard.hpp)
    const Nanos room_at = core.guard->admit(now);
    if (room_at != 0) {
      w.guarded = true;
      w.ready_ns = room_at;
      return static_cast<double>(room_at - now) / 1e9;
    }
  }
  core.schedule.stop_listening(w.listener);
  count_async_acquired(core, w.started_ns);
  w.bucket = nullptr;
  w.end_booking();
  w.stop_counting();
  return 0.0;
}

// A coroutine gives up before its instant: the reservation goes back if still possible (and the
// callers standing by hear of it).
void async_refund(RateCore& core, AsyncWait& w) {
  if (w.bucket != &core.bucket) return;
  core.schedule.stop_listening(w.listener);
  if (core.bucket.refund(w.reservation, now_ns())) core.standby.notify();
  w.bucket = nullptr;
  w.end_booking();
  w.stop_counting();
}

// A coroutine begins standing by (its turn, or a pause's end, lies beyond its deadline): every
// change of the limiter's prospects wakes it, and it counts as waiting. Raises LimiterClosed.
void async_stand_by(RateCore& core, AsyncWait& w) {
  raise_if_closed(core);
  w.standby = &core.standby;
  core.standby.listen(w.standby_listener);
  w.count_waiting(core.sleeping);
}

// With a token budget: a ticket for one request and `tokens`. 0: admitted now (counted), 1:
// queued or standing by (wake-ups come through the waiter), 2: refused (its turn would not come
// by the deadline, and it may not stand by: `fail_fast`, or no time left). Raises LimiterClosed.
int async_ticket(py::object self, AsyncWait& w, std::int64_t tokens, Nanos deadline_ns, bool fail_fast) {
  RateCore& core = self.cast<RateCore&>();
  if (!core.dual) throw std::logic_error("a limiter without a token budget books reservations");
  if (w.ticket) throw std::logic_error("this AsyncWait was already used");
  raise_if_closed(core);
  w.ticket.emplace(*core.dual, tokens, deadline_ns, &w, !fail_fast);
  w.tokens = tokens;
  w.owner = self;
  const Nanos now = now_ns();
  switch (core.dual->arrive(*w.ticket, now)) {
    case DualBucket::Status::admitted:
      count_async_acquired(core, 0, tokens);
      return 0;
    case DualBucket::Status::refused:
      return 2;
    case DualBucket::Status::closed:
      raise_if_closed(core);
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
      count_async_acquired(core, w.started_ns, w.tokens);
      w.stop_counting();
      return py::make_tuple(0, py::none());
    case DualBucket::Status::refused:
      w.stop_counting();
      return py::make_tuple(2, py::none());
    case DualBucket::Status::closed:
      w.stop_counting();
      raise_if_closed(core);
      return py::make_tuple(2, py::none());
    case DualBucket::Status::queued:
      break;
  }
  if (wake_at == kForever) return py::make_tuple(1, py::none());
  return py::make_tuple(1, static_cast<double>(std::max<Nanos>(wake_at - now, 0)) / 1e9);
}

// ---- coroutines: the uncontended path and one booking, as raw methods ------------------------
//
// `async with limiter:` and acquire_async take these on a lone in-process bucket (no token budget,
// no store): the uncontended path in one call, and a booking held by a handle (wait_handle) whose
// future the loop's timed waits resolve at the instant (or the deadline), and a rate change's
// wake-up before. Dropping the handle refunds a booking whose instant has not come.

// _async_fast(): a request admitted now (True, counted), or nothing (False: the full path).
PyObject* fast_async_try(PyObject* self, PyObject* const*, Py_ssize_t, PyObject*) {
  return guarded([&]() -> PyObject* {
    RateCore* core = self_ptr<RateCore>(self);
    if (core == nullptr) return nullptr;
    if (core->dual || core->hooks.has_store() || core->closed.load(std::memory_order_relaxed) ||
        core->pause.maybe_active()) {
      Py_RETURN_FALSE;
    }
    const Nanos now = now_ns();
    if (!core->bucket.try_acquire(1, now)) Py_RETURN_FALSE;
    if (core->guard && core->guard->admit(now) != 0) {
      core->bucket.give_back(1, now);  // this second is full: the full path waits for room
      Py_RETURN_FALSE;
    }
    count_async_acquired(*core, 0);
    Py_RETURN_TRUE;
  });
}

// The AsyncWait of a handle booked on `core`; nullptr with an error set otherwise.
AsyncWait* booking_of(RateCore& core, PyObject* handle) {
  AsyncWait* w = handle_wait(handle);
  if (w != nullptr && w->schedule != nullptr && w->schedule != &core.schedule) {
    PyErr_SetString(PyExc_ValueError, "this wait is not booked on this limiter");
    return nullptr;
  }
  return w;
}

// _async_book(notifier, future, deadline_ns): True (admitted now, counted), None (the turn lies
// beyond the deadline: nothing booked), or a handle booked for an instant: `future` is resolved
// then (or at the deadline, or by a rate change), and _async_turn says what came.
PyObject* fast_async_book(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    if (!fixed_arguments("_async_book", 3, nargs, kwnames)) return nullptr;
    Nanos deadline_ns = 0;
    if (!parse_instant(args[2], &deadline_ns)) return nullptr;
    auto notifier = py::handle(args[0]).cast<std::shared_ptr<LoopNotifier>>();
    auto w = std::make_shared<AsyncWait>(notifier, py::reinterpret_borrow<py::object>(args[1]));
    const py::object delay = async_reserve(py::reinterpret_borrow<py::object>(self), *w, deadline_ns);
    if (delay.is_none()) Py_RETURN_NONE;
    if (delay.cast<double>() == 0.0) Py_RETURN_TRUE;
    PyObject* handle = wait_handle(w);
    if (handle == nullptr) return nullptr;
    try {
      notifier->wake_at(w->future, std::min(w->ready_ns, deadline_ns));
    } catch (...) {
      Py_DECREF(handle);  // refunds the booking
      throw;
    }
    return handle;
  });
}

// _async_turn(handle): 0 when the turn came (admitted, counted), -1 to book again (the slot is
// spent: the loop woke too late, or rate changes were too many to follow), else the instant (ns)
// to wait until (a slower rate moved it, or the last second has no room yet). Raises LimiterClosed.
PyObject* fast_async_turn(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    if (!fixed_arguments("_async_turn", 1, nargs, kwnames)) return nullptr;
    RateCore* core = self_ptr<RateCore>(self);
    if (core == nullptr) return nullptr;
    AsyncWait* w = booking_of(*core, args[0]);
    if (w == nullptr) return nullptr;
    const double left = async_reserve_check(*core, *w);
    if (left == 0.0) return PyLong_FromLong(0);
    if (left < 0.0) return PyLong_FromLong(-1);
    return PyLong_FromLongLong(w->ready_ns);
  });
}

// _async_rewatch(handle, future, at_ns): the booking waits on `future`, resolved at `at_ns` (or by
// a rate change).
PyObject* fast_async_rewatch(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    if (!fixed_arguments("_async_rewatch", 3, nargs, kwnames)) return nullptr;
    RateCore* core = self_ptr<RateCore>(self);
    if (core == nullptr) return nullptr;
    AsyncWait* w = booking_of(*core, args[0]);
    if (w == nullptr) return nullptr;
    Nanos at_ns = 0;
    if (!parse_instant(args[2], &at_ns)) return nullptr;
    w->future = py::reinterpret_borrow<py::object>(args[1]);
    w->notifier().wake_at(w->future, at_ns);
    Py_RETURN_NONE;
  });
}

// _async_unbook(handle): the coroutine gives up before its turn: the booking goes back if still
// possible (the callers standing by hear of it).
PyObject* fast_async_unbook(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    if (!fixed_arguments("_async_unbook", 1, nargs, kwnames)) return nullptr;
    RateCore* core = self_ptr<RateCore>(self);
    if (core == nullptr) return nullptr;
    AsyncWait* w = booking_of(*core, args[0]);
    if (w == nullptr) return nullptr;
    async_refund(*core, *w);
    Py_RETURN_NONE;
  });
}

PyMethodDef async_fast_methods[] = {
    fast_method("_async_fast", fast_async_try,
                "_async_fast($self, /)\n--\n\n"
                "A request admitted now (True, counted), or nothing (False): the uncontended path of\n"
                "acquire_async and `async with` (no token budget, no store, no pause)."),
    fast_method("_async_book", fast_async_book,
                "_async_book($self, notifier, future, deadline_ns, /)\n--\n\n"
                "True (admitted now), None (the turn lies beyond the deadline), or a handle booked for an\n"
                "instant, whose future is resolved then (or at the deadline, or by a rate change)."),
    fast_method("_async_turn", fast_async_turn,
                "_async_turn($self, handle, /)\n--\n\n"
                "0: the turn came (admitted); -1: book again; else the instant (ns) to wait until."),
    fast_method("_async_rewatch", fast_async_rewatch,
                "_async_rewatch($self, handle, future, at_ns, /)\n--\n\n"
                "The booking waits on `future`, resolved at `at_ns` (or by a rate change)."),
    fast_method("_async_unbook", fast_async_unbook,
                "_async_unbook($self, handle, /)\n--\n\n"
                "Gives the booking back if its instant has not come."),
    {nullptr, nullptr, 0, nullptr}};

std::int64_t check_tokens(std::int64_t n) {
  if (n < 0) throw py::value_error("token counts must be >= 0");
  return n;
}

}  // namespace

void register_rate_core(py::module_& m) {
  Rate::default_timeout = PyLong_FromLong(60);
  tokens_keyword = PyUnicode_InternFromString("tokens");
  fail_fast_keyword = PyUnicode_InternFromString("fail_fast");
  zero_tokens = PyLong_FromLong(0);
  if (Rate::default_timeout == nullptr || tokens_keyword == nullptr || fail_fast_keyword == nullptr ||
      zero_tokens == nullptr) {
    throw py::error_already_set();
  }

  py::class_<RateCore> cls(m, "RateCore", R"doc(
The native part of RateLimiter: a GCRA token bucket, an optional token budget reserved together
with each request, and one-minute windows of requests and tokens.

RateCore(requests_per_minute, burst, tokens_per_minute=0.0, token_burst=1): tokens_per_minute 0
means no token budget. acquire(), record_request(), __enter__ and __exit__ are implemented in C++
directly; the GIL is released only while a caller sleeps until its turn.)doc");
  cls.def(py::init([](double requests_per_minute, std::int64_t burst, double tokens_per_minute, std::int64_t token_burst,
                      const std::string& shm_name, py::object store, py::object on_timeout) {
            return new RateCore(requests_per_minute, burst, tokens_per_minute, token_burst, shm_name,
                                Hooks{std::move(store), std::move(on_timeout), py::none()});
          }),
          py::arg("requests_per_minute"), py::arg("burst"), py::arg("tokens_per_minute") = 0.0,
          py::arg("token_burst") = 1, py::arg("shm_name") = "", py::kw_only(), py::arg("store") = py::none(),
          py::arg("on_timeout") = py::none(),
          "`store`: the object that decides instead of this core (store.hpp); `on_timeout(timeout) ->\n"
          "message`: how a timeout is reported.")
      .def_property_readonly("interval_ns", [](const RateCore& c) {
        return figure(c.hooks, "interval_ns", py::int_(c.requests().interval_ns()));
      },
                             "Time between two requests at the configured rate, in ns (rounded up).")
      .def_property_readonly("burst", [](const RateCore& c) { return c.requests().burst(); })
      .def_property_readonly("has_token_budget", [](const RateCore& c) { return static_cast<bool>(c.dual); })
      .def_property(
          "_catch_up", [](const RateCore& c) { return c.catching_up(); },
          [](RateCore& c, bool on) { c.catch_up.store(on); },
          "Whether sleepers up to 100 ms late keep their slots (an in-process limiter without a token\n"
          "budget; off for a leased share of a fleet's budget).")
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
                             [](const RateCore& c) {
                               return figure(c.hooks, "total_requests",
                                             py::int_(c.total_acquired.load(std::memory_order_relaxed)));
                             },
                             "Successful acquires since creation.")
      .def_property_readonly("blocked_count",
                             [](const RateCore& c) {
                               return figure(c.hooks, "blocked_count", py::int_(c.blocked.load(std::memory_order_relaxed)));
                             },
                             "Acquires that got no token (timeouts and failed tries).")
      .def("tokens_available",
           [](const RateCore& c, std::optional<Nanos> now) {
             return figure(c.hooks, "tokens_available", py::int_(c.requests().tokens_available(now ? *now : now_ns())));
           },
           py::arg("now_ns") = py::none(), "Whole requests that could go now without waiting.")
      .def("token_budget_available",
           [](const RateCore& c) {
             return figure(c.hooks, "token_budget_available",
                           py::int_(c.dual ? c.dual->tokens_available(now_ns()) : std::int64_t{0}));
           },
           "Tokens of the token budget that could be taken now without waiting (0 without a budget).")
      .def("get_current_rpm", [](const RateCore& c) {
        return figure(c.hooks, "get_current_rpm", py::int_(c.recorded.count()));
      },
           "record_request() calls in the last 60 seconds.")
      .def_property_readonly(
          "tokens_admitted", [](const RateCore& c) { return c.tokens_admitted.load(std::memory_order_relaxed); },
          "With a token budget: the tokens reserved by admitted callers, in all (shared through a\n"
          "segment: every process's; with a Redis store: this process's).")
      .def_property_readonly(
          "tokens_settled", [](const RateCore& c) { return c.tokens_settled.load(std::memory_order_relaxed); },
          "With a token budget: the tokens recorded as used (record_request(tokens=...); as reserved\n"
          "without a count), in all.")
      .def("get_current_tpm", [](const RateCore& c) { return figure(c.hooks, "get_current_tpm", py::int_(c.tokens_used.count())); },
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
             if (c.guard) c.guard->configure(interval, c.bucket.burst());
             c.standby.notify();  // the callers standing by look again (in every process)
           },
           py::arg("requests_per_minute"),
           "Changes the rate now, keeping what is owed (converted to the new pace). Sleeping waiters\n"
           "move with it: a faster rate wakes them sooner, at once if their turn has come; callers\n"
           "standing by look again.")
      .def("set_burst",
           [](RateCore& c, std::int64_t burst) {
             if (c.dual) {
               c.dual->set_request_burst(burst);
             } else {
               c.bucket.set_burst(burst);
               if (c.guard) c.guard->configure(c.bucket.interval_ns(), burst);
               c.standby.notify();
             }
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
             if (c.dual && used != reserved) settle(c, reserved, used);
             c.recorded.record(coarse_now_ns());
             if (used > 0) {
               c.tokens_used.record(coarse_now_ns(), used);
               if (c.dual) c.tokens_settled.fetch_add(used, std::memory_order_relaxed);
             }
           },
           py::arg("reserved"), py::arg("used"), "Settles a detached reservation and records the request.")
      .def("_acquire_here",
           [](RateCore& core, py::object timeout, std::int64_t tokens) {
             // The store's in-process fallback (an outage policy's `local`) takes a request (and
             // its tokens) of this core.
             Nanos timeout_ns = 0;
             if (!parse_timeout(timeout.ptr(), &timeout_ns)) throw py::error_already_set();
             const Outcome outcome = take_request(core, timeout_ns, check_tokens(tokens), false);
             if (outcome == Outcome::error) throw py::error_already_set();
             return outcome == Outcome::acquired;
           },
           py::arg("timeout"), py::arg("tokens") = 0,
           "Takes a request (and `tokens`) of this core itself, whatever the store (nothing counted as\n"
           "refused).")
      .def("_count_tokens_admitted",
           [](RateCore& core, std::int64_t tokens) {
             core.tokens_admitted.fetch_add(check_tokens(tokens), std::memory_order_relaxed);
           },
           py::arg("tokens"), "Counts in tokens_admitted the tokens of a coroutine a store admitted.")
      .def("_settle_here",
           [](RateCore& core, std::int64_t reserved, std::int64_t used) {
             check_tokens(reserved);
             check_tokens(used);
             if (core.dual && used != reserved) core.dual->settle(reserved, used, now_ns());
           },
           py::arg("reserved"), py::arg("used"),
           "Settles a reservation that this core's own budget made (a Redis store's in-process\n"
           "fallback), whatever the store.");
  cls.def_property_readonly(
         "waiting", [](const RateCore& c) {
           return figure(c.hooks, "waiting", py::int_(c.sleeping.load(std::memory_order_relaxed)));
         },
         "Callers waiting now for their instant (or a pause's end).")
      .def("predicted_wait",
           [](RateCore& c, std::int64_t tokens) {
             return figure(c.hooks, "predicted_wait",
                           py::float_(static_cast<double>(c.wait_for_turn(tokens, now_ns())) / 1e9), py::int_(tokens));
           },
           py::arg("tokens") = 0, "Seconds a caller arriving now would wait (for `tokens` too).");
  cls.def("_async_reserve", &async_reserve, py::arg("waiter"), py::arg("deadline_ns"))
      .def("_async_reserve_check", &async_reserve_check, py::arg("waiter"))
      .def("_async_refund", &async_refund, py::arg("waiter"))
      .def("_async_stand_by", &async_stand_by, py::arg("waiter"),
           "A coroutine stands by: every change of the limiter's prospects (a refund, a new rate or\n"
           "burst, a re-planned queue, close()) wakes `waiter`. Raises LimiterClosed.")
      .def("_async_stand_by_end",
           [](RateCore& core, AsyncWait& w) {
             core.standby.stop_listening(w.standby_listener);
             if (w.bucket == nullptr && !w.ticket) w.stop_counting();  // a booking made meanwhile stays counted
           },
           py::arg("waiter"), "Ends the stand-by of `waiter`.")
      .def("_async_ticket", &async_ticket, py::arg("waiter"), py::arg("tokens"), py::arg("deadline_ns"),
           py::arg("fail_fast") = false)
      .def("_async_ticket_poll", &async_ticket_poll, py::arg("waiter"))
      .def("_async_ticket_leave",
           [](RateCore& core, AsyncWait& w) {
             if (w.ticket && core.dual) core.dual->leave(*w.ticket);
             w.stop_counting();
           },
           py::arg("waiter"))
      .def(
          "_turn_within",
          [](RateCore& core, std::int64_t tokens, Nanos deadline_ns) {
            raise_if_closed(core);
            return core.turn_within(tokens, deadline_ns);
          },
          py::arg("tokens"), py::arg("deadline_ns"),
          "True when a caller for `tokens` arriving now would have its turn by `deadline_ns` (books\n"
          "nothing). Raises LimiterClosed.")
      .def("_wait_for_turn_within", &wait_for_turn_within, py::arg("tokens"), py::arg("deadline_ns"),
           "Stands by (GIL released) until a caller for `tokens` arriving now would have its turn by\n"
           "`deadline_ns` (True), or that deadline passes (False). Books nothing. Raises LimiterClosed.")
      .def("close", &RateCore::close,
           "Wakes every waiter of this process (threads and coroutines) with LimiterClosed; later\n"
           "acquires raise it. A limiter shared with other processes stays open in those.")
      .def_property_readonly("closed", [](const RateCore& c) { return c.closed.load(); },
                             "True once close() was called.")
      .def_property_readonly(
          "_async_reservation", [](const RateCore& c) { return c.async_reservation; },
          "With a token budget: the ContextVar of the current task's latest unsettled reservation.");
  add_pause_methods(cls, [](RateCore& core, Nanos end) { core.hold_until(end); });
  add_metric_methods(cls);
  add_standby_methods(cls);
  add_fast_methods(cls, fast_methods);
  add_fast_methods(cls, async_fast_methods);
}

}  // namespace omnilimit::bindings
