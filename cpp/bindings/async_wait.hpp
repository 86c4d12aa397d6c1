// Coroutines waiting in the core: LoopNotifier (one per event loop) and AsyncWait (one per
// waiting coroutine).
//
// A coroutine must not block its event loop, and no thread may be parked on its behalf. So it
// waits in the core's queues as a thread would, with a Waker instead of a condition variable
// (waker.hpp): the AsyncWait. When the core wakes it (under a core mutex, from whatever thread
// released the slot or changed the budget, with or without the GIL), the AsyncWait posts itself
// to its loop's LoopNotifier: a list and an eventfd that the loop watches (loop.add_reader). The
// loop then runs the Python side's drain, which resolves each posted waiter's current future;
// the coroutine wakes and asks the core where it stands (a wake-up only says "look again"). No
// Python code runs in the waking thread and no lock is held while Python runs. Timers (a rate
// limiter's instant, a timeout) are the loop's own (call_at): no polling anywhere.
//
// Lifetime. An AsyncWait is shared (std::shared_ptr, the pybind11 holder): the coroutine holds it,
// and so does the notifier from a post until the drain. It keeps its limiter alive (`owner`)
// while it may sit in the limiter's queue. Destroying it leaves any queue and passes on a slot
// that was handed to it and never claimed, so even a coroutine that is dropped without running
// its cleanup loses nothing. Every AsyncWait and LoopNotifier is destroyed with the GIL held
// (their last references are dropped by Python code or by the drain).
#pragma once

#include <pybind11/pybind11.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <cstddef>
#include <optional>
#include <vector>

#include "omnilimit/clock.hpp"
#include "omnilimit/dual_bucket.hpp"
#include "omnilimit/gcra.hpp"
#include "omnilimit/schedule.hpp"
#include "omnilimit/semaphore.hpp"
#include "omnilimit/standby.hpp"
#include "omnilimit/waker.hpp"

namespace omnilimit::bindings {

namespace py = pybind11;

class AsyncWait;

// The waiters an event loop must look at again, and the eventfd that tells the loop so.
class LoopNotifier {
 public:
  LoopNotifier();  // throws OSError if no eventfd can be made
  ~LoopNotifier();
  LoopNotifier(const LoopNotifier&) = delete;
  LoopNotifier& operator=(const LoopNotifier&) = delete;

  int fd() const noexcept { return fd_; }
  // Any thread, any lock held: queue `w` for the loop and make the eventfd readable.
  void post(std::shared_ptr<AsyncWait> w) noexcept;
  // The loop's thread: the waiters posted since the last take(), each once.
  std::vector<std::shared_ptr<AsyncWait>> take();
  // The loop's thread, with the GIL (the loop's reader callback): take(), and resolve each
  // waiter's current future (with None) unless it is done already.
  void drain();
  // Drops what is pending and closes the eventfd (the loop is closing). Idempotent.
  void close();

  // The loop's timed waits: one heap of (instant, future) with one loop timer, armed through
  // `arm(at_ns)` (a Python callable set by the loop's state) whenever the earliest instant becomes
  // earlier than the one armed. A waiter costs a push (no TimerHandle, no Python comparison); a
  // future resolved otherwise is skipped when its instant comes, and the heap is compacted once it
  // holds more than twice what was live at the last compaction. The loop's thread, with the GIL.
  void set_arm(py::object arm) { arm_ = std::move(arm); }
  // Resolves `future` (with None) when the core's clock reaches `at_ns`, unless it is done by then.
  void wake_at(py::object future, Nanos at_ns);
  // The loop timer fired: resolves the futures whose instant came, and arms the next one.
  void expire();
  std::size_t timed_count() const noexcept { return timed_.size(); }

 private:
  struct Timed {
    Nanos at_ns;
    std::uint64_t sequence;  // first come first resolved among equal instants
    py::object future;
  };
  struct Later {
    bool operator()(const Timed& a, const Timed& b) const noexcept {
      return a.at_ns != b.at_ns ? a.at_ns > b.at_ns : a.sequence > b.sequence;
    }
  };
  void arm(Nanos at_ns);
  void compact();

  std::vector<Timed> timed_;  // a min-heap (Later); the GIL guards it
  std::uint64_t next_sequence_ = 0;
  Nanos armed_at_ = kForever;
  std::size_t compact_above_ = kMinCompact;
  static constexpr std::size_t kMinCompact = 1024;
  py::object arm_;

  int fd_ = -1;
  std::mutex mutex_;
  std::vector<std::shared_ptr<AsyncWait>> ready_;  // guarded by mutex_
};

// One coroutine's wait: for a semaphore slot, for a token-budget ticket, on a rate reservation
// (a timer, and rate changes), or standing by (its deadline, and changes of the limiter's
// prospects).
class AsyncWait final : public Waker, public std::enable_shared_from_this<AsyncWait> {
 public:
  explicit AsyncWait(std::shared_ptr<LoopNotifier> notifier, py::object first_future = py::none())
      : future(std::move(first_future)), notifier_(std::move(notifier)) {}
  ~AsyncWait();
  AsyncWait(const AsyncWait&) = delete;
  AsyncWait& operator=(const AsyncWait&) = delete;

  void wake() noexcept override;
  LoopNotifier& notifier() const noexcept { return *notifier_; }

  // Counts this waiter in a limiter's "waiting now" counter until stop_counting() (or its end).
  void count_waiting(std::atomic<std::int64_t>& counter) noexcept {
    if (counted_ != nullptr) return;
    counted_ = &counter;
    counter.fetch_add(1, std::memory_order_relaxed);
  }
  void stop_counting() noexcept {
    if (counted_ != nullptr) counted_->fetch_sub(1, std::memory_order_relaxed);
    counted_ = nullptr;
  }
  // Counts this waiter's rate reservation in a limiter's "booked" counter until end_booking().
  void count_booking(std::atomic<std::int64_t>& counter) noexcept {
    if (booked_ != nullptr) return;
    booked_ = &counter;
    counter.fetch_add(1, std::memory_order_relaxed);
  }
  void end_booking() noexcept {
    if (booked_ != nullptr) booked_->fetch_sub(1, std::memory_order_relaxed);
    booked_ = nullptr;
  }

  py::object future;  // what the drain resolves; set by the coroutine before each look
  py::object owner;   // the limiter, while this may be in its queue
  Nanos started_ns = 0;
  Nanos deadline_ns = kForever;

  // A semaphore slot.
  Semaphore* semaphore = nullptr;
  Semaphore::Waiter slot{this};
  bool slot_claimed = false;  // the coroutine took the slot handed to it (or gave it back)

  // A token-budget ticket.
  std::optional<DualBucket::Ticket> ticket;
  std::int64_t tokens = 0;

  // A rate reservation (a lone Gcra), followed through rate changes (woken by each as a listener
  // of the limiter's Schedule).
  Schedule* schedule = nullptr;
  Schedule::Listener listener{this};
  Gcra* bucket = nullptr;
  Reservation reservation;
  std::uint64_t epoch = 0;
  Nanos ready_ns = 0;
  bool guarded = false;  // the turn came and ready_ns is when the last second has room: lateness is fine

  // Standing by (a turn beyond the deadline, a pause): woken by every change of the limiter's
  // prospects as a listener of its Standby.
  Standby* standby = nullptr;
  Standby::Listener standby_listener{this};

 private:
  std::shared_ptr<LoopNotifier> notifier_;
  std::atomic<std::int64_t>* counted_ = nullptr;  // in `owner`, which outlives this
  std::atomic<std::int64_t>* booked_ = nullptr;   // likewise
};

// A coroutine's handle on its AsyncWait: a capsule owning it (a plain capsule rather than a bound
// object: a handle is made on every wait, and a pybind11 instance costs several times what the
// rest of the wait does). Dropping the handle destroys the AsyncWait, which leaves any queue and
// gives back what it held. wait_handle: a new reference, or nullptr with an error set.
PyObject* wait_handle(std::shared_ptr<AsyncWait> w);
// The AsyncWait of a handle; nullptr with TypeError set when `handle` is not one.
AsyncWait* handle_wait(PyObject* handle);

// Resolves `future` (an asyncio future) with None unless it is done. With the GIL; throws
// error_already_set if the future's methods raise.
void resolve_future(const py::object& future);

// Registers LoopNotifier and AsyncWait in the module.
void register_async(py::module_& m);

}  // namespace omnilimit::bindings
