// omnilimit._core.ConcurrencyCore: the semaphore behind omnilimit.ConcurrencyLimiter.
//
// The decisions are the core's: what a caller holding a slot does under a pause (SlotUnderPause,
// pause.hpp) and the over-release rule (ThreadAccount, thread_account.hpp); this file waits with
// the GIL released and speaks Python.
#include <pybind11/pybind11.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_set>

#include "acquire_methods.hpp"
#include "async_wait.hpp"
#include "common.hpp"
#include "pause_methods.hpp"
#include "store.hpp"
#include "omnilimit/histogram.hpp"
#include "omnilimit/pause.hpp"
#include "omnilimit/semaphore.hpp"
#include "omnilimit/shm_segment.hpp"
#include "omnilimit/shm_semaphore.hpp"
#include "omnilimit/standby.hpp"
#include "omnilimit/thread_account.hpp"
#include "omnilimit/window.hpp"
#include "wait.hpp"

namespace omnilimit::bindings {
namespace {

std::atomic<std::uint64_t> last_limiter_id{0};

// The ids of the limiters that exist now (concurrency cores and release rules), for the threads'
// accounts: an entry of a limiter gone is given up first (thread_account.hpp). Changed and read
// with the GIL held only; never destroyed (cores may outlive static destruction at exit).
std::unordered_set<std::uint64_t>& live_limiters() {
  static auto* const ids = new std::unordered_set<std::uint64_t>();
  return *ids;
}

bool is_live(std::uint64_t id) { return live_limiters().count(id) > 0; }

// A limiter's id: unique, never reused, and live while the limiter exists.
class LimiterId {
 public:
  LimiterId() : value(last_limiter_id.fetch_add(1, std::memory_order_relaxed) + 1) { live_limiters().insert(value); }
  ~LimiterId() { live_limiters().erase(value); }
  LimiterId(const LimiterId&) = delete;
  LimiterId& operator=(const LimiterId&) = delete;
  operator std::uint64_t() const { return value; }  // NOLINT: an id is used as a number

  const std::uint64_t value;
};

// Runs `op(lock_until) -> std::optional<T>`, a SharedSemaphore call that takes the segment's
// mutex and answers nullopt when it could not have it by `lock_until`: first one try with the GIL
// held (the uncontended case), then with the GIL released, until `deadline_ns` (kForever: as long
// as it takes), with KeyboardInterrupt between slices. A peer stopped while it holds the mutex
// thus costs a caller its own deadline at most: other threads run, Ctrl-C works. Returns nullopt
// once the deadline has passed; throws error_already_set when interrupted.
template <class T, class Op>
std::optional<T> with_segment_lock(Nanos deadline_ns, Op&& op) {
  std::optional<T> result = op(SharedSemaphore::kTryLock);
  if (result || deadline_ns <= now_ns()) return result;
  const WaitResult waited = wait_without_gil(deadline_ns, [&](Nanos until_ns) {
    result = op(until_ns);
    return result.has_value();
  });
  if (waited == WaitResult::interrupted) throw py::error_already_set();
  return result;
}

// What the processes sharing a concurrency limiter share besides the semaphore (and what an
// in-process limiter keeps for itself): lock-free atomics, built in place.
struct ConcurrencyCounters {
  Pause pause;             // the provider said "stop until" (on_rate_limited)
  RequestWindow released;  // releases in the last minute: the limiter's current RPM
  alignas(64) std::atomic<std::int64_t> total_acquired{0};
  std::atomic<std::int64_t> blocked{0};
  std::atomic<std::int64_t> denied{0};  // acquire(timeout=0) refused
  std::atomic<std::int64_t> releases_after_failure{0};
  WaitHistogram waits;  // how long the callers that had to wait waited
};
// The payload of a shared concurrency limiter's segment.
struct ConcurrencySegment {
  SharedSemaphore::State semaphore;
  ConcurrencyCounters counters;
};
constexpr std::uint32_t kConcurrencySegmentKind = 2;
// The payload's layout fingerprint: 2 the semaphore's atomics (SharedSemaphore::kLayout), 3 the
// wait histogram's sum.
constexpr std::uint64_t kConcurrencyLayout = 3;
static_assert(SharedSemaphore::kLayout == 2, "bump kConcurrencyLayout when the semaphore's layout changes");

std::unique_ptr<SharedSegment> open_concurrency_segment(const std::string& name, std::int64_t max_concurrent) {
  if (name.empty()) return nullptr;
  return std::make_unique<SharedSegment>(name, kConcurrencySegmentKind, sizeof(ConcurrencySegment),
                                         kConcurrencyLayout, [&](void* at) {
                                           auto* shared = new (at) ConcurrencySegment();
                                           SharedSemaphore::init(shared->semaphore, max_concurrent);
                                         });
}

struct ConcurrencyCore final : ForkAware {
  ConcurrencyCore(std::int64_t max_concurrent, const std::string& shm_name, Hooks given_hooks)
      : hooks(std::move(given_hooks)),
        semaphore(max_concurrent),
        segment(open_concurrency_segment(shm_name, max_concurrent)),
        local(segment ? nullptr : std::make_unique<ConcurrencyCounters>()),
        counters(segment ? static_cast<ConcurrencySegment*>(segment->payload())->counters : *local),
        shared_semaphore(segment ? std::make_unique<SharedSemaphore>(
                                       static_cast<ConcurrencySegment*>(segment->payload())->semaphore)
                                 : nullptr),
        pause(counters.pause),
        released(counters.released),
        total_acquired(counters.total_acquired),
        blocked(counters.blocked),
        denied(counters.denied),
        releases_after_failure(counters.releases_after_failure),
        waits(counters.waits) {
    if (segment && !segment->created() && shared_semaphore->max_slots() != max_concurrent) {
      max_before = shared_semaphore->max_slots();  // the latest configuration wins (logged by Python)
      set_max(max_concurrent);
    }
  }
  void reinit_after_fork() noexcept override {
    semaphore.reinit_after_fork();
    if (shared_semaphore) shared_semaphore->reinit_after_fork();
    standby.reinit_after_fork(false);
  }
  // Wakes every waiter of this process (queued, or waiting out a pause) with LimiterClosed; later
  // acquires raise it; holders may still release. Other processes sharing the segment stay open.
  void close() {
    closed.store(true);
    if (shared_semaphore) shared_semaphore->wake_all(); else semaphore.close();
    standby.notify();
  }

  // The semaphore's figures, whichever it is.
  std::int64_t max_slots() const { return shared_semaphore ? shared_semaphore->max_slots() : semaphore.max_slots(); }
  std::int64_t held() const { return shared_semaphore ? shared_semaphore->held() : semaphore.held(); }
  std::int64_t queued() const { return shared_semaphore ? shared_semaphore->waiting() : semaphore.waiting(); }
  std::int64_t over_releases() const {
    return shared_semaphore ? shared_semaphore->over_release_count() : semaphore.over_release_count();
  }
  // Gives a slot back (to the next waiter). False when none was held (counted). With the GIL held
  // (released while it waits for a shared segment's mutex).
  bool give_back() {
    if (!shared_semaphore) return semaphore.release() == Semaphore::Released::ok;
    const auto released = with_segment_lock<SharedSemaphore::Released>(kForever, [&](Nanos until_ns) {
      const SharedSemaphore::Released r = shared_semaphore->release(until_ns);
      return r == SharedSemaphore::Released::busy ? std::nullopt : std::optional<SharedSemaphore::Released>(r);
    });
    return released == SharedSemaphore::Released::ok;
  }
  // Changes the cap (returns how many waiters got a slot). With the GIL held, as give_back().
  std::int64_t set_max(std::int64_t max_concurrent) {
    if (!shared_semaphore) return semaphore.set_max(max_concurrent);
    return *with_segment_lock<std::int64_t>(
        kForever, [&](Nanos until_ns) { return shared_semaphore->set_max(max_concurrent, until_ns); });
  }
  // Coroutines wait only on an in-process semaphore (a futex cannot wake an event loop).
  Semaphore& local_semaphore() {
    if (shared_semaphore) {
      throw std::invalid_argument("coroutines cannot wait on a concurrency limiter shared between processes yet");
    }
    return semaphore;
  }

  const LimiterId id;
  Hooks hooks;  // the store that decides (a Redis limiter's), the timeout and over-release reports
  std::atomic<std::int64_t> store_over_releases{0};  // releases the store found nothing held for
  Semaphore semaphore;                              // unused when shared
  std::unique_ptr<SharedSegment> segment;           // set for a limiter shared between processes
  std::unique_ptr<ConcurrencyCounters> local;       // set otherwise
  ConcurrencyCounters& counters;
  mutable std::unique_ptr<SharedSemaphore> shared_semaphore;  // over the segment's semaphore
  Pause& pause;
  RequestWindow& released;
  std::atomic<std::int64_t>& total_acquired;
  std::atomic<std::int64_t>& blocked;
  std::atomic<std::int64_t>& denied;
  std::atomic<std::int64_t>& releases_after_failure;
  WaitHistogram& waits;
  std::atomic<bool> over_release_reported{false};
  std::int64_t max_before = 0;  // an existing segment's max on opening, when it differed
  // Callers waiting out a pause (or their timeout, when the pause outlasts it) sleep here, so that
  // close() wakes them. This process's alone: a pause never shortens, so only close() wakes them.
  StandbyWords standby_words;
  Standby standby{standby_words, false};
  std::atomic<bool> closed{false};
};

thread_local ThreadAccount thread_account;  // the over-release rule (thread_account.hpp)

struct Concurrency {
  using Core = ConcurrencyCore;
  static constexpr Nanos kDefaultTimeoutNs = 120 * kNanosPerSecond;
  static inline PyObject* default_timeout = nullptr;

  static Outcome take(ConcurrencyCore& core, Nanos timeout_ns) {
    const Outcome outcome = take_slot(core, timeout_ns);
    thread_account.after_acquire(core.id, outcome == Outcome::acquired, is_live);
    return outcome;
  }

  // A store's answer falls under the same over-release rule as the core's own.
  static void after_store(ConcurrencyCore& core, Outcome outcome) {
    if (outcome != Outcome::error) thread_account.after_acquire(core.id, outcome == Outcome::acquired, is_live);
  }

  static Outcome take_slot(ConcurrencyCore& core, Nanos timeout_ns) {
    Nanos started_ns = 0;  // set by queue_for_slot when the caller had to queue
    const Outcome outcome = queue_for_slot(core, timeout_ns, started_ns);
    if (outcome != Outcome::acquired) return outcome;
    if (!core.pause.maybe_active()) {
      if (started_ns != 0) record_wait(core.hooks, core.waits, now_ns() - started_ns);
      return outcome;
    }
    // A pause may be in effect: keep the slot until its end, or pass it on (SlotUnderPause).
    const Nanos now = now_ns();
    if (started_ns == 0) started_ns = now;  // the slot came at once
    const Nanos end = core.pause.end_ns(now);
    const Nanos go_at = end == 0 ? 0 : core.pause.release_time(end);
    const SlotUnderPause plan = SlotUnderPause::decide(end, go_at, started_ns, timeout_ns);
    if (plan.action == SlotUnderPause::Action::go) {
      record_wait(core.hooks, core.waits, now - started_ns);
      return outcome;
    }
    Standby::Watch watch(core.standby);
    WaitResult result = WaitResult::deadline;
    if (plan.action == SlotUnderPause::Action::hold) {
      result = sleep_unless_closed(core, watch, plan.until_ns);
      if (result == WaitResult::deadline) {  // the pause's end came
        record_wait(core.hooks, core.waits, now_ns() - started_ns);
        return outcome;
      }
    }
    // The pause outlasts the timeout, KeyboardInterrupt, or close(): pass the slot on. Then, unless
    // interrupted or closed, wait out the timeout holding nothing.
    core.total_acquired.fetch_sub(1, std::memory_order_relaxed);
    core.give_back();
    if (result == WaitResult::deadline) result = sleep_unless_closed(core, watch, plan.deadline_ns);
    if (result == WaitResult::interrupted) return Outcome::error;
    if (core.closed.load()) return closed_error();
    return Outcome::timed_out;
  }

  // Sleeps (GIL released) until `until_ns` (deadline), KeyboardInterrupt (interrupted) or close()
  // (done).
  static WaitResult sleep_unless_closed(ConcurrencyCore& core, const Standby::Watch& watch, Nanos until_ns) {
    for (;;) {
      const std::uint32_t seen = watch.generation();
      if (core.closed.load()) return WaitResult::done;
      const WaitResult result = stand_by(watch, seen, until_ns);
      if (result != WaitResult::done) return result;
    }
  }

  static Outcome closed_error() {
    PyErr_SetString(limiter_closed_error, "the limiter is closed");
    return Outcome::error;
  }

  // A slot of a semaphore shared between processes: taken at once, or queued in the segment and
  // woken by the releasing process's futex wake.
  static Outcome queue_for_shared_slot(ConcurrencyCore& core, Nanos timeout_ns, Nanos& started_ns) {
    SharedSemaphore& semaphore = *core.shared_semaphore;
    if (core.closed.load(std::memory_order_relaxed)) return closed_error();
    if (timeout_ns == 0) {
      if (!semaphore.try_acquire()) return Outcome::timed_out;
      core.total_acquired.fetch_add(1, std::memory_order_relaxed);
      return Outcome::acquired;
    }
    int entry = -1;
    const Nanos arrived_ns = now_ns();
    const Nanos deadline_ns = saturating_add(arrived_ns, timeout_ns);
    const std::optional<SharedSemaphore::Enqueued> where =
        with_segment_lock<SharedSemaphore::Enqueued>(deadline_ns, [&](Nanos until_ns) {
          const SharedSemaphore::Enqueued e = semaphore.enqueue(&entry, until_ns);
          return e == SharedSemaphore::Enqueued::busy ? std::nullopt : std::optional<SharedSemaphore::Enqueued>(e);
        });
    if (!where) return Outcome::timed_out;  // the mutex was held (by a stopped peer?) past the deadline
    if (*where == SharedSemaphore::Enqueued::queued) {
      started_ns = arrived_ns;
      const WaitResult result = wait_without_gil(deadline_ns, [&](Nanos until_ns) {
        return semaphore.wait(entry, until_ns, &core.closed) || core.closed.load();
      });
      if (result == WaitResult::interrupted || core.closed.load()) {
        // KeyboardInterrupt, or close(): leave the queue, passing on a slot granted meanwhile.
        if (semaphore.cancel(entry)) core.give_back();
        return result == WaitResult::interrupted ? Outcome::error : closed_error();
      }
      if (result == WaitResult::deadline) {
        if (!semaphore.cancel(entry)) return Outcome::timed_out;  // (a slot at the last moment is kept)
      } else {
        semaphore.claim(entry);
      }
    }
    core.total_acquired.fetch_add(1, std::memory_order_relaxed);
    return Outcome::acquired;
  }

  static Outcome queue_for_slot(ConcurrencyCore& core, Nanos timeout_ns, Nanos& started_ns) {
    if (core.shared_semaphore) return queue_for_shared_slot(core, timeout_ns, started_ns);
    Semaphore& semaphore = core.semaphore;
    if (semaphore.try_acquire_fast()) {
      core.total_acquired.fetch_add(1, std::memory_order_relaxed);
      return Outcome::acquired;
    }
    if (timeout_ns == 0 && !semaphore.closed()) return Outcome::timed_out;  // try once, never queue
    started_ns = now_ns();
    const Nanos deadline_ns = saturating_add(started_ns, timeout_ns);
    Semaphore::Waiter waiter;
    Semaphore::WaitStatus status = Semaphore::WaitStatus::pending;
    switch (semaphore.enqueue(waiter)) {
      case Semaphore::Enqueued::acquired:
        status = Semaphore::WaitStatus::acquired;
        break;
      case Semaphore::Enqueued::closed:
        status = Semaphore::WaitStatus::closed;
        break;
      case Semaphore::Enqueued::queued: {
        const WaitResult result = wait_without_gil(deadline_ns, [&](Nanos until_ns) {
          status = semaphore.wait(waiter, until_ns);
          return status != Semaphore::WaitStatus::pending;
        });
        if (result == WaitResult::interrupted) {
          // A signal handler raised (KeyboardInterrupt): leave the queue, and pass on a slot that
          // was handed over meanwhile, before the exception propagates.
          if (semaphore.cancel(waiter)) semaphore.release();
          return Outcome::error;
        }
        if (result == WaitResult::deadline) {
          if (!semaphore.cancel(waiter)) return Outcome::timed_out;
          status = Semaphore::WaitStatus::acquired;  // handed over at the last moment: keep it
        }
        break;
      }
    }
    if (status == Semaphore::WaitStatus::closed) {
      PyErr_SetString(limiter_closed_error, "the limiter is closed");
      return Outcome::error;
    }
    core.total_acquired.fetch_add(1, std::memory_order_relaxed);
    return Outcome::acquired;
  }
};

// A coroutine's acquisition, counted as a thread's (in the loop's thread, which releases it).
void count_async_acquired(ConcurrencyCore& core, Nanos started_ns) {
  core.total_acquired.fetch_add(1, std::memory_order_relaxed);
  if (started_ns != 0) record_wait(core.hooks, core.waits, now_ns() - started_ns);
  thread_account.after_acquire(core.id, true, is_live);
}

// ---- coroutines (acquire_async) ----------------------------------------------------------------
//
// A coroutine that must wait for a slot holds a handle on its AsyncWait (wait_handle,
// async_wait.hpp): dropping it leaves the queue and passes on a slot handed over and never claimed.

// The AsyncWait of a handle queued on `core`; nullptr with an error set otherwise.
AsyncWait* slot_wait(ConcurrencyCore& core, PyObject* handle) {
  AsyncWait* w = handle_wait(handle);
  if (w == nullptr) return nullptr;
  if (w->semaphore != &core.semaphore) {
    PyErr_SetString(PyExc_ValueError, "this wait is not queued on this limiter");
    return nullptr;
  }
  return w;
}

// _async_enqueue(notifier, future, deadline_ns): a slot now (True, counted), or a handle queued
// for one: its future is resolved by the loop's drain when the core hands it a slot (or wakes it
// to look again), and by the loop's timed waits at `deadline_ns`. Raises LimiterClosed.
PyObject* fast_async_enqueue(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    if (!fixed_arguments("_async_enqueue", 3, nargs, kwnames)) return nullptr;
    ConcurrencyCore* core = self_ptr<ConcurrencyCore>(self);
    if (core == nullptr) return nullptr;
    Nanos deadline_ns = 0;
    if (!parse_instant(args[2], &deadline_ns)) return nullptr;
    auto notifier = py::handle(args[0]).cast<std::shared_ptr<LoopNotifier>>();
    if (core->shared_semaphore) {  // (local_semaphore() says so too, as a C++ exception: ValueError here)
      PyErr_SetString(PyExc_ValueError,
                      "coroutines cannot wait on a concurrency limiter shared between processes yet");
      return nullptr;
    }
    if (core->closed.load(std::memory_order_relaxed)) {
      PyErr_SetString(limiter_closed_error, "the limiter is closed");
      return nullptr;
    }
    if (core->local_semaphore().try_acquire_fast()) {
      count_async_acquired(*core, 0);
      Py_RETURN_TRUE;
    }
    auto w = std::make_shared<AsyncWait>(notifier, py::reinterpret_borrow<py::object>(args[1]));
    switch (core->semaphore.enqueue(w->slot)) {
      case Semaphore::Enqueued::acquired:
        w->slot_claimed = true;
        count_async_acquired(*core, 0);
        Py_RETURN_TRUE;
      case Semaphore::Enqueued::closed:
        PyErr_SetString(limiter_closed_error, "the limiter is closed");
        return nullptr;
      case Semaphore::Enqueued::queued:
        break;
    }
    w->semaphore = &core->semaphore;
    w->owner = py::reinterpret_borrow<py::object>(self);
    w->started_ns = now_ns();
    PyObject* handle = wait_handle(w);
    if (handle == nullptr) return nullptr;
    if (deadline_ns < kForever) {
      try {
        notifier->wake_at(w->future, deadline_ns);
      } catch (...) {
        Py_DECREF(handle);  // leaves the queue
        throw;
      }
    }
    return handle;
  });
}

// _async_status(handle): True once a slot was handed to the queued coroutine (now its own), False
// while it waits. Raises LimiterClosed.
PyObject* fast_async_status(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    if (!fixed_arguments("_async_status", 1, nargs, kwnames)) return nullptr;
    ConcurrencyCore* core = self_ptr<ConcurrencyCore>(self);
    if (core == nullptr) return nullptr;
    AsyncWait* w = slot_wait(*core, args[0]);
    if (w == nullptr) return nullptr;
    if (w->slot_claimed) Py_RETURN_TRUE;
    switch (core->semaphore.status(w->slot)) {
      case Semaphore::WaitStatus::acquired:
        w->slot_claimed = true;
        count_async_acquired(*core, w->started_ns);
        Py_RETURN_TRUE;
      case Semaphore::WaitStatus::closed:
        PyErr_SetString(limiter_closed_error, "the limiter is closed");
        return nullptr;
      case Semaphore::WaitStatus::pending:
        break;
    }
    Py_RETURN_FALSE;
  });
}

// _async_cancel(handle): the coroutine gives up (timeout, cancellation) and leaves the queue.
// True when a slot had been handed to it meanwhile: it holds that slot now (to use, or to give
// back).
PyObject* fast_async_cancel(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    if (!fixed_arguments("_async_cancel", 1, nargs, kwnames)) return nullptr;
    ConcurrencyCore* core = self_ptr<ConcurrencyCore>(self);
    if (core == nullptr) return nullptr;
    AsyncWait* w = slot_wait(*core, args[0]);
    if (w == nullptr) return nullptr;
    if (w->slot_claimed) Py_RETURN_TRUE;
    if (!core->semaphore.cancel(w->slot)) Py_RETURN_FALSE;
    w->slot_claimed = true;
    count_async_acquired(*core, w->started_ns);
    Py_RETURN_TRUE;
  });
}

// _async_watch(handle, future, deadline_ns): the coroutine, woken to look again, waits on a new
// future (resolved as the first was).
PyObject* fast_async_watch(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    if (!fixed_arguments("_async_watch", 3, nargs, kwnames)) return nullptr;
    ConcurrencyCore* core = self_ptr<ConcurrencyCore>(self);
    if (core == nullptr) return nullptr;
    AsyncWait* w = slot_wait(*core, args[0]);
    if (w == nullptr) return nullptr;
    Nanos deadline_ns = 0;
    if (!parse_instant(args[2], &deadline_ns)) return nullptr;
    w->future = py::reinterpret_borrow<py::object>(args[1]);
    if (deadline_ns < kForever) w->notifier().wake_at(w->future, deadline_ns);
    Py_RETURN_NONE;
  });
}

PyObject* release_slot(PyObject* self, ConcurrencyCore& core) {
  if (thread_account.release_answers_failure(core.id)) {
    core.releases_after_failure.fetch_add(1, std::memory_order_relaxed);
  } else if (core.hooks.has_store()) {
    bool released = false;
    if (!give_back_to_store(core.hooks, self, &released)) return nullptr;
    if (released) Py_RETURN_NONE;
    core.store_over_releases.fetch_add(1, std::memory_order_relaxed);
  } else if (core.give_back()) {
    core.released.record(coarse_now_ns());
    Py_RETURN_NONE;
  }
  if (!report_over_release(core.hooks, core.over_release_reported)) return nullptr;
  Py_RETURN_NONE;
}

PyObject* fast_release(PyObject* self, PyObject* const*, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    if (!no_arguments("release", nargs, kwnames)) return nullptr;
    ConcurrencyCore* core = self_ptr<ConcurrencyCore>(self);
    return core == nullptr ? nullptr : release_slot(self, *core);
  });
}

PyObject* fast_exit(PyObject* self, PyObject* const*, Py_ssize_t, PyObject*) {
  return guarded([&]() -> PyObject* {
    ConcurrencyCore* core = self_ptr<ConcurrencyCore>(self);
    if (core == nullptr) return nullptr;
    PyObject* result = release_slot(self, *core);
    if (result == nullptr) return nullptr;
    Py_DECREF(result);
    Py_RETURN_FALSE;
  });
}

// _async_fast(): `async with` and acquire_async's uncontended path, in one call: a free slot of
// the in-process semaphore taken now (counted) when no pause is in effect (True); False when a
// coroutine must take the full path (no free slot, a pause, a store, a shared segment, closed).
PyObject* fast_async_try(PyObject* self, PyObject* const*, Py_ssize_t, PyObject*) {
  return guarded([&]() -> PyObject* {
    ConcurrencyCore* core = self_ptr<ConcurrencyCore>(self);
    if (core == nullptr) return nullptr;
    if (core->shared_semaphore || core->hooks.has_store() || core->pause.maybe_active() ||
        core->closed.load(std::memory_order_relaxed) || !core->semaphore.try_acquire_fast()) {
      Py_RETURN_FALSE;
    }
    count_async_acquired(*core, 0);
    Py_RETURN_TRUE;
  });
}

PyMethodDef fast_methods[] = {
    fast_method("_async_enqueue", fast_async_enqueue,
                "_async_enqueue($self, notifier, future, deadline_ns, /)\n--\n\n"
                "acquire_async: True with a slot taken now, else a handle queued for one (its future\n"
                "resolved by the core, or by the loop's timed waits at `deadline_ns`). Raises LimiterClosed."),
    fast_method("_async_status", fast_async_status,
                "_async_status($self, handle, /)\n--\n\n"
                "True once a slot was handed to the queued handle, False while it waits. Raises LimiterClosed."),
    fast_method("_async_cancel", fast_async_cancel,
                "_async_cancel($self, handle, /)\n--\n\n"
                "Takes the handle out of the queue; True when a slot had been handed to it (held now)."),
    fast_method("_async_watch", fast_async_watch,
                "_async_watch($self, handle, future, deadline_ns, /)\n--\n\n"
                "The queued handle waits on `future` from now on (woken to look again)."),
    fast_method("_async_fast", fast_async_try,
                "_async_fast($self, /)\n--\n\n"
                "A free slot taken now, with no pause in effect (True), or nothing (False): the\n"
                "uncontended path of acquire_async and `async with`."),
    fast_method("acquire", fast_acquire<Concurrency>,
                "acquire($self, /, timeout=120)\n--\n\n"
                "Takes a slot, waiting up to `timeout` seconds (None: forever; 0: try once). Returns True\n"
                "when a slot was taken, False on timeout. Waiters are served in arrival order. Raises\n"
                "LimiterClosed if the limiter is closed, ValueError for a bad timeout."),
    fast_method("release", fast_release,
                "release($self, /)\n--\n\n"
                "Frees a slot, handing it to the oldest waiter if there is one. A release without a held\n"
                "slot is counted and logged once, never turned into extra capacity."),
    fast_method("__enter__", fast_enter<Concurrency>,
                "__enter__($self, /)\n--\n\nacquire() with the default timeout; raises LimiterTimeout on timeout."),
    fast_method("__exit__", fast_exit, "__exit__($self, *exc_info, /)\n--\n\nrelease()."),
    {nullptr, nullptr, 0, nullptr}};

// The over-release rule (ThreadAccount) for a limiter made of others (CombinedLimiter).
struct ReleaseRule {
  const LimiterId id;
};

void register_release_rule(py::module_& m) {
  py::class_<ReleaseRule>(m, "ReleaseRule", R"doc(
The over-release rule of ConcurrencyLimiter for a limiter written in Python (CombinedLimiter): each
thread's account of the slots it holds and of its last failed acquire (thread_account.hpp). A
release() from a thread that holds no slot, right after its own failed acquire, answers that
failure (omnigen releases in a `finally`) and must be ignored.)doc")
      .def(py::init<>())
      .def("after_acquire", [](const ReleaseRule& r, bool acquired) { thread_account.after_acquire(r.id, acquired, is_live); },
           py::arg("acquired"), "This thread's acquire took a slot (True) or nothing (False).")
      .def("release_answers_failure",
           [](const ReleaseRule& r) { return thread_account.release_answers_failure(r.id); },
           "This thread releases: True when it answers its own failed acquire (to be ignored).")
      .def("held", [](const ReleaseRule& r) { return thread_account.held(r.id); },
           "Slots this thread holds (0 when it holds none, or tracks more limiters than it can).");
}

}  // namespace

py::object peek_concurrency(const SegmentView& view) {
  if (view.kind() != kConcurrencySegmentKind) return py::none();
  const auto* segment = view.payload_as<ConcurrencySegment>(kConcurrencyLayout);
  if (segment == nullptr) return py::none();
  const ConcurrencyCounters& c = segment->counters;
  py::dict out;
  out["kind"] = "concurrency";
  out["max_concurrent"] = segment->semaphore.max_slots.load(std::memory_order_relaxed);
  out["active"] = segment->semaphore.held.load(std::memory_order_relaxed);
  out["waiting"] = segment->semaphore.queued.load(std::memory_order_relaxed);
  add_common_figures(out, c.pause, c.released, c.total_acquired, c.blocked, c.denied, c.waits);
  return std::move(out);
}

void register_semaphore(py::module_& m) {
  register_release_rule(m);
  Concurrency::default_timeout = PyLong_FromLong(120);
  if (Concurrency::default_timeout == nullptr) throw py::error_already_set();

  py::class_<ConcurrencyCore> cls(m, "ConcurrencyCore", R"doc(
The native part of ConcurrencyLimiter: a FIFO counting semaphore with a lock-free fast path.

acquire(), release(), __enter__ and __exit__ are implemented in C++ directly; the GIL is
released only while a caller waits.)doc");
  cls.def(py::init([](std::int64_t max_concurrent, const std::string& shm_name, py::object store, py::object on_timeout,
                      py::object on_over_release) {
            return new ConcurrencyCore(max_concurrent, shm_name,
                                       Hooks{std::move(store), std::move(on_timeout), std::move(on_over_release)});
          }),
          py::arg("max_concurrent"), py::arg("shm_name") = "", py::kw_only(), py::arg("store") = py::none(),
          py::arg("on_timeout") = py::none(), py::arg("on_over_release") = py::none(),
          "`store`: the object that decides instead of this core (store.hpp); `on_timeout(timeout) ->\n"
          "message` and `on_over_release()`: how a timeout and the first over-release are reported.")
      .def_property_readonly(
          "shared_name", [](const ConcurrencyCore& c) -> py::object {
            return c.segment ? py::object(py::str(c.segment->name())) : py::object(py::none());
          },
          "The name of the shared-memory segment this limiter shares with other processes (None: in-process).")
      .def_property_readonly(
          "_shared_max_before",
          [](const ConcurrencyCore& c) -> py::object {
            return c.max_before == 0 ? py::object(py::none()) : py::object(py::int_(c.max_before));
          },
          "For a shared limiter that opened an existing segment with another max: that max.")
      .def("close", &ConcurrencyCore::close,
           "Wakes every waiter of this process (threads and coroutines) with LimiterClosed; later\n"
           "acquires raise it. Holders may still release. A limiter shared with other processes\n"
           "stays open in those.")
      .def_property_readonly("max_concurrent", [](const ConcurrencyCore& c) {
        return figure(c.hooks, "max_concurrent", py::int_(c.max_slots()));
      })
      .def("set_max_concurrent",
           [](ConcurrencyCore& c, std::int64_t n) {
             return c.set_max(n);
           },
           py::arg("max_concurrent"),
           "Changes the limit now. More slots go at once to the oldest waiters (returns how many got\n"
           "one); with fewer, calls in flight finish and slots are handed on only below the new limit.")
      .def_property_readonly("active_calls", [](const ConcurrencyCore& c) {
        return figure(c.hooks, "active_calls", py::int_(c.held()));
      },
                             "Slots held now.")
      .def_property_readonly("waiting", [](const ConcurrencyCore& c) {
        return figure(c.hooks, "waiting", py::int_(c.queued()));
      },
                             "Callers queued for a slot now.")
      .def_property_readonly("closed", [](const ConcurrencyCore& c) { return c.closed.load(); },
                             "True once close() was called.")
      .def("_async_stand_by",
           [](ConcurrencyCore& core, AsyncWait& w) {
             if (core.closed.load()) {
               PyErr_SetString(limiter_closed_error, "the limiter is closed");
               throw py::error_already_set();
             }
             w.standby = &core.standby;
             core.standby.listen(w.standby_listener);
           },
           py::arg("waiter"), "A coroutine waits out a pause or its timeout: close() wakes `waiter`.")
      .def("_async_stand_by_end",
           [](ConcurrencyCore& core, AsyncWait& w) { core.standby.stop_listening(w.standby_listener); },
           py::arg("waiter"))
      .def_property_readonly("total_requests",
                             [](const ConcurrencyCore& c) {
                               return figure(c.hooks, "total_requests",
                                             py::int_(c.total_acquired.load(std::memory_order_relaxed)));
                             },
                             "Successful acquires since creation.")
      .def_property_readonly("blocked_count",
                             [](const ConcurrencyCore& c) {
                               return figure(c.hooks, "blocked_count", py::int_(c.blocked.load(std::memory_order_relaxed)));
                             },
                             "Acquires that got no slot (timeouts and failed tries).")
      .def_property_readonly("over_release_count",
                             [](const ConcurrencyCore& c) {
                               return c.over_releases() + c.releases_after_failure.load(std::memory_order_relaxed) +
                                      c.store_over_releases.load(std::memory_order_relaxed);
                             },
                             "Releases made without a held slot, ignored: more releases than acquires, and a "
                             "thread's release() right after its own failed acquire().")
      .def("get_current_rpm", [](const ConcurrencyCore& c) {
        return figure(c.hooks, "get_current_rpm", py::int_(c.released.count()));
      },
           "Calls released in the last 60 seconds.")
      .def("_acquire_here",
           [](ConcurrencyCore& core, py::object timeout) {
             // The store's in-process fallback (an outage policy's `local`) takes a slot of this core.
             Nanos timeout_ns = 0;
             if (!parse_timeout(timeout.ptr(), &timeout_ns)) throw py::error_already_set();
             Nanos started_ns = 0;
             const Outcome outcome = Concurrency::queue_for_slot(core, timeout_ns, started_ns);
             if (outcome == Outcome::error) throw py::error_already_set();
             return outcome == Outcome::acquired;
           },
           py::arg("timeout"),
           "Takes a slot of this core itself, whatever the store: nothing counted as refused, no pause\n"
           "waited out, the thread's account left to the store's acquire().")
      .def("_release_here", [](ConcurrencyCore& core) {
             // The store's in-process fallback (an outage policy's `local`) gives a slot back.
             if (core.give_back()) core.released.record(coarse_now_ns());
           }, "Gives back a slot of this core itself, whatever the store.")
      .def("_give_back",
           [](py::object self) {
             // A slot taken for a coroutine that does not use it (a pause outlasts its timeout, or it
             // was cancelled), or by a CombinedLimiter whose rate turn is out of reach: passed on
             // without counting as a call here (a store's own count keeps it), as acquire() does.
             ConcurrencyCore& core = self.cast<ConcurrencyCore&>();
             thread_account.gave_back(core.id);
             if (core.hooks.has_store()) {
               bool released = false;
               if (!give_back_to_store(core.hooks, self.ptr(), &released)) throw py::error_already_set();
               return;
             }
             core.total_acquired.fetch_sub(1, std::memory_order_relaxed);
             core.give_back();
           },
           "Passes on a slot this thread (or coroutine) took and will not use (not counted as a call).")
      .def("_async_try", [](ConcurrencyCore& core) {
             if (!core.local_semaphore().try_acquire_fast()) return false;
             count_async_acquired(core, 0);
             return true;
           }, "acquire_async(timeout=0): a free slot now, or nothing.");
  add_pause_methods(cls, [](ConcurrencyCore&, Nanos) {});
  add_metric_methods(cls);
  add_standby_methods(cls);
  add_fast_methods(cls, fast_methods);
}

}  // namespace omnilimit::bindings
