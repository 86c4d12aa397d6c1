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
// Shared between processes (rate_limit_backend: shm). The same queue, with its state in a
// shared-memory segment (SharedQueue): every process on the host shares one budget and one arrival
// order. The rules are the same code (queue_plan.hpp); what differs is where a caller's record
// lives and how it sleeps. A caller that must wait takes an entry of the segment's table, owned
// by its process, and a thread sleeps on the entry's futex word, which every re-plan that
// concerns it bumps; a coroutine is woken through a doorbell (a Standby's words: a watcher thread
// in each process wakes that process's coroutines). The mutex is process-shared and robust, and
// nothing waits for it without a deadline (shm_mutex.hpp): a peer stopped while holding it costs
// the others their deadlines, never a hang. A holder that died inside leaves the lists to be
// rebuilt from the table (each entry says whether it queues or stands by, and when). Callers that
// left without the mutex (their deadline passed while a peer held it) and entries of processes
// that died (kill -9) are dropped by the next sweep: every waiter looks at least every
// kSliceNs, and sweeps at most every kSweepSpacingNs, so a dead caller's place goes within about
// kSliceNs + kSweepSpacingNs. What a dead process had reserved stays taken (settled at its
// estimate). close() closes this process's callers only; the other processes' stay queued.
//
// Thread-safety: every member is safe from any thread. A Ticket belongs to one thread: only that
// thread calls wait() and leave() with it.
#pragma once

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <linux/futex.h>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

#include "omnilimit/clock.hpp"
#include "omnilimit/gcra.hpp"
#include "omnilimit/process.hpp"
#include "omnilimit/queue_plan.hpp"
#include "omnilimit/shm_mutex.hpp"
#include "omnilimit/standby.hpp"
#include "omnilimit/waker.hpp"

namespace omnilimit {

// One waiting caller's entry in a shared queue's table.
struct SharedQueueEntry {
  PlanRecord<std::int32_t> plan;
  std::int64_t owner = 0;            // its process (a ProcessWord); 0: a free entry
  std::uint32_t coroutine = 0;       // 1: woken through the doorbell, not the futex word
  std::atomic<std::uint32_t> word{0};  // the futex word its thread sleeps on: bumped by every wake
  std::atomic<std::uint32_t> left{0};  // 1: its caller gave up without the mutex (dropped at the next sweep)
  std::uint64_t serial = 0;            // which caller holds it (an entry dropped and taken again changes it)
};

// The queue of a token budget shared between processes: the payload part that a DualBucket over
// a segment uses (built in place by the segment's creator).
struct SharedQueue {
  static constexpr int kEntries = 1024;  // callers waiting at once, over every process
  pthread_mutex_t mutex;
  PlanWords<std::int32_t> plan{-1};
  Nanos last_sweep_ns = 0;
  std::int32_t next_free = 0;  // where the search for a free entry starts
  std::uint64_t next_serial = 1;
  alignas(64) StandbyWords doorbell;  // rung for coroutines (each process's watcher wakes its own)
  SharedQueueEntry entries[kEntries];

  SharedQueue() { init_robust_mutex(mutex); }
};

class DualBucket {
 public:
  static constexpr Nanos kLateToleranceNs = 5'000'000;
  // Shared: a waiter looks at least this often (a caller ahead may have died), and the table is
  // swept for the entries of dead processes at most this often.
  static constexpr Nanos kSliceNs = 200'000'000;
  static constexpr Nanos kSweepSpacingNs = 100'000'000;
  // Shared: how long a change (settle, a pause, a new rate) or a caller leaving waits for the
  // mutex that a stopped peer holds before giving up (a change then raises; a caller leaving is
  // dropped by the next sweep).
  static constexpr Nanos kChangeWaitNs = 2 * kNanosPerSecond;
  // Shared: how long a coroutine's look waits for that mutex (it holds its event loop meanwhile).
  static constexpr Nanos kLoopLockWaitNs = 10'000'000;

  using Status = TicketStatus;

  // One caller's claim: a request and `tokens` tokens (>= 0), wanted by `deadline_ns` (kForever:
  // whenever). Lives on the caller's stack (or in a coroutine's waiter); leaves the queue when
  // destroyed. A ticket with a Waker is woken through it, and looks again with poll().
  // `may_stand_by` false: refused as soon as its turn does not fit (see Standing by).
  class Ticket {
   public:
    Ticket(DualBucket& bucket, std::int64_t tokens, Nanos deadline_ns, Waker* waker = nullptr,
           bool may_stand_by = true)
        : bucket_(bucket), waker_(waker), listener_(waker) {
      if (tokens < 0) throw std::invalid_argument("tokens must be >= 0");
      plan_.tokens = tokens;
      plan_.deadline_ns = deadline_ns;
      plan_.may_stand_by = may_stand_by;
    }
    ~Ticket() {
      if (owner_queued_) bucket_.leave(*this);
      if (listener_.linked()) bucket_.doorbell_->stop_listening(listener_);
    }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;

    // When the caller is planned to go (valid once queued; the instant it went once admitted).
    Nanos planned_ns() const noexcept { return plan_.planned_ns; }

   private:
    friend class DualBucket;
    DualBucket& bucket_;
    PlanRecord<Ticket*> plan_;  // in one process: the record itself; shared: a copy of the entry's
    std::int32_t entry_ = -1;   // shared: its entry in the table while it has one
    std::uint64_t serial_ = 0;  // shared: the entry's serial when it took it
    bool owner_queued_ = false;  // ever queued: read by the owner's thread only
    Waker* const waker_;
    std::condition_variable cv_;
    Standby::Listener listener_;  // shared, a coroutine: on the doorbell

    void notify() noexcept {
      if (waker_ != nullptr) waker_->wake(); else cv_.notify_one();
    }
  };

  // In one process.
  DualBucket(Nanos request_interval_ns, std::int64_t request_burst, Nanos token_interval_ns,
             std::int64_t token_burst)
      : requests_(request_interval_ns, request_burst),
        tokens_(token_interval_ns, token_burst),
        local_plan_(local_, requests_, tokens_, local_words_) {}
  // Shared between processes: the queue, the request bucket and the token bucket in a segment
  // (set up by their creator: SharedQueue's constructor, Gcra::init_words).
  DualBucket(SharedQueue& queue, GcraWords& requests, GcraWords& tokens)
      : requests_(requests),
        tokens_(tokens),
        local_plan_(local_, requests_, tokens_, local_words_),
        shared_(&queue),
        me_(ProcessWord::mine()),
        doorbell_(std::make_unique<Standby>(queue.doorbell, true)),
        space_{&queue, doorbell_.get()},
        shared_plan_(std::make_unique<QueuePlan<SharedSpace>>(space_, requests_, tokens_, queue.plan)) {}
  DualBucket(const DualBucket&) = delete;
  DualBucket& operator=(const DualBucket&) = delete;
  ~DualBucket() = default;  // destroy no bucket while callers are queued on it

  bool shared() const noexcept { return shared_ != nullptr; }

  // The ticket's caller arrives at `now`: admitted at once (nobody queued and both budgets
  // allow it), queued (its planned instant fits its deadline, or it stands by until it does),
  // refused (its turn does not fit and it may not stand by, or its deadline is now, or a peer
  // held the shared mutex past it), or closed.
  Status arrive(Ticket& t, Nanos now) {
    if (!shared_) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (closed_) return t.plan_.status = Status::closed;
      const Status status = local_plan_.arrive(&t, now);
      if (status == Status::queued) t.owner_queued_ = true;
      return status;
    }
    if (closed_.load()) return t.plan_.status = Status::closed;
    if (t.waker_ != nullptr) doorbell_->listen(t.listener_);  // before the look: no wake-up is lost
    // A thread waits for the mutex until its deadline (a peer stopped inside it); a coroutine
    // must not hold its event loop that long.
    const Nanos lock_until = t.waker_ != nullptr ? std::min(t.plan_.deadline_ns, now + kLoopLockWaitNs)
                                                 : t.plan_.deadline_ns;
    RobustLock lock(shared_->mutex, lock_until, [this] { rebuild(); });
    Status status = Status::refused;
    if (!lock) {
      // nothing taken
    } else if (shared_plan_->admit_at_once(t.plan_.tokens, now)) {
      t.plan_.planned_ns = now;
      status = Status::admitted;
    } else {
      sweep_if_due(now);
      const std::int32_t i = take_entry(t);
      status = shared_plan_->arrive(i, now);
      copy_out(t, i);
      if (status == Status::queued) {
        t.entry_ = i;
        t.serial_ = shared_->entries[i].serial;
        t.owner_queued_ = true;
        return status;
      }
      free_entry(i);
    }
    stop_listening(t);
    return t.plan_.status = status;
  }

  // Waits, for a queued (or standing) ticket, until it is admitted, refused or closed, or until
  // `until_ns` (then it is still queued: call again, or leave()). Only the ticket's own thread
  // calls this.
  Status wait(Ticket& t, Nanos until_ns) {
    if (!shared_) {
      std::unique_lock<std::mutex> lock(mutex_);
      for (;;) {
        const Nanos now = now_ns();
        Nanos wake = kForever;
        const Status status = local_plan_.step(&t, now, &wake);
        if (status != Status::queued || now >= until_ns) return status;
        t.cv_.wait_until(lock, to_time_point(std::min(wake, until_ns)));
      }
    }
    for (;;) {
      Nanos wake = kForever;
      std::uint32_t seen = 0;
      Nanos now;
      {
        RobustLock lock(shared_->mutex, until_ns, [this] { rebuild(); });
        if (!lock) return Status::queued;  // a peer held the mutex past the deadline
        now = now_ns();
        const Status status = shared_step(t, now, &wake);
        if (status != Status::queued || now >= until_ns) return status;
        seen = shared_->entries[t.entry_].word.load();
      }
      const Nanos until = std::min({wake, until_ns, now + kSliceNs});
      sleep_on(shared_->entries[t.entry_].word, seen, until);
    }
  }

  // wait() without the wait, for a ticket woken by its Waker (or by a timer): admitted, refused,
  // closed, or queued; then `*wake_at` is when to look again if nothing wakes it first (its
  // instant, for the head of the queue; its deadline, standing by; kForever otherwise; shared:
  // at most kSliceNs away), and `*standing` (if given) whether it stands by.
  Status poll(Ticket& t, Nanos now, Nanos* wake_at, bool* standing = nullptr) {
    *wake_at = kForever;
    Status status;
    if (!shared_) {
      std::lock_guard<std::mutex> lock(mutex_);
      status = local_plan_.step(&t, now, wake_at);
      if (standing != nullptr) *standing = status == Status::queued && t.plan_.standing_by;
      return status;
    } else {
      RobustLock lock(shared_->mutex, std::min(t.plan_.deadline_ns, now + kLoopLockWaitNs), [this] { rebuild(); });
      if (!lock) {  // a peer holds the mutex: look again soon (the deadline decides)
        status = Status::queued;
        if (now >= t.plan_.deadline_ns) {
          abandon(t);
          status = Status::refused;
        }
        *wake_at = now + kLoopLockWaitNs;
      } else {
        status = shared_step(t, now, wake_at);
      }
      if (status == Status::queued) *wake_at = std::min(*wake_at, now + kSliceNs);
    }
    if (standing != nullptr) *standing = status == Status::queued && t.plan_.standing_by;
    return status;
  }

  // Takes a queued ticket out of the queue (its caller gives up: timeout, interrupt); nothing
  // was committed for it. No-op for a ticket that is not queued.
  void leave(Ticket& t) {
    if (!shared_) {
      std::lock_guard<std::mutex> lock(mutex_);
      local_plan_.leave(&t, now_ns());
      return;
    }
    if (t.entry_ < 0) return;
    RobustLock lock(shared_->mutex, now_ns() + kChangeWaitNs, [this] { rebuild(); });
    if (!lock) {
      abandon(t);
      return;
    }
    if (!holds_entry(t)) {
      t.entry_ = -1;
      stop_listening(t);
      return;
    }
    shared_plan_->leave(t.entry_, now_ns());
    copy_out(t, t.entry_);
    free_entry(t.entry_);
    t.entry_ = -1;
    stop_listening(t);
  }

  // How long a caller arriving at `now` for `tokens` would wait (behind everyone queued).
  Nanos predicted_wait(std::int64_t tokens, Nanos now) {
    if (!shared_) {
      std::lock_guard<std::mutex> lock(mutex_);
      return local_plan_.predicted_wait(tokens, now);
    }
    RobustLock lock(shared_->mutex, now + kChangeWaitNs, [this] { rebuild(); });
    if (!lock) throw_stuck();
    return shared_plan_->predicted_wait(tokens, now);
  }

  // Callers in the queue now (not counting those standing by), over every process when shared.
  std::int64_t queued() const {
    if (!shared_) {
      std::lock_guard<std::mutex> lock(mutex_);
      return local_words_.queued;
    }
    return shared_->plan.queued;  // a plain read of a word the mutex holder writes: a figure
  }
  // Callers standing by now.
  std::int64_t standing_by() const {
    if (!shared_) {
      std::lock_guard<std::mutex> lock(mutex_);
      return local_words_.standing;
    }
    return shared_->plan.standing;
  }

  // Wakes every queued and standing caller with `closed`; later arrivals are closed at once.
  // Shared: this process's callers only.
  void close() {
    if (!shared_) {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_ = true;
      local_plan_.close(now_ns(), [](Ticket*) { return true; });
      return;
    }
    closed_ = true;
    RobustLock lock(shared_->mutex, now_ns() + kChangeWaitNs, [this] { rebuild(); });
    if (!lock) throw_stuck();
    const std::int64_t me = me_;
    shared_plan_->close(now_ns(), [&](std::int32_t i) { return shared_->entries[i].owner == me; });
  }
  bool closed() const {
    if (!shared_) {
      std::lock_guard<std::mutex> lock(mutex_);
      return closed_;
    }
    return closed_.load();
  }

  // Called (under the mutex) after every re-plan: the limiter's budget may have changed for
  // callers that wait elsewhere (a CombinedLimiter's rate part standing by outside the queue).
  // Must be quick and must not call back into this bucket.
  void on_replan(void (*hook)(void*) noexcept, void* context) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    local_plan_.on_replan(hook, context);
    if (shared_plan_) shared_plan_->on_replan(hook, context);
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
  // and the queued callers' threads are gone. A shared queue is left alone (the parent's callers
  // are still in it); the child is another process.
  void reinit_after_fork() noexcept {
    new (&mutex_) std::mutex();
    if (shared_) {
      me_ = ProcessWord::mine();
      doorbell_->reinit_after_fork(true);
      return;
    }
    local_words_ = PlanWords<Ticket*>(nullptr);
    requests_.reinit_after_fork();
    tokens_.reinit_after_fork();
  }

 private:
  struct LocalSpace {
    using Link = Ticket*;
    static constexpr Link none = nullptr;
    PlanRecord<Link>& at(Link t) const noexcept { return t->plan_; }
    void notify(Link t) const noexcept { t->notify(); }
  };
  struct SharedSpace {
    using Link = std::int32_t;
    static constexpr Link none = -1;
    SharedQueue* q;
    Standby* doorbell;
    PlanRecord<Link>& at(Link i) const noexcept { return q->entries[i].plan; }
    void notify(Link i) const noexcept {
      SharedQueueEntry& e = q->entries[i];
      if (e.coroutine != 0) {
        doorbell->notify();
        return;
      }
      e.word.fetch_add(1);
      syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&e.word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
    }
  };

  [[noreturn]] static void throw_stuck() {
    throw std::runtime_error("a shared token budget's mutex has been held by another process for over " +
                             std::to_string(kChangeWaitNs / kNanosPerSecond) +
                             " s (a process stopped inside it, SIGSTOP?): nothing was changed");
  }

  // Applies a change to the buckets and re-plans the queue.
  template <class Apply>
  void change(Nanos now, Apply&& apply) {
    if (!shared_) {
      std::lock_guard<std::mutex> lock(mutex_);
      apply();
      local_plan_.replan(now);
      return;
    }
    RobustLock lock(shared_->mutex, now_ns() + kChangeWaitNs, [this] { rebuild(); });
    if (!lock) throw_stuck();
    apply();
    sweep_if_due(now);
    shared_plan_->replan(now);
  }

  // With the shared mutex held: one look at the ticket's entry; a final answer frees the entry.
  Status shared_step(Ticket& t, Nanos now, Nanos* wake_at) {
    if (t.entry_ < 0) return t.plan_.status;
    sweep_if_due(now);
    if (!holds_entry(t)) {  // dropped while its process was stopped: it holds nothing, has no place
      t.entry_ = -1;
      stop_listening(t);
      return t.plan_.status = Status::refused;
    }
    const Status status = shared_plan_->step(t.entry_, now, wake_at);
    copy_out(t, t.entry_);
    if (status != Status::queued) {
      free_entry(t.entry_);
      t.entry_ = -1;
      stop_listening(t);
    }
    return status;
  }
  // With the shared mutex held: the ticket's entry is still its own (not dropped and taken again).
  bool holds_entry(const Ticket& t) const noexcept {
    const SharedQueueEntry& e = shared_->entries[t.entry_];
    return e.owner == me_ && e.serial == t.serial_;
  }
  // Gives the ticket's entry up without the mutex (a stopped peer holds it): the next sweep drops it.
  void abandon(Ticket& t) noexcept {
    SharedQueueEntry& e = shared_->entries[t.entry_];
    if (e.owner == me_ && e.serial == t.serial_) e.left.store(1);  // (a racy look: at worst a dropped entry is marked)
    t.entry_ = -1;
    t.plan_.status = Status::refused;
    stop_listening(t);
  }
  void stop_listening(Ticket& t) noexcept {
    if (t.listener_.linked()) doorbell_->stop_listening(t.listener_);
  }

  // With the shared mutex held: a free entry for the ticket's record (throws when all are taken).
  std::int32_t take_entry(const Ticket& t) {
    SharedQueue& q = *shared_;
    for (int n = 0; n < SharedQueue::kEntries; ++n) {
      const std::int32_t i = (q.next_free + n) % SharedQueue::kEntries;
      SharedQueueEntry& e = q.entries[i];
      if (e.owner != 0) continue;
      q.next_free = (i + 1) % SharedQueue::kEntries;
      e.owner = me_;
      e.coroutine = t.waker_ != nullptr ? 1 : 0;
      e.left.store(0);
      e.serial = q.next_serial++;
      PlanRecord<std::int32_t> r;
      r.tokens = t.plan_.tokens;
      r.deadline_ns = t.plan_.deadline_ns;
      r.may_stand_by = t.plan_.may_stand_by;
      r.prev = r.next = -1;
      e.plan = r;
      return i;
    }
    throw std::runtime_error("a shared token budget's queue is full (" + std::to_string(SharedQueue::kEntries) +
                             " waiting callers over every process)");
  }
  void free_entry(std::int32_t i) noexcept {
    SharedQueueEntry& e = shared_->entries[i];
    e.owner = 0;
    e.plan.status = Status::refused;
  }
  // The ticket's view of its entry (for planned_ns() and standing_by, read without the mutex).
  void copy_out(Ticket& t, std::int32_t i) const noexcept {
    const PlanRecord<std::int32_t>& r = shared_->entries[i].plan;
    t.plan_.planned_ns = r.planned_ns;
    t.plan_.status = r.status;
    t.plan_.standing_by = r.standing_by;
  }

  // With the shared mutex held, at most every kSweepSpacingNs: drops the entries of callers that
  // left without the mutex and of processes that died (the callers behind move up), and the head
  // when its instant passed more than kSliceNs ago while its process is stopped (SIGSTOP): it
  // would hold everyone behind it. A stopped caller whose entry was dropped finds, once resumed,
  // that it holds nothing and no place (it looks again, as after any change).
  void sweep_if_due(Nanos now) {
    SharedQueue& q = *shared_;
    if (now - q.last_sweep_ns < kSweepSpacingNs) return;
    q.last_sweep_ns = now;
    for (int n = 0; n < 8 && q.plan.head >= 0; ++n) {  // a few stopped heads in a row at most per sweep
      SharedQueueEntry& head = q.entries[q.plan.head];
      if (head.owner == me_ || now - head.plan.planned_ns <= kSliceNs || !ProcessWord::stopped(head.owner)) break;
      const std::int32_t i = q.plan.head;
      shared_plan_->leave(i, now);
      free_entry(i);
    }
    std::int64_t known[8] = {};  // processes found alive in this sweep
    int alive = 0;
    for (SharedQueueEntry& e : q.entries) {
      if (e.owner == 0) continue;
      bool gone = e.left.load() != 0;
      if (!gone && e.owner != me_ && std::find(known, known + alive, e.owner) == known + alive) {
        gone = ProcessWord::gone(e.owner);
        if (!gone && alive < 8) known[alive++] = e.owner;
      }
      if (!gone) continue;
      const std::int32_t i = static_cast<std::int32_t>(&e - q.entries);
      if (e.plan.status == Status::queued) shared_plan_->leave(i, now);
      free_entry(i);
    }
  }

  // After a process died holding the shared mutex: the lists from the table (the queue in the
  // order of the planned instants, which a plan keeps rising; the callers standing by in arrival
  // order), then a re-plan.
  void rebuild() {
    SharedQueue& q = *shared_;
    std::vector<std::int32_t> queued;
    std::vector<std::int32_t> standing;
    for (std::int32_t i = 0; i < SharedQueue::kEntries; ++i) {
      const SharedQueueEntry& e = q.entries[i];
      if (e.owner == 0 || e.plan.status != Status::queued) continue;
      (e.plan.standing_by ? standing : queued).push_back(i);
    }
    auto by = [&](Nanos PlanRecord<std::int32_t>::*field) {
      return [&q, field](std::int32_t a, std::int32_t b) {
        return q.entries[a].plan.*field < q.entries[b].plan.*field || (q.entries[a].plan.*field == q.entries[b].plan.*field && a < b);
      };
    };
    std::sort(queued.begin(), queued.end(), by(&PlanRecord<std::int32_t>::planned_ns));
    std::sort(standing.begin(), standing.end(), by(&PlanRecord<std::int32_t>::arrived_ns));
    PlanWords<std::int32_t> words(-1);
    auto relink = [&](const std::vector<std::int32_t>& order, std::int32_t& head, std::int32_t& tail) {
      std::int32_t prev = -1;
      for (const std::int32_t i : order) {
        q.entries[i].plan.prev = prev;
        q.entries[i].plan.next = -1;
        if (prev >= 0) q.entries[prev].plan.next = i; else head = i;
        prev = i;
      }
      tail = prev;
    };
    relink(queued, words.head, words.tail);
    relink(standing, words.standby_head, words.standby_tail);
    words.queued = static_cast<std::int64_t>(queued.size());
    words.standing = static_cast<std::int64_t>(standing.size());
    q.plan = words;
    shared_plan_->replan(now_ns());
  }

  // Sleeps on a futex word while it holds `seen`, until `until_ns` at the latest.
  static void sleep_on(std::atomic<std::uint32_t>& word, std::uint32_t seen, Nanos until_ns) noexcept {
    const Nanos left = until_ns - now_ns();
    if (left <= 0) return;
    timespec ts{static_cast<time_t>(left / kNanosPerSecond), static_cast<long>(left % kNanosPerSecond)};
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, seen, &ts, nullptr, 0);
  }

  mutable std::mutex mutex_;  // in one process: guards the plan
  Gcra requests_;
  Gcra tokens_;
  LocalSpace local_;
  PlanWords<Ticket*> local_words_{nullptr};
  QueuePlan<LocalSpace> local_plan_;
  std::atomic<bool> closed_{false};  // in one process: guarded by mutex_ as well
  // Shared between processes (all unset in one process).
  SharedQueue* shared_ = nullptr;
  std::int64_t me_ = 0;  // this process, as its entries name it
  std::unique_ptr<Standby> doorbell_;
  SharedSpace space_{nullptr, nullptr};
  std::unique_ptr<QueuePlan<SharedSpace>> shared_plan_;
};

}  // namespace omnilimit
