// DualBucket: a request budget and a token budget, taken together, by callers in a queue.
//
// LLM providers limit requests per minute and tokens per minute. A call that will use about N
// tokens must take one request and N tokens at the same instant, or neither: taking the request
// and then waiting for tokens would hold a request slot nobody uses, and taking tokens first the
// reverse. The two budgets are two Gcra buckets under one mutex (held for well under a µs, never
// while sleeping); committing two atomic words together cannot be done with one CAS. Limiters
// without a token budget keep using a lone Gcra, lock-free.
//
// Why a queue, when a lone Gcra lets each waiter commit its future instant at once. A token
// budget's schedule keeps changing under the waiters: a finished call settles what it really
// used (giving tokens back, or charging more), a provider's headers cap the budget, the limits
// themselves change. An instant committed in advance cannot follow: tokens given back would
// serve only the callers arriving after, and a new rate would leave the sleepers on the old
// pace. So here nothing is committed before its time. Callers that must wait take a Ticket at
// the back of a FIFO queue; only the head sleeps on a deadline, until the instant at which both
// buckets allow it, and commits itself when that comes (then wakes the next). Every change
// re-plans the queue, wakes the head to recompute its instant, and refuses at once the callers
// whose planned instant no longer fits their deadline. Arrival order is kept across both budgets.
//
// Planning. A newcomer learns at once whether its turn fits its deadline: the bucket states after
// every queued caller has taken its share (each at its planned instant, from a copy, GcraState)
// give its instant; when it does not fit, nothing is queued. A caller's claim counts from its
// reference instant: its arrival, or the instant the callers ahead of it go, whichever is later.
//
// Debt. A call larger than the token burst is not refused: it goes into debt and waits in
// proportion ((N - burst) intervals from a full bucket), never forever.
//
// Settling. After the call, the caller knows what it really used: settle() charges the
// difference (the next callers wait for it) or gives it back (never beyond a full bucket), and
// the queue is re-planned, so tokens given back serve the callers already waiting.
//
// Thread-safety: every member is safe from any thread. A Ticket belongs to one thread: only that
// thread calls wait() and leave() with it.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <new>
#include <stdexcept>

#include "omnilimit/clock.hpp"
#include "omnilimit/gcra.hpp"
#include "omnilimit/waker.hpp"

namespace omnilimit {

class DualBucket {
 public:
  static constexpr Nanos kLateToleranceNs = 5'000'000;

  enum class Status {
    admitted,  // the request and its tokens are taken
    queued,    // still waiting in the queue
    refused,   // its turn would not come before its deadline: it holds nothing, is in no queue
  };

  // One caller's claim: a request and `tokens` tokens (>= 0), wanted by `deadline_ns` (kForever:
  // whenever). Lives on the caller's stack (or in a coroutine's waiter); leaves the queue when
  // destroyed. A ticket with a Waker is woken through it, and looks again with poll().
  class Ticket {
   public:
    Ticket(DualBucket& bucket, std::int64_t tokens, Nanos deadline_ns, Waker* waker = nullptr)
        : bucket_(bucket), tokens_(tokens), deadline_ns_(deadline_ns), waker_(waker) {
      if (tokens < 0) throw std::invalid_argument("tokens must be >= 0");
    }
    ~Ticket() {
      if (owner_queued_) bucket_.leave(*this);
    }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;

    // When the caller is planned to go (valid once queued; the instant it went once admitted).
    Nanos planned_ns() const noexcept { return planned_ns_; }

   private:
    friend class DualBucket;
    DualBucket& bucket_;
    const std::int64_t tokens_;
    const Nanos deadline_ns_;
    Nanos arrived_ns_ = 0;
    Nanos ref_ns_ = 0;      // the head's reference instant (see Planning)
    Nanos planned_ns_ = 0;  // guarded by the bucket's mutex while queued
    Status status_ = Status::refused;
    bool owner_queued_ = false;  // ever queued: read by the owner's thread only
    Ticket* prev_ = nullptr;
    Ticket* next_ = nullptr;
    Waker* const waker_;
    std::condition_variable cv_;

    void notify() noexcept {
      if (waker_ != nullptr) waker_->wake(); else cv_.notify_one();
    }
  };

  DualBucket(Nanos request_interval_ns, std::int64_t request_burst, Nanos token_interval_ns,
             std::int64_t token_burst)
      : requests_(request_interval_ns, request_burst), tokens_(token_interval_ns, token_burst) {}
  DualBucket(const DualBucket&) = delete;
  DualBucket& operator=(const DualBucket&) = delete;
  ~DualBucket() = default;  // destroy no bucket while callers are queued on it

  // The ticket's caller arrives at `now`: admitted at once (nobody queued and both budgets
  // allow it), queued (its planned instant fits its deadline), or refused (nothing queued).
  Status arrive(Ticket& t, Nanos now) {
    std::lock_guard<std::mutex> lock(mutex_);
    t.arrived_ns_ = t.ref_ns_ = now;
    const bool first = head_ == nullptr;
    if (first) {  // the plan starts from the buckets as they are
      tail_requests_ = requests_.state();
      tail_tokens_ = tokens_.state();
      tail_at_ = now;
    }
    const Nanos ref = std::max(now, tail_at_);
    const Nanos at = go_at(tail_requests_, tail_tokens_, t.tokens_, ref);
    if (first && at <= now) {
      commit(t, now, at);
      return t.status_;
    }
    t.planned_ns_ = at;
    if (at > t.deadline_ns_) return t.status_ = Status::refused;
    tail_requests_.take(1, at, ref);
    if (t.tokens_ > 0) tail_tokens_.take(t.tokens_, at, ref);
    tail_at_ = at;
    link(t);
    t.owner_queued_ = true;
    return t.status_ = Status::queued;
  }

  // Waits, for a queued ticket, until it is admitted or refused, or until `until_ns` (then it
  // is still queued: call again, or leave()). Only the ticket's own thread calls this.
  Status wait(Ticket& t, Nanos until_ns) {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      const Nanos now = now_ns();
      Nanos wake = kForever;
      const Status status = step(t, now, &wake);
      if (status != Status::queued || now >= until_ns) return status;
      t.cv_.wait_until(lock, to_time_point(std::min(wake, until_ns)));
    }
  }

  // wait() without the wait, for a ticket woken by its Waker (or by a timer): admitted, refused,
  // or queued; then `*wake_at` is when to look again if nothing wakes it first (its instant, for
  // the head of the queue; kForever otherwise).
  Status poll(Ticket& t, Nanos now, Nanos* wake_at) {
    std::lock_guard<std::mutex> lock(mutex_);
    *wake_at = kForever;
    return step(t, now, wake_at);
  }

  // Takes a queued ticket out of the queue (its caller gives up: timeout, interrupt); nothing
  // was committed for it. No-op for a ticket that is not queued.
  void leave(Ticket& t) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (t.status_ != Status::queued) return;
    const bool was_head = &t == head_;
    unlink(t);
    t.status_ = Status::refused;
    const Nanos now = now_ns();
    if (was_head && head_ != nullptr) head_->ref_ns_ = std::max(head_->arrived_ns_, now);
    replan(now);
  }

  // How long a caller arriving at `now` for `tokens` would wait (behind everyone queued).
  Nanos predicted_wait(std::int64_t tokens, Nanos now) const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (head_ == nullptr) return go_at(requests_.state(), tokens_.state(), tokens, now) - now;
    const Nanos ref = std::max(now, tail_at_);
    return saturating_sub(go_at(tail_requests_, tail_tokens_, tokens, ref), now);
  }

  // Callers in the queue now.
  std::int64_t queued() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return queued_;
  }

  // A call that took `reserved` tokens used `used`: charge or give back the difference.
  void settle(std::int64_t reserved, std::int64_t used, Nanos now) {
    if (reserved < 0 || used < 0) throw std::invalid_argument("token counts must be >= 0");
    change(now, [&] {
      if (used > reserved) tokens_.charge(used - reserved, now);
      if (used < reserved) tokens_.give_back(reserved - used, now);
    });
  }

  // A provider's 429: nothing before `until_ns`, then both buckets start empty.
  void hold_until(Nanos until_ns) {
    change(now_ns(), [&] {
      requests_.hold_until(until_ns);
      tokens_.hold_until(until_ns);
    });
  }
  void limit_available_requests(std::int64_t n, Nanos now) {
    change(now, [&] { requests_.limit_available(n, now); });
  }
  void limit_available_tokens(std::int64_t n, Nanos now) {
    change(now, [&] { tokens_.limit_available(n, now); });
  }

  // Live changes (see Gcra::set_interval / set_burst); each returns the value it replaced. The
  // queue follows at once: a caller that a faster rate lets go now goes now.
  Nanos set_request_interval(Nanos interval_ns, Nanos now) {
    Nanos old = 0;
    change(now, [&] {
      old = requests_.interval_ns();
      requests_.set_interval(interval_ns, now);
    });
    return old;
  }
  Nanos set_token_interval(Nanos interval_ns, Nanos now) {
    Nanos old = 0;
    change(now, [&] {
      old = tokens_.interval_ns();
      tokens_.set_interval(interval_ns, now);
    });
    return old;
  }
  void set_request_burst(std::int64_t burst) {
    change(now_ns(), [&] { requests_.set_burst(burst); });
  }
  void set_token_burst(std::int64_t burst) {
    change(now_ns(), [&] { tokens_.set_burst(burst); });
  }

  std::int64_t requests_available(Nanos now) const { return requests_.tokens_available(now); }
  std::int64_t tokens_available(Nanos now) const { return tokens_.tokens_available(now); }
  const Gcra& requests() const noexcept { return requests_; }
  const Gcra& tokens() const noexcept { return tokens_; }

  // In the child of fork(): the mutex may have been held by a thread the child does not have,
  // and the queued callers' threads are gone.
  void reinit_after_fork() noexcept {
    new (&mutex_) std::mutex();
    head_ = tail_ = nullptr;
    queued_ = 0;
    requests_.reinit_after_fork();
    tokens_.reinit_after_fork();
  }

 private:
  // When a caller with reference instant `ref` can take a request and `tokens` from these states.
  static Nanos go_at(const GcraState& requests, const GcraState& tokens, std::int64_t n, Nanos ref) noexcept {
    const Nanos at = requests.earliest(1, ref);
    return n > 0 ? std::max(at, tokens.earliest(n, ref)) : at;
  }
  static Nanos saturating_sub(Nanos a, Nanos b) noexcept { return a == kForever ? kForever : a - b; }

  // One look at a ticket, with the mutex held: the head goes (commits) once its instant has come,
  // and is refused once its instant has moved past its deadline.
  Status step(Ticket& t, Nanos now, Nanos* wake_at) {
    if (t.status_ != Status::queued || &t != head_) return t.status_;
    const Nanos at = go_at(requests_.state(), tokens_.state(), t.tokens_, t.ref_ns_);
    if (at > now && at <= t.deadline_ns_) {
      *wake_at = at;
      return t.status_;
    }
    unlink(t);
    if (at <= now) commit(t, now, at); else t.status_ = Status::refused;
    if (head_ != nullptr) head_->ref_ns_ = std::max(head_->arrived_ns_, now);
    replan(now);
    return t.status_;
  }

  // Commits the ticket's request and tokens, going at `now`, its instant having come at `at`
  // (both buckets allow it: checked under the mutex, which every change takes, so the CAS cannot
  // fail). A head that wakes a little late (within kLateToleranceNs, or one request interval)
  // is booked at its instant, so ordinary wake-up latency costs no capacity; one later than that
  // is booked when it goes: a stall costs capacity, never a burst.
  void commit(Ticket& t, Nanos now, Nanos at) {
    const Nanos tolerance = std::max(requests_.interval_ns(), kLateToleranceNs);
    const Nanos booked = std::max(at, now - std::min(now, tolerance));
    const Reservation r = requests_.reserve_at(1, booked, t.ref_ns_);
    const Reservation k = t.tokens_ > 0 ? tokens_.reserve_at(t.tokens_, booked, t.ref_ns_) : Reservation{true};
    if (!r.admitted || !k.admitted) throw std::logic_error("DualBucket: a checked commit failed");
    t.planned_ns_ = booked;
    t.status_ = Status::admitted;
  }

  // Applies a change to the buckets and re-plans the queue.
  template <class Apply>
  void change(Nanos now, Apply&& apply) {
    std::lock_guard<std::mutex> lock(mutex_);
    apply();
    replan(now);
  }

  // Works out every queued caller's instant again, in order, from the buckets as they are;
  // refuses those whose instant no longer fits their deadline, and wakes the head (its instant
  // may have moved either way). Called with the mutex held.
  void replan(Nanos now) {
    GcraState requests = requests_.state();
    GcraState tokens = tokens_.state();
    Nanos previous = now;
    for (Ticket* t = head_; t != nullptr;) {
      Ticket* const next = t->next_;
      const Nanos ref = t == head_ ? t->ref_ns_ : std::max(t->arrived_ns_, previous);
      const Nanos at = go_at(requests, tokens, t->tokens_, ref);
      if (at > t->deadline_ns_) {  // would not make it: tell it now
        const bool was_head = t == head_;
        unlink(*t);
        t->status_ = Status::refused;
        t->notify();
        if (was_head && head_ != nullptr) head_->ref_ns_ = std::max(head_->arrived_ns_, now);
      } else {
        t->planned_ns_ = at;
        requests.take(1, at, ref);
        if (t->tokens_ > 0) tokens.take(t->tokens_, at, ref);
        previous = at;
      }
      t = next;
    }
    tail_requests_ = requests;
    tail_tokens_ = tokens;
    tail_at_ = previous;
    if (head_ != nullptr) head_->notify();
  }

  void link(Ticket& t) {
    t.prev_ = tail_;
    t.next_ = nullptr;
    if (tail_ != nullptr) tail_->next_ = &t; else head_ = &t;
    tail_ = &t;
    ++queued_;
  }
  // Takes `t` out of the queue; the new head (if any) is woken to take its turn.
  void unlink(Ticket& t) {
    if (t.prev_ != nullptr) t.prev_->next_ = t.next_; else head_ = t.next_;
    if (t.next_ != nullptr) t.next_->prev_ = t.prev_; else tail_ = t.prev_;
    t.prev_ = t.next_ = nullptr;
    --queued_;
    if (head_ != nullptr) head_->notify();
  }

  mutable std::mutex mutex_;
  Gcra requests_;
  Gcra tokens_;
  Ticket* head_ = nullptr;  // the queue, guarded by mutex_
  Ticket* tail_ = nullptr;
  std::int64_t queued_ = 0;
  GcraState tail_requests_;  // the buckets once every queued caller has gone as planned
  GcraState tail_tokens_;
  Nanos tail_at_ = 0;        // the last queued caller's planned instant
};

}  // namespace omnilimit
