// RobustLock: a process-shared, robust pthread mutex in a shared-memory segment, taken with a
// deadline of the caller's choosing.
//
// A peer may stop while it holds the mutex (SIGSTOP: a debugger, `docker pause`, the cgroup
// freezer) and resume minutes later; robust mutexes help only when the holder dies. So nothing
// waits for the mutex without a deadline: a RobustLock says until when (kTryLock: one try; an
// instant; kForever) and is false when it could not have the mutex by then. A holder that died
// inside (EOWNERDEAD) leaves state that the next owner must make whole: the RobustLock calls
// `recover` before marking the mutex consistent.
//
// While a lock is waited for, the bindings may let other threads run (Python's GIL): a process
// sets blocking hooks once (set_blocking_hooks), called around every wait that does not succeed at
// the first try.
#pragma once

#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "omnilimit/clock.hpp"

namespace omnilimit {

// Builds a process-shared, robust mutex in place (in a segment's payload, by its creator).
inline void init_robust_mutex(pthread_mutex_t& mutex) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  const int err = pthread_mutex_init(&mutex, &attr);
  pthread_mutexattr_destroy(&attr);
  if (err != 0) throw std::system_error(err, std::generic_category(), "cannot set up a process-shared mutex");
}

// What to call around a wait for a lock held by someone else (the bindings release the GIL):
// `before` returns a token that `after` is given back.
struct BlockingHooks {
  void* (*before)() = nullptr;
  void (*after)(void*) = nullptr;
};
inline BlockingHooks& blocking_hooks() noexcept {
  static BlockingHooks hooks;
  return hooks;
}
inline void set_blocking_hooks(void* (*before)(), void (*after)(void*)) noexcept {
  blocking_hooks() = BlockingHooks{before, after};
}

class RobustLock {
 public:
  static constexpr Nanos kTryLock = 0;

  template <class Recover>
  RobustLock(pthread_mutex_t& mutex, Nanos until_ns, Recover&& recover) : mutex_(mutex) {
    int err = pthread_mutex_trylock(&mutex_);
    if (err == EBUSY && until_ns != kTryLock) {
      const BlockingHooks hooks = blocking_hooks();
      void* token = hooks.before != nullptr ? hooks.before() : nullptr;
      err = until_ns == kForever ? pthread_mutex_lock(&mutex_) : lock_until(mutex_, until_ns);
      if (hooks.after != nullptr) hooks.after(token);
    }
    if (err == EOWNERDEAD) {
      recover();
      pthread_mutex_consistent(&mutex_);
      err = 0;
    }
    if (err == 0) {
      owned_ = true;
    } else if (err != EBUSY && err != ETIMEDOUT) {
      throw std::system_error(err, std::generic_category(), "a shared limiter's mutex");
    }
  }
  ~RobustLock() {
    if (owned_) pthread_mutex_unlock(&mutex_);
  }
  RobustLock(const RobustLock&) = delete;
  RobustLock& operator=(const RobustLock&) = delete;
  explicit operator bool() const noexcept { return owned_; }

  // Lets the mutex go early (a waiter about to sleep); the destructor then does nothing.
  void unlock() noexcept {
    if (owned_) pthread_mutex_unlock(&mutex_);
    owned_ = false;
  }

 private:
  // pthread_mutex_clocklock waits on the steady clock; ThreadSanitizer does not know it (it would
  // report the unlock as one of an unlocked mutex), so its builds use pthread_mutex_timedlock,
  // whose deadline is on the wall clock (a clock step moves it).
  static int lock_until(pthread_mutex_t& mutex, Nanos until_ns) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30)) && !defined(__SANITIZE_THREAD__)
    const timespec at{static_cast<time_t>(until_ns / kNanosPerSecond), static_cast<long>(until_ns % kNanosPerSecond)};
    return pthread_mutex_clocklock(&mutex, CLOCK_MONOTONIC, &at);
#else  // pthread_mutex_timedlock counts on CLOCK_REALTIME
    timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    const Nanos left = std::max<Nanos>(0, until_ns - now_ns());
    const Nanos at_ns = static_cast<Nanos>(wall.tv_sec) * kNanosPerSecond + wall.tv_nsec + left;
    const timespec at{static_cast<time_t>(at_ns / kNanosPerSecond), static_cast<long>(at_ns % kNanosPerSecond)};
    return pthread_mutex_timedlock(&mutex, &at);
#endif
  }

  pthread_mutex_t& mutex_;
  bool owned_ = false;
};

}  // namespace omnilimit
