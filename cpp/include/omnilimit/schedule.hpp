// Schedule: where the sleepers of a token bucket wait, so that a rate change reschedules them.
//
// A GCRA waiter holds a reservation for an instant and sleeps until it. When the rate changes,
// Gcra::set_interval(T', c) rescales the bucket's debt: every instant r after c becomes
// c + ceil((r - c) * T' / T). The sleepers' instants must move the same way, or a faster rate
// would leave them asleep while later arrivals (booked at the new pace) overtake them, and a
// slower one would wake them too early. So sleepers wait here, on one condition variable with a
// deadline, and remember the epoch of the schedule their instant belongs to. rescale() records
// (c, T, T') under the mutex, bumps the epoch and wakes every sleeper; each one maps its instant
// through the changes it missed, in order, and goes back to sleep until the new instant (or goes
// at once if that has passed: "a waiter admitted sooner by a higher rate wakes at once").
//
// Booking against a change. A caller books (lock-free, in the Gcra) between two reads of the
// schedule's sequence number, which is odd while a change is under way: if the two differ, a
// change overlapped the booking and the instant may be at either pace; the caller books again
// (the first slot is spent: rare, and conservative).
//
// Only the last kKept changes are kept. A sleeper that slept through more (kKept changes during
// one wait) cannot map its instant and is told so (lost); the caller then books again, and its
// old slot is simply spent (the limiter errs on the side of admitting less).
//
// Closing. close() wakes every sleeper and listener; wait() then answers `closed`, and the caller
// gives its reservation back (if it still can) and leaves.
//
// Thread-safety: every member is safe from any thread. Sleepers hold the mutex only while
// checking; nobody sleeps holding it.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <new>
#include <thread>

#include "omnilimit/clock.hpp"
#include "omnilimit/gcra.hpp"
#include "omnilimit/waker.hpp"

namespace omnilimit {

class Schedule {
 public:
  enum class Woke { ready, deadline, lost, closed };

  // A sleeper that does not sleep here (a coroutine on its loop's timer) but wants to hear of
  // changes: linked while it sleeps, woken through its Waker by every change, after which it
  // moves its instant with follow().
  using Listener = WakerList::Entry;

  void listen(Listener& l) {
    std::lock_guard<std::mutex> lock(mutex_);
    listeners_.link(l);
  }
  void stop_listening(Listener& l) {
    std::lock_guard<std::mutex> lock(mutex_);
    listeners_.unlink(l);
  }

  // The schedule a booking made now belongs to: an even sequence number (waits out a change
  // under way). Read it before booking and check stable() after.
  std::uint64_t epoch() const noexcept {
    for (;;) {
      const std::uint64_t seq = sequence_.load(std::memory_order_acquire);
      if ((seq & 1) == 0) return seq;
      std::this_thread::yield();
    }
  }
  // True when no change began since epoch() returned `epoch`.
  bool stable(std::uint64_t epoch) const noexcept { return sequence_.load(std::memory_order_acquire) == epoch; }

  // Sleeps until `ready_ns` (moved by rate changes since `epoch`; both are updated), or until
  // `until_ns`, whichever comes first, or until close().
  Woke wait(Nanos& ready_ns, std::uint64_t& epoch, Nanos until_ns) {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      if (closed_) return Woke::closed;
      if (epoch != sequence_.load(std::memory_order_relaxed) && !catch_up(ready_ns, epoch)) return Woke::lost;
      const Nanos now = now_ns();
      if (now >= ready_ns) return Woke::ready;
      if (now >= until_ns) return Woke::deadline;
      cv_.wait_until(lock, to_time_point(std::min(ready_ns, until_ns)));
    }
  }

  // For a sleeper that does not sleep here (a coroutine on a timer, woken by changes as a
  // Listener): moves `ready_ns` through the changes made since `epoch` (both are updated). False
  // when it missed too many (book again).
  bool follow(Nanos& ready_ns, std::uint64_t& epoch) {
    std::lock_guard<std::mutex> lock(mutex_);
    return epoch == sequence_.load(std::memory_order_relaxed) || catch_up(ready_ns, epoch);
  }

  // Runs `apply()`, which sets the interval to `new_interval` at `at_ns` (Gcra::set_interval)
  // and returns the interval it replaced, and wakes every sleeper to move its instant the same way.
  template <class Apply>
  void change(Nanos at_ns, Nanos new_interval, Apply&& apply) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const std::uint64_t seq = sequence_.load(std::memory_order_relaxed);
      sequence_.store(seq + 1, std::memory_order_seq_cst);  // odd: bookings made now are suspect
      const Nanos old_interval = apply();
      const std::uint64_t next = seq + 2;
      changes_[(next / 2) % kKept] = Change{next, at_ns, old_interval, new_interval};
      sequence_.store(next, std::memory_order_seq_cst);
      listeners_.wake_all();
    }
    cv_.notify_all();
  }

  // Wakes every sleeper (wait() answers `closed`) and listener, for good.
  void close() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_ = true;
      listeners_.wake_all();
    }
    cv_.notify_all();
  }

  // In the child of fork(): nobody sleeps there, and the mutex may have been held.
  void reinit_after_fork() noexcept {
    new (&mutex_) std::mutex();
    new (&cv_) std::condition_variable();
    listeners_.forget_all();
  }

  static Nanos map(Nanos ready_ns, Nanos at_ns, Nanos old_interval, Nanos new_interval) noexcept {
    if (ready_ns <= at_ns || ready_ns == kForever) return ready_ns;
    const Wide scaled = (static_cast<Wide>(ready_ns - at_ns) * new_interval + old_interval - 1) / old_interval;
    return clamp_to_nanos(static_cast<Wide>(at_ns) + scaled);  // rounded up, as Gcra rescales TAT
  }

 private:
  static constexpr std::uint64_t kKept = 16;
  struct Change {
    std::uint64_t sequence = 0;
    Nanos at_ns = 0;
    Nanos old_interval = 1;
    Nanos new_interval = 1;
  };

  // Applies the changes after `epoch` to `ready_ns`; false when some were already overwritten.
  // Called with the mutex held, so no change is half done.
  bool catch_up(Nanos& ready_ns, std::uint64_t& epoch) {
    const std::uint64_t current = sequence_.load(std::memory_order_relaxed);
    if ((current - epoch) / 2 > kKept) return false;
    for (std::uint64_t seq = epoch + 2; seq <= current; seq += 2) {
      const Change& c = changes_[(seq / 2) % kKept];
      if (c.sequence != seq) return false;
      ready_ns = map(ready_ns, c.at_ns, c.old_interval, c.new_interval);
    }
    epoch = current;
    return true;
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::atomic<std::uint64_t> sequence_{0};  // even; odd while a change is under way
  WakerList listeners_;                       // guarded by mutex_
  bool closed_ = false;                       // guarded by mutex_
  Change changes_[kKept];                     // guarded by mutex_
};

}  // namespace omnilimit
