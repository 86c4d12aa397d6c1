// Semaphore: a counting semaphore with a lock-free fast path and first-come-first-served waiting.
//
// State. One std::atomic<uint64_t> packs everything a fast-path caller needs to decide alone:
//
//     bits  0..31  held     slots currently held
//     bits 32..62  waiting  callers queued for a slot
//     bit  63      closed
//
// Fast path. acquire takes a slot with one compare-and-swap when held < max and nobody waits;
// release gives one back with one compare-and-swap when nobody waits. Neither touches the mutex.
//
// Slow path. Everything else happens under `mutex_`: queueing (an intrusive FIFO list of Waiter
// nodes that live on the waiting callers' stacks, each with its own condition variable, so a
// release wakes exactly one thread), hand-over, timeouts, close(). A release that finds waiters
// does not free its slot: it hands it straight to the oldest waiter (held stays the same). So a
// newcomer can never barge past a queue, nobody starves, and while anyone waits held == max.
//
// No lost wake-up. A caller queues itself by one CAS that adds 1 to `waiting`, made under the
// mutex together with linking its node. A releaser decides between the fast path and the hand-over
// by a CAS on the same word. So the two are ordered: if the releaser's CAS came first, the
// queueing caller's CAS fails, it re-reads the word, sees the freed slot and takes it instead of
// queueing; if the queueing CAS came first, the releaser's fast-path CAS fails (the word changed),
// it sees waiting > 0 and takes the mutex, under which the node is already linked. A waiter only
// sleeps on its own condition variable while holding the mutex and re-checks its `granted` flag
// first, and grants are made (and notified) under the same mutex, so a notification cannot fall
// between the check and the sleep. A timed-out waiter re-checks `granted` under the mutex before
// unlinking itself: a slot handed over at the last moment is kept, never dropped or taken twice.
//
// Over-release. release() without a held slot is counted (over_release_count) and otherwise
// ignored: capacity never rises above max. (A stray release while every slot is held and others
// wait cannot be told from a real one; it shows up as an over-release when the count would go
// below zero.)
//
// Thread-safety: every public member is safe to call from any thread, except
// reinit_after_fork(), which runs in a freshly forked child before any other thread exists.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <new>
#include <stdexcept>

#include "omnilimit/clock.hpp"
#include "omnilimit/waker.hpp"

namespace omnilimit {

class Semaphore {
 public:
  static constexpr std::int64_t kMaxSlots = 0x7fffffff;

  // A caller's place in the queue; lives on the caller's stack for the duration of one wait (or,
  // for a coroutine, in an object that outlives its place in the queue). A waiter with a Waker is
  // woken through it instead of its condition variable; it learns the outcome from status().
  class Waiter {
   public:
    Waiter() = default;
    explicit Waiter(Waker* waker) : waker_(waker) {}
    Waiter(const Waiter&) = delete;
    Waiter& operator=(const Waiter&) = delete;

   private:
    friend class Semaphore;
    Waiter* prev_ = nullptr;
    Waiter* next_ = nullptr;
    bool queued_ = false;
    bool granted_ = false;
    bool closed_ = false;
    Waker* const waker_ = nullptr;
    std::condition_variable cv_;

    void notify() noexcept {
      if (waker_ != nullptr) waker_->wake(); else cv_.notify_one();
    }
  };

  enum class Enqueued { acquired, queued, closed };
  enum class WaitStatus { acquired, pending, closed };
  enum class Released { ok, over_release };

  explicit Semaphore(std::int64_t max_slots) : max_(check_max(max_slots)) {}
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  // Takes a slot if one is free and nobody is queued. Lock-free. Never waits.
  bool try_acquire_fast() noexcept {
    std::uint64_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
      if ((s >> kWaitingShift) != 0 || held(s) >= max_.load(std::memory_order_relaxed)) return false;
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acquire, std::memory_order_relaxed)) {
        return true;
      }
    }
  }

  // Takes a free slot, or links `w` at the back of the queue. Returns closed (and does
  // nothing) once close() has been called.
  Enqueued enqueue(Waiter& w) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::uint64_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
      if (s & kClosedBit) return Enqueued::closed;
      if (waiting(s) == 0 && held(s) < max_.load(std::memory_order_relaxed)) {
        if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acquire, std::memory_order_relaxed)) {
          return Enqueued::acquired;
        }
        continue;
      }
      if (state_.compare_exchange_weak(s, s + kOneWaiter, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        link_back(w);
        return Enqueued::queued;
      }
    }
  }

  // Sleeps until `w` is granted a slot, the semaphore is closed, or the steady clock reaches
  // `until_ns` (kForever: no limit). pending means `until_ns` passed and `w` is still queued;
  // the caller then either waits again (keeping its place) or calls cancel().
  WaitStatus wait(Waiter& w, Nanos until_ns) {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      if (w.granted_) return WaitStatus::acquired;
      if (w.closed_) return WaitStatus::closed;
      if (until_ns == kForever) {
        w.cv_.wait(lock);
      } else if (w.cv_.wait_until(lock, to_time_point(until_ns)) == std::cv_status::timeout) {
        if (w.granted_) return WaitStatus::acquired;
        if (w.closed_) return WaitStatus::closed;
        return WaitStatus::pending;
      }
    }
  }

  // Where `w` stands, without waiting: acquired (a slot was handed to it), closed, or pending
  // (still queued, or never queued).
  WaitStatus status(const Waiter& w) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (w.granted_) return WaitStatus::acquired;
    if (w.closed_) return WaitStatus::closed;
    return WaitStatus::pending;
  }

  // Leaves the queue. Returns true if a slot was handed to `w` before it could leave: the
  // caller then holds that slot (and must release it, or use it).
  bool cancel(Waiter& w) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (w.granted_) return true;
    if (w.queued_) {
      unlink(w);
      state_.fetch_sub(kOneWaiter, std::memory_order_acq_rel);
    }
    return false;
  }

  // Blocking acquire for C++ callers: true when a slot was taken, false at the deadline.
  // Throws std::runtime_error if the semaphore is closed.
  bool acquire_until(Nanos deadline_ns) {
    if (try_acquire_fast()) return true;
    Waiter w;
    switch (enqueue(w)) {
      case Enqueued::acquired: return true;
      case Enqueued::closed: throw std::runtime_error("semaphore closed");
      case Enqueued::queued: break;
    }
    switch (wait(w, deadline_ns)) {
      case WaitStatus::acquired: return true;
      case WaitStatus::closed: throw std::runtime_error("semaphore closed");
      case WaitStatus::pending: break;
    }
    return cancel(w);
  }

  // Frees a slot or hands it to the oldest waiter. Lock-free when nobody waits.
  Released release() {
    std::uint64_t s = state_.load(std::memory_order_relaxed);
    while ((s >> kWaitingShift) == 0) {  // nobody queued, not closed
      if (held(s) == 0) return count_over_release();
      if (state_.compare_exchange_weak(s, s - 1, std::memory_order_release, std::memory_order_relaxed)) {
        return Released::ok;
      }
    }
    std::lock_guard<std::mutex> lock(mutex_);
    s = state_.load(std::memory_order_relaxed);
    for (;;) {
      if (held(s) == 0) return count_over_release();
      if (head_ != nullptr && held(s) <= max_.load(std::memory_order_relaxed)) {
        // Hand the slot over: held stays, the oldest waiter leaves the queue holding it.
        Waiter* w = head_;
        unlink(*w);
        w->granted_ = true;
        state_.fetch_sub(kOneWaiter, std::memory_order_acq_rel);
        w->notify();  // under the mutex: the node cannot vanish before this call
        return Released::ok;
      }
      if (state_.compare_exchange_weak(s, s - 1, std::memory_order_release, std::memory_order_relaxed)) {
        return Released::ok;
      }
    }
  }

  // Changes the number of slots. More slots go at once to the oldest waiters; with fewer, the
  // holders beyond the new limit keep their slots and releases free slots (without handing them
  // over) until fewer than max are held. Returns the number of waiters granted a slot.
  // Thread-safe.
  std::int64_t set_max(std::int64_t max_slots) {
    check_max(max_slots);
    std::lock_guard<std::mutex> lock(mutex_);
    max_.store(max_slots, std::memory_order_relaxed);
    std::int64_t granted = 0;
    // Under the mutex no waiter can join or leave, and a releaser that sees waiters takes the
    // mutex too: held only falls meanwhile (fast releases need waiting == 0, so none happen).
    while (head_ != nullptr && held(state_.load(std::memory_order_relaxed)) < max_slots) {
      Waiter* w = head_;
      unlink(*w);
      w->granted_ = true;
      state_.fetch_add(1 - kOneWaiter, std::memory_order_acq_rel);  // held + 1, waiting - 1
      w->notify();
      ++granted;
    }
    return granted;
  }

  // Wakes every waiter with `closed`; later acquires fail. Holders may still release.
  void close() {
    std::lock_guard<std::mutex> lock(mutex_);
    state_.fetch_or(kClosedBit, std::memory_order_acq_rel);
    while (head_ != nullptr) {
      Waiter* w = head_;
      unlink(*w);
      w->closed_ = true;
      state_.fetch_sub(kOneWaiter, std::memory_order_acq_rel);
      w->notify();
    }
  }

  std::int64_t max_slots() const noexcept { return max_.load(std::memory_order_relaxed); }
  std::int64_t held() const noexcept { return held(state_.load(std::memory_order_relaxed)); }
  std::int64_t waiting() const noexcept { return waiting(state_.load(std::memory_order_relaxed)); }
  bool closed() const noexcept { return (state_.load(std::memory_order_relaxed) & kClosedBit) != 0; }
  std::int64_t over_release_count() const noexcept {
    return over_releases_.load(std::memory_order_relaxed);
  }

  // In the child of fork(): the parent's holders and waiters are threads the child does not have,
  // and the mutex may have been taken by one of them. The child starts with every slot free, no
  // queue and a fresh mutex (a slot the forking thread held and releases in the child counts as
  // an over-release). Call with no other thread running.
  void reinit_after_fork() noexcept {
    new (&mutex_) std::mutex();
    head_ = tail_ = nullptr;
    state_.store(state_.load(std::memory_order_relaxed) & kClosedBit, std::memory_order_relaxed);
  }

 private:
  static constexpr std::uint64_t kHeldMask = 0xffffffffULL;
  static constexpr int kWaitingShift = 32;
  static constexpr std::uint64_t kOneWaiter = 1ULL << kWaitingShift;
  static constexpr std::uint64_t kClosedBit = 1ULL << 63;

  static std::int64_t held(std::uint64_t s) noexcept { return static_cast<std::int64_t>(s & kHeldMask); }
  static std::int64_t waiting(std::uint64_t s) noexcept {
    return static_cast<std::int64_t>((s & ~kClosedBit) >> kWaitingShift);
  }
  static std::int64_t check_max(std::int64_t max_slots) {
    if (max_slots < 1 || max_slots > kMaxSlots) {
      throw std::invalid_argument("max_slots must be between 1 and 2147483647");
    }
    return max_slots;
  }

  Released count_over_release() noexcept {
    over_releases_.fetch_add(1, std::memory_order_relaxed);
    return Released::over_release;
  }

  // Queue operations: callers hold mutex_.
  void link_back(Waiter& w) noexcept {
    w.prev_ = tail_;
    w.next_ = nullptr;
    if (tail_ != nullptr) tail_->next_ = &w; else head_ = &w;
    tail_ = &w;
    w.queued_ = true;
  }
  void unlink(Waiter& w) noexcept {
    if (w.prev_ != nullptr) w.prev_->next_ = w.next_; else head_ = w.next_;
    if (w.next_ != nullptr) w.next_->prev_ = w.prev_; else tail_ = w.prev_;
    w.prev_ = w.next_ = nullptr;
    w.queued_ = false;
  }

  alignas(64) std::atomic<std::uint64_t> state_{0};
  std::atomic<std::int64_t> max_;
  alignas(64) std::atomic<std::int64_t> over_releases_{0};
  std::mutex mutex_;
  Waiter* head_ = nullptr;  // guarded by mutex_
  Waiter* tail_ = nullptr;  // guarded by mutex_
};

}  // namespace omnilimit
