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
// re-plans the queue and wakes the head to recompute its instant. Arrival order is kept across
// both budgets.
//
// Planning. A newcomer learns at once whether its turn fits its deadline: the bucket states after
// every queued caller has taken its share (each at its planned instant, from a copy, GcraState)
// give its instant. A caller's claim counts from its reference instant: its arrival, or the
// instant the callers ahead of it go, whichever is later.
//
// Standing by. A caller whose turn does not fit its deadline takes no place in the queue (nothing
// is planned for someone who will give up), but it is not refused before its deadline either: it
// stands by, in arrival order, and every re-plan looks at the callers standing by after planning
// the queue. One whose turn now fits (tokens given back, a faster rate, a larger burst, a caller
// ahead who left) joins the back of the queue and is woken; one whose deadline has passed is
// refused. A queued caller that a change pushes past its deadline goes back to standing by. A
// ticket made with may_stand_by = false (the fail-fast form) is refused instead, at once.
//
// Closing. close() wakes every queued and standing caller with `closed`; later arrivals get
// `closed` too.
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
    refused,   // its turn did not come before its deadline: it holds nothing, is in no queue
    closed,    // the bucket was closed: it holds nothing, is in no queue
  };

  // One caller's claim: a request and `tokens` tokens (>= 0), wanted by `deadline_ns` (kForever:
  // whenever). Lives on the caller's stack (or in a coroutine's waiter); leaves the queue when
  // destroyed. A ticket with a Waker is woken through it, and looks again with poll().
  // `may_stand_by` false: refused as soon as its turn does not fit (see Standing by).
  class Ticket {
   public:
    Ticket(DualBucket& bucket, std::int64_t tokens, Nanos deadline_ns, Waker* waker = nullptr,
           bool may_stand_by = true)
        : bucket_(bucket), tokens_(tokens), deadline_ns_(deadline_ns), waker_(waker), may_stand_by_(may_stand_by) {
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
    Status status_ = Status::refused;  // queued while in the queue or standing by
    bool standing_by_ = false;         // in the stand-by list rather than the queue (status queued)
    bool owner_queued_ = false;  // ever queued: read by the owner's thread only
    Ticket* prev_ = nullptr;     // in the queue or the stand-by list
    Ticket* next_ = nullptr;
    Waker* const waker_;
    const bool may_stand_by_;
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
  // allow it), queued (its planned instant fits its deadline, or it stands by until it does),
  // refused (its turn does not fit and it may not stand by, or its deadline is now), or closed.
  Status arrive(Ticket& t, Nanos now) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return t.status_ = Status::closed;
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
    if (at > t.deadline_ns_) {
      if (!t.may_stand_by_ || now >= t.deadline_ns_) return t.status_ = Status::refused;
      link_standby(t);
      t.owner_queued_ = true;
      return t.status_ = Status::queued;
    }
    tail_requests_.take(1, at, ref);
    if (t.tokens_ > 0) tail_tokens_.take(t.tokens_, at, ref);
    tail_at_ = at;
    link(t);
    t.owner_queued_ = true;
    return t.status_ = Status::queued;
  }

  // Waits, for a queued (or standing) ticket, until it is admitted, refused or closed, or until
  // `until_ns` (then it is still queued: call again, or leave()). Only the ticket's own thread
  // calls this.
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
  // closed, or queued; then `*wake_at` is when to look again if nothing wakes it first (its
  // instant, for the head of the queue; its deadline, standing by; kForever otherwise), and
  // `*standing` (if given) whether it stands by.
  Status poll(Ticket& t, Nanos now, Nanos* wake_at, bool* standing = nullptr) {
    std::lock_guard<std::mutex> lock(mutex_);
    *wake_at = kForever;
    const Status status = step(t, now, wake_at);
    if (standing != nullptr) *standing = status == Status::queued && t.standing_by_;
    return status;
  }

  // Takes a queued ticket out of the queue (its caller gives up: timeout, interrupt); nothing
  // was committed for it. No-op for a ticket that is not queued.
  void leave(Ticket& t) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (t.status_ != Status::queued) return;
    if (t.standing_by_) {  // it had no place in the plan
      unlink_standby(t);
      t.status_ = Status::refused;
      return;
    }
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

  // Callers in the queue now (not counting those standing by).
  std::int64_t queued() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return queued_;
  }
  // Callers standing by now.
  std::int64_t standing_by() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return standing_;
  }

  // Wakes every queued and standing caller with `closed`; later arrivals are closed at once.
  void close() {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    while (head_ != nullptr) {
      Ticket* t = head_;
      unlink(*t);
      t->status_ = Status::closed;
      t->notify();
    }
    while (standby_head_ != nullptr) {
      Ticket* t = standby_head_;
      unlink_standby(*t);
      t->status_ = Status::closed;
      t->notify();
    }
  }
  bool closed() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return closed_;
  }

  // Called (under the mutex) after every re-plan: the limiter's budget may have changed for
  // callers that wait elsewhere (a CombinedLimiter's rate part standing by outside the queue).
  // Must be quick and must not call back into this bucket.
  void on_replan(void (*hook)(void*) noexcept, void* context) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    replan_hook_ = hook;
    replan_context_ = context;
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
    standby_head_ = standby_tail_ = nullptr;
    queued_ = standing_ = 0;
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
  // and stands by (or is refused) once its instant has moved past its deadline; a caller
  // standing by is refused once its deadline has come.
  Status step(Ticket& t, Nanos now, Nanos* wake_at) {
    if (t.status_ != Status::queued) return t.status_;
    if (t.standing_by_) {
      if (now < t.deadline_ns_) {
        *wake_at = t.deadline_ns_;
        return t.status_;
      }
      unlink_standby(t);
      return t.status_ = Status::refused;
    }
    if (&t != head_) return t.status_;
    const Nanos at = go_at(requests_.state(), tokens_.state(), t.tokens_, t.ref_ns_);
    if (at > now && at <= t.deadline_ns_) {
      *wake_at = at;
      return t.status_;
    }
    unlink(t);
    if (at <= now) {
      commit(t, now, at);
    } else if (t.may_stand_by_ && now < t.deadline_ns_) {
      link_standby(t);
      *wake_at = t.deadline_ns_;
    } else {
      t.status_ = Status::refused;
    }
    if (head_ != nullptr) head_->ref_ns_ = std::max(head_->arrived_ns_, now);
    replan(now);
    if (t.status_ == Status::queued) {  // the re-plan may have moved it (a wake meant for it is lost)
      *wake_at = t.standing_by_ ? t.deadline_ns_ : (&t == head_ ? t.planned_ns_ : kForever);
    }
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

  // Works out every queued caller's instant again, in order, from the buckets as they are; those
  // whose instant no longer fits their deadline stand by (or are refused), and the callers
  // standing by whose turn now fits join the back of the queue. Wakes the head (its instant may
  // have moved either way) and every caller whose place changed. Called with the mutex held.
  void replan(Nanos now) {
    GcraState requests = requests_.state();
    GcraState tokens = tokens_.state();
    Nanos previous = now;
    for (Ticket* t = head_; t != nullptr;) {
      Ticket* const next = t->next_;
      const Nanos ref = t == head_ ? t->ref_ns_ : std::max(t->arrived_ns_, previous);
      const Nanos at = go_at(requests, tokens, t->tokens_, ref);
      if (at > t->deadline_ns_) {  // would not make it: it stands by, or is told now
        const bool was_head = t == head_;
        unlink(*t);
        if (t->may_stand_by_ && now < t->deadline_ns_) {
          link_standby(*t);
        } else {
          t->status_ = Status::refused;
        }
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
    // The callers standing by, in arrival order: a turn that fits now takes the back of the queue.
    for (Ticket* t = standby_head_; t != nullptr;) {
      Ticket* const next = t->next_;
      if (now >= t->deadline_ns_) {
        unlink_standby(*t);
        t->status_ = Status::refused;
        t->notify();
      } else {
        const Nanos ref = std::max(now, previous);
        const Nanos at = go_at(requests, tokens, t->tokens_, ref);
        if (at <= t->deadline_ns_) {
          unlink_standby(*t);
          t->ref_ns_ = ref;
          t->planned_ns_ = at;
          link(*t);
          requests.take(1, at, ref);
          if (t->tokens_ > 0) tokens.take(t->tokens_, at, ref);
          previous = at;
          t->notify();
        }
      }
      t = next;
    }
    tail_requests_ = requests;
    tail_tokens_ = tokens;
    tail_at_ = previous;
    if (head_ != nullptr) head_->notify();
    if (replan_hook_ != nullptr) replan_hook_(replan_context_);
  }

  void link(Ticket& t) {
    t.prev_ = tail_;
    t.next_ = nullptr;
    if (tail_ != nullptr) tail_->next_ = &t; else head_ = &t;
    tail_ = &t;
    ++queued_;
  }
  // The stand-by list: tickets with status queued and no place in the plan.
  void link_standby(Ticket& t) {
    t.prev_ = standby_tail_;
    t.next_ = nullptr;
    if (standby_tail_ != nullptr) standby_tail_->next_ = &t; else standby_head_ = &t;
    standby_tail_ = &t;
    t.standing_by_ = true;
    ++standing_;
  }
  void unlink_standby(Ticket& t) {
    if (t.prev_ != nullptr) t.prev_->next_ = t.next_; else standby_head_ = t.next_;
    if (t.next_ != nullptr) t.next_->prev_ = t.prev_; else standby_tail_ = t.prev_;
    t.prev_ = t.next_ = nullptr;
    t.standing_by_ = false;
    --standing_;
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
  Ticket* standby_head_ = nullptr;  // callers standing by, in arrival order, guarded by mutex_
  Ticket* standby_tail_ = nullptr;
  std::int64_t standing_ = 0;
  bool closed_ = false;  // guarded by mutex_
  void (*replan_hook_)(void*) noexcept = nullptr;  // guarded by mutex_
  void* replan_context_ = nullptr;
  GcraState tail_requests_;  // the buckets once every queued caller has gone as planned
  GcraState tail_tokens_;
  Nanos tail_at_ = 0;        // the last queued caller's planned instant
};

}  // namespace omnilimit
