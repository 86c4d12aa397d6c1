// Waker: how the core wakes a waiter that is not a sleeping thread.
//
// A thread that waits in the core sleeps on its own condition variable, and the core notifies it.
// A coroutine on an event loop cannot sleep there: it hands the core a Waker instead, and the core
// calls wake() where it would notify the condition variable (a slot handed over, the semaphore
// closed, a queue re-planned). wake() runs with the core's mutex held, possibly in a thread that
// does not hold Python's GIL: it must be quick, must not block and must not call back into the
// core; the bindings' waker posts the waiter to its event loop through an eventfd. A wake-up only
// says "look again": the waiter then asks the core what changed, so a spurious wake-up is harmless.
//
// WakerList: the wakers that one change wakes together (a Schedule's, a Standby's listeners).
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

// The wakers to wake together when something changes for all of them (the listeners of a
// Schedule, or of a Standby): an intrusive list of Entries, each linked while its coroutine waits.
// Not thread-safe by itself: its owner guards every call with its own mutex.
class WakerList {
 public:
  class Entry {
   public:
    explicit Entry(Waker* waker) : waker_(waker) {}
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;
    bool linked() const noexcept { return linked_; }

   private:
    friend class WakerList;
    Waker* const waker_;
    Entry* prev_ = nullptr;
    Entry* next_ = nullptr;
    bool linked_ = false;
  };

  // False (and nothing done) when `e` is linked already.
  bool link(Entry& e) noexcept {
    if (e.linked_) return false;
    e.prev_ = nullptr;
    e.next_ = head_;
    if (head_ != nullptr) head_->prev_ = &e;
    head_ = &e;
    e.linked_ = true;
    return true;
  }
  // False (and nothing done) when `e` is not linked.
  bool unlink(Entry& e) noexcept {
    if (!e.linked_) return false;
    if (e.prev_ != nullptr) e.prev_->next_ = e.next_; else head_ = e.next_;
    if (e.next_ != nullptr) e.next_->prev_ = e.prev_;
    e.prev_ = e.next_ = nullptr;
    e.linked_ = false;
    return true;
  }
  void wake_all() const noexcept {
    for (Entry* e = head_; e != nullptr; e = e->next_) e->waker_->wake();
  }
  bool empty() const noexcept { return head_ == nullptr; }
  // In the child of fork(): the entries belong to the parent's coroutines.
  void forget_all() noexcept { head_ = nullptr; }

 private:
  Entry* head_ = nullptr;
};

}  // namespace omnilimit
