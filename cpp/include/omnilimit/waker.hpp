// Waker: how the core wakes a waiter that is not a sleeping thread.
//
// A thread that waits in the core sleeps on its own condition variable, and the core notifies it.
// A coroutine on an event loop cannot sleep there: it hands the core a Waker instead, and the core
// calls wake() where it would notify the condition variable (a slot handed over, the semaphore
// closed, a queue re-planned). wake() runs with the core's mutex held, possibly in a thread that
// does not hold Python's GIL: it must be quick, must not block and must not call back into the
// core; the bindings' waker posts the waiter to its event loop through an eventfd. A wake-up only
// says "look again": the waiter then asks the core what changed, so a spurious wake-up is harmless.
#pragma once

namespace omnilimit {

class Waker {
 public:
  virtual void wake() noexcept = 0;

 protected:
  Waker() = default;
  ~Waker() = default;
  Waker(const Waker&) = default;
  Waker& operator=(const Waker&) = default;
};

}  // namespace omnilimit
