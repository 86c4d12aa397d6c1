// Standby: where a caller waits whose turn lies beyond its deadline, until something changes.
//
// Why callers stand by. acquire(timeout=t) promises False only once t has passed. A rate
// limiter's caller whose turn is more than t away must not book that turn (capacity would be
// held for someone who gives up at t), and must not answer False at once either: programs that
// ignore the answer would then call the provider in a tight loop, and retry loops would spin. So
// it stands by: it books nothing and sleeps until its deadline, unless something happens that may
// bring its turn within reach (a reservation given back, a faster rate, a larger burst, tokens
// settled, the limiter closed). Whoever makes such a change calls notify(); every caller standing
// by then wakes and looks again. Time passing alone never brings a turn closer (a GCRA's
// theoretical arrival time only moves with bookings and changes), so nobody needs to poll.
//
// How. A generation counter, bumped by notify(), and a count of sleepers, both 32-bit atomics
// that may live in a shared-memory segment (a rate limiter shared between processes: a change
// made by one process wakes the callers standing by in all of them). Threads sleep on the
// generation with a futex (a private one for an in-process limiter); coroutines register a
// Listener instead, woken through their Waker. A futex cannot wake an event loop, so for shared
// words a watcher thread (one per Standby, alive while coroutines stand by) sleeps on the futex in
// their place and wakes the listeners when another process (or another Standby over the same
// words) moves the generation.
//
// No lost wake-up. A sleeper registers (sleepers += 1), then reads the generation, then looks at
// the limiter, then sleeps while the generation is unchanged. notify() follows a change: it bumps
// the generation, then reads the count of sleepers and wakes them if there are any. All four are
// sequentially consistent, so either notify() sees the sleeper (and wakes it: a futex wait on a
// generation that already moved returns at once), or the sleeper's read of the generation comes
// after the bump, and so after the change, which its look then sees. A Listener is registered the
// same way (a count, then the list under a mutex) before its coroutine looks.
//
// Cost. Nothing on any admission path: a caller registers only once it has to stand by, and
// notify() is called on rare events. notify() with nobody standing by is one atomic increment and
// two loads.
//
// Thread-safety: every member is safe from any thread, and a Watch's members from its own
// thread. The watcher ends at the first change after the last coroutine stopped listening, or
// when the Standby is destroyed. A process that dies standing by leaves the shared sleeper count too high, which only
// costs a futex wake on later notifications.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <ctime>
#include <mutex>
#include <new>
#include <thread>

#include "omnilimit/clock.hpp"
#include "omnilimit/waker.hpp"

namespace omnilimit {

// The words of one Standby: members of an in-process limiter, or in a shared-memory segment.
struct StandbyWords {
  std::atomic<std::uint32_t> generation{0};
  std::atomic<std::uint32_t> sleepers{0};
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "a futex word must be a lock-free 32-bit atomic");

class Standby {
 public:
  // A coroutine standing by: linked while it does, woken through its Waker by every notify().
  using Listener = WakerList::Entry;

  // `shared`: the words live in memory that other processes map (futexes then go through the
  // kernel's shared keys).
  Standby(StandbyWords& words, bool shared) noexcept
      : w_(words), shared_(shared), futex_flags_(shared ? 0 : FUTEX_PRIVATE_FLAG) {}
  ~Standby() { stop_watcher(); }
  Standby(const Standby&) = delete;
  Standby& operator=(const Standby&) = delete;

  // One thread's stand-by: registered for as long as it lives. Read generation() before each look
  // at the limiter, then wait() with what it returned.
  class Watch {
   public:
    explicit Watch(Standby& standby) noexcept : s_(standby) { s_.w_.sleepers.fetch_add(1); }
    ~Watch() { s_.w_.sleepers.fetch_sub(1); }
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;

    std::uint32_t generation() const noexcept { return s_.w_.generation.load(); }

    // Sleeps until the generation is no longer `seen` (true) or the steady clock reaches
    // `until_ns` (false). Spurious returns are possible only as `true` with nothing changed
    // beyond a notify() meant for someone else: the caller looks again either way.
    bool wait(std::uint32_t seen, Nanos until_ns) const noexcept {
      for (;;) {
        if (s_.w_.generation.load() != seen) return true;
        const Nanos now = now_ns();
        if (now >= until_ns) return false;
        const Nanos left = until_ns - now;
        timespec ts{static_cast<time_t>(left / kNanosPerSecond), static_cast<long>(left % kNanosPerSecond)};
        syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&s_.w_.generation), FUTEX_WAIT | s_.futex_flags_, seen,
                &ts, nullptr, 0);
      }
    }

   private:
    Standby& s_;
  };

  // The generation now (a waiter that reads it before looking, and waits with a Watch on what it
  // read, misses no notify() made after the read).
  std::uint32_t generation() const noexcept { return w_.generation.load(); }

  // After a change that may bring someone's turn closer: wakes every thread and coroutine
  // standing by (in every process sharing the words). Never blocks on anything but this object's
  // own listener mutex, and only when coroutines stand by.
  void notify() noexcept {
    w_.generation.fetch_add(1);
    if (w_.sleepers.load() != 0) wake_sleepers();
    if (listening_.load() != 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_listeners();
    }
  }

  // A coroutine begins (listen) or ends (stop_listening) its stand-by. After listen() returns,
  // every notify() wakes it, or happened early enough for its next look to see the change.
  void listen(Listener& l) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!listeners_.link(l)) return;
    listening_.fetch_add(1);
    if (shared_ && !watching_) start_watcher();
    (void)w_.generation.load();  // orders the registration before the look that follows
  }
  void stop_listening(Listener& l) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (listeners_.unlink(l)) listening_.fetch_sub(1);
    // The watcher ends once nobody listens: it looks at the list whenever the futex wakes it.
  }

  // In the child of fork(): the listener mutex may have been held, and the coroutines standing
  // by belong to the parent. The words are left alone (a shared segment's belong to everyone; an
  // in-process limiter's sleeper count goes back to zero, since no thread of the child sleeps).
  void reinit_after_fork(bool shared) noexcept {
    new (&mutex_) std::mutex();
    listeners_.forget_all();
    listening_.store(0);
    if (!shared) w_.sleepers.store(0);
    // The parent's watcher is not the child's: forget its handle (joining it would wait forever).
    if (watching_ || watcher_.joinable()) new (&watcher_) std::thread();
    if (watching_) w_.sleepers.fetch_sub(1);  // it was counted among the sleepers of the words
    watching_ = false;
    stopping_ = false;
  }

 private:
  void wake_sleepers() noexcept {
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w_.generation), FUTEX_WAKE | futex_flags_, INT_MAX, nullptr,
            nullptr, 0);
  }
  void wake_listeners() noexcept { listeners_.wake_all(); }  // with mutex_ held

  // The watcher (shared words, with coroutines listening): a thread that sleeps on the futex as a
  // sleeper would and wakes the listeners when the generation moves. Started with mutex_ held.
  void start_watcher() {
    if (watcher_.joinable()) watcher_.join();  // one that ended by itself: reap it (it holds no lock)
    watching_ = true;
    w_.sleepers.fetch_add(1);
    const std::uint32_t first = w_.generation.load();
    watcher_ = std::thread([this, first] {
      std::uint32_t seen = first;
      for (;;) {
        syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w_.generation), FUTEX_WAIT | futex_flags_, seen, nullptr,
                nullptr, 0);
        const std::uint32_t now = w_.generation.load();
        std::lock_guard<std::mutex> lock(mutex_);
        if (now != seen) {
          seen = now;
          wake_listeners();
        }
        if (stopping_ || listeners_.empty()) {
          watching_ = false;
          w_.sleepers.fetch_sub(1);
          return;
        }
      }
    });
  }
  // Ends the watcher (the object goes away). The futex wake reaches every sleeper of the words,
  // which only look again.
  void stop_watcher() noexcept {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    if (watcher_.joinable()) {
      while (watching_running()) {
        wake_sleepers();
        std::this_thread::yield();
      }
      watcher_.join();
    }
  }
  bool watching_running() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    return watching_;
  }

  StandbyWords& w_;
  const bool shared_;
  const int futex_flags_;
  std::mutex mutex_;
  std::atomic<std::int64_t> listening_{0};
  WakerList listeners_;            // guarded by mutex_
  bool watching_ = false;          // a watcher thread runs; guarded by mutex_
  bool stopping_ = false;          // guarded by mutex_
  std::thread watcher_;            // started and reaped under mutex_ (joined without it, at the end)
};

}  // namespace omnilimit
