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
// Shared between processes (a bucket in a shared-memory segment). The sequence number and the
// changes live in the segment too (ScheduleWords), so a rate changed by any process moves the
// sleepers of every process: a change is made under a lock word that names its process (taken
// over if that process died mid-change), each change's record is published like a seqlock (its
// sequence written last), and a bell (a Standby's words: a futex) rings after each change. The
// threads of every process sleep on the bell instead of the condition variable, and coroutines
// listen to it (a watcher thread of their process wakes them). A booking checks the shared
// sequence, so a change made in another process while it booked makes it book again, as here.
//
// Thread-safety: every member is safe from any thread. Sleepers hold the mutex only while
// checking; nobody sleeps holding it.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <memory>
#include <new>
#include <optional>
#include <thread>

#include "omnilimit/clock.hpp"
#include "omnilimit/gcra.hpp"
#include "omnilimit/process.hpp"
#include "omnilimit/standby.hpp"
#include "omnilimit/waker.hpp"

namespace omnilimit {

// The words of one Schedule: members of an in-process limiter's state, or in a shared segment.
struct ScheduleWords {
  static constexpr std::uint64_t kKept = 16;
  struct Change {  // one change, published by its sequence number (written last; 0 while written)
    std::atomic<std::uint64_t> sequence{0};
    std::atomic<Nanos> at_ns{0};
    std::atomic<Nanos> old_interval{1};
    std::atomic<Nanos> new_interval{1};
  };
  std::atomic<std::uint64_t> sequence{0};  // even; odd while a change is under way
  std::atomic<std::int64_t> writer{0};     // shared: the ProcessWord of the process changing (0: none)
  Change changes[kKept];
  StandbyWords bell;  // shared: rung after every change (and by close(), for this process's sleepers)
};

class Schedule {
 public:
  enum class Woke { ready, deadline, lost, closed };

  // In one process (words of its own).
  Schedule() : w_(&own_) {}
  // Over `words` (a limiter's state); `shared`: they live in a segment other processes map.
  Schedule(ScheduleWords& words, bool shared) : w_(&words) {
    if (shared) bell_ = std::make_unique<Standby>(words.bell, true);
  }
  Schedule(const Schedule&) = delete;
  Schedule& operator=(const Schedule&) = delete;

  // A sleeper that does not sleep here (a coroutine on its loop's timer) but wants to hear of
  // changes: linked while it sleeps, woken through its Waker by every change, after which it
  // moves its instant with follow().
  using Listener = WakerList::Entry;

  void listen(Listener& l) {
    if (bell_) {
      bell_->listen(l);
      return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    listeners_.link(l);
  }
  void stop_listening(Listener& l) {
    if (bell_) {
      bell_->stop_listening(l);
      return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    listeners_.unlink(l);
  }

  // The schedule a booking made now belongs to: an even sequence number (waits out a change
  // under way). Read it before booking and check stable() after.
  std::uint64_t epoch() const noexcept {
    for (std::uint32_t spins = 0;; ++spins) {
      const std::uint64_t seq = w_->sequence.load(std::memory_order_acquire);
      if ((seq & 1) == 0) return seq;
      if (bell_ && (spins & 0xffffU) == 0xffffU) recover_writer();  // its process may have died mid-change
      std::this_thread::yield();
    }
  }
  // True when no change began since epoch() returned `epoch`.
  bool stable(std::uint64_t epoch) const noexcept { return w_->sequence.load(std::memory_order_acquire) == epoch; }

  // Sleeps until `ready_ns` (moved by rate changes since `epoch`; both are updated), or until
  // `until_ns`, whichever comes first, or until close().
  Woke wait(Nanos& ready_ns, std::uint64_t& epoch, Nanos until_ns) {
    if (bell_) return wait_on_bell(ready_ns, epoch, until_ns);
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      if (closed_.load()) return Woke::closed;
      if (epoch != w_->sequence.load(std::memory_order_relaxed) && !catch_up(ready_ns, epoch)) return Woke::lost;
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
    return epoch == w_->sequence.load(std::memory_order_acquire) || catch_up(ready_ns, epoch);
  }

  // Runs `apply()`, which sets the interval to `new_interval` at `at_ns` (Gcra::set_interval)
  // and returns the interval it replaced, and wakes every sleeper to move its instant the same way.
  template <class Apply>
  void change(Nanos at_ns, Nanos new_interval, Apply&& apply) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      std::optional<WriterLock> writer;
      if (bell_) writer.emplace(*w_);  // other processes change the same words
      const std::uint64_t seq = w_->sequence.load(std::memory_order_relaxed);
      w_->sequence.store(seq + 1, std::memory_order_seq_cst);  // odd: bookings made now are suspect
      const Nanos old_interval = apply();
      const std::uint64_t next = seq + 2;
      ScheduleWords::Change& c = w_->changes[(next / 2) % ScheduleWords::kKept];
      // A seqlock of sequentially consistent atomics: a reader that sees `next` before and after
      // reading the fields read this change's.
      c.sequence.store(0);  // being written
      c.at_ns.store(at_ns);
      c.old_interval.store(old_interval);
      c.new_interval.store(new_interval);
      c.sequence.store(next);
      w_->sequence.store(next, std::memory_order_seq_cst);
      listeners_.wake_all();
    }
    cv_.notify_all();
    if (bell_) bell_->notify();  // every process's sleepers and listeners
  }

  // Wakes every sleeper (wait() answers `closed`) and listener of this process, for good.
  void close() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_.store(true);
      listeners_.wake_all();
    }
    cv_.notify_all();
    if (bell_) bell_->notify();  // (the other processes' sleepers look again, and sleep on)
  }

  // In the child of fork(): nobody sleeps there, and the mutex may have been held.
  void reinit_after_fork() noexcept {
    new (&mutex_) std::mutex();
    new (&cv_) std::condition_variable();
    listeners_.forget_all();
    if (bell_) bell_->reinit_after_fork(true);
  }

  static Nanos map(Nanos ready_ns, Nanos at_ns, Nanos old_interval, Nanos new_interval) noexcept {
    if (ready_ns <= at_ns || ready_ns == kForever) return ready_ns;
    const Wide scaled = (static_cast<Wide>(ready_ns - at_ns) * new_interval + old_interval - 1) / old_interval;
    return clamp_to_nanos(static_cast<Wide>(at_ns) + scaled);  // rounded up, as Gcra rescales TAT
  }

 private:
  static constexpr std::uint64_t kKept = ScheduleWords::kKept;

  // The writers' lock of shared words (an OwnerLock): a change half done by a process that died
  // is ended (its record was never published, so a sleeper that needs it books again).
  static void end_dead_change(ScheduleWords& w) {
    if (w.sequence.load() & 1U) w.sequence.fetch_add(1);
  }
  class WriterLock : public OwnerLock {
   public:
    explicit WriterLock(ScheduleWords& w) : OwnerLock(w.writer, [&w] { end_dead_change(w); }) {}
  };
  // A reader stuck on an odd sequence: ends the change of a writer whose process died.
  void recover_writer() const noexcept { OwnerLock::recover(w_->writer, [this] { end_dead_change(*w_); }); }

  // Shared: a thread sleeps on the bell (rung by every change, in any process, and by close()).
  Woke wait_on_bell(Nanos& ready_ns, std::uint64_t& epoch, Nanos until_ns) {
    Standby::Watch watch(*bell_);
    for (;;) {
      const std::uint32_t seen = watch.generation();  // before the look: a change after it rings
      if (closed_.load()) return Woke::closed;
      if (epoch != (w_->sequence.load(std::memory_order_acquire) & ~std::uint64_t{1})) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!catch_up(ready_ns, epoch)) return Woke::lost;
      }
      const Nanos now = now_ns();
      if (now >= ready_ns) return Woke::ready;
      if (now >= until_ns) return Woke::deadline;
      watch.wait(seen, std::min(ready_ns, until_ns));
    }
  }

  // Applies the changes published after `epoch` to `ready_ns` (one under way in another process
  // is not yet: its bell comes); false when some were already overwritten.
  bool catch_up(Nanos& ready_ns, std::uint64_t& epoch) {
    const std::uint64_t current = w_->sequence.load(std::memory_order_acquire) & ~std::uint64_t{1};
    if (current < epoch || (current - epoch) / 2 > kKept) return false;
    for (std::uint64_t seq = epoch + 2; seq <= current; seq += 2) {
      const ScheduleWords::Change& c = w_->changes[(seq / 2) % kKept];
      const std::uint64_t before = c.sequence.load();
      const Nanos at = c.at_ns.load();
      const Nanos old_interval = c.old_interval.load();
      const Nanos new_interval = c.new_interval.load();
      if (before != seq || c.sequence.load() != seq) return false;
      ready_ns = map(ready_ns, at, old_interval, new_interval);
    }
    epoch = current;
    return true;
  }

  ScheduleWords own_;  // the words of an in-process schedule (unused over given words)
  ScheduleWords* w_;
  std::unique_ptr<Standby> bell_;  // set when the words are shared
  std::mutex mutex_;
  std::condition_variable cv_;
  WakerList listeners_;            // guarded by mutex_ (in one process; shared: the bell's)
  std::atomic<bool> closed_{false};
};

}  // namespace omnilimit
