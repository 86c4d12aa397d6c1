// QueuePlan: the planning of a DualBucket's queue (dual_bucket.hpp), wherever its records live.
//
// The rules (arrival, the head's turn, re-planning, standing by, leaving, closing) are written once
// here, over a Space that says where the callers' records are and how one is woken:
// - in one process, each record is a member of its caller's Ticket, linked by pointer, and a
//   caller sleeps on its own condition variable;
// - shared between processes (rate_limit_backend: shm), the records are entries of a table in a
//   shared-memory segment, linked by index, and a caller sleeps on its entry's futex word.
// A Space provides `Link` (how a record is named), `none` (no record), `at(link)` (the record),
// and `notify(link)` (wake its caller: it looks again).
//
// Every function here runs with the bucket's mutex held (the DualBucket takes it), reads no clock
// and sleeps on nothing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "omnilimit/clock.hpp"
#include "omnilimit/gcra.hpp"

namespace omnilimit {

enum class TicketStatus : std::uint8_t {
  admitted,  // the request and its tokens are taken
  queued,    // still waiting in the queue (or standing by)
  refused,   // its turn did not come before its deadline: it holds nothing, is in no queue
  closed,    // the bucket was closed: it holds nothing, is in no queue
};

// One caller's claim, as the plan sees it. Plain data (it may live in a shared segment).
template <class Link>
struct PlanRecord {
  std::int64_t tokens = 0;
  Nanos deadline_ns = 0;
  Nanos arrived_ns = 0;
  Nanos ref_ns = 0;      // the head's reference instant (see Planning in dual_bucket.hpp)
  Nanos planned_ns = 0;  // when it is planned to go; the instant it went once admitted
  Link prev{};           // in the queue or the stand-by list
  Link next{};
  TicketStatus status = TicketStatus::refused;  // queued while in the queue or standing by
  bool standing_by = false;                     // in the stand-by list rather than the queue
  bool may_stand_by = true;
};

// The queue's bookkeeping. Plain data (it may live in a shared segment).
template <class Link>
struct PlanWords {
  Link head;
  Link tail;
  Link standby_head;  // callers standing by, in arrival order
  Link standby_tail;
  std::int64_t queued = 0;
  std::int64_t standing = 0;
  GcraState tail_requests;  // the buckets once every queued caller has gone as planned
  GcraState tail_tokens;
  Nanos tail_at = 0;  // the last queued caller's planned instant

  explicit PlanWords(Link none) : head(none), tail(none), standby_head(none), standby_tail(none) {}
};

template <class Space>
class QueuePlan {
 public:
  using Link = typename Space::Link;
  using Record = PlanRecord<Link>;
  static constexpr Nanos kLateToleranceNs = 5'000'000;

  QueuePlan(Space& space, Gcra& requests, Gcra& tokens, PlanWords<Link>& words) noexcept
      : sp_(space), requests_(requests), tokens_(tokens), w_(words) {}

  PlanWords<Link>& words() noexcept { return w_; }
  const PlanWords<Link>& words() const noexcept { return w_; }

  // Called after every re-plan (see DualBucket::on_replan).
  void on_replan(void (*hook)(void*) noexcept, void* context) noexcept {
    hook_ = hook;
    context_ = context;
  }

  // The caller of `t` (tokens, deadline and may_stand_by set) arrives at `now`: admitted at once,
  // queued, or refused. `before_link` runs when it is about to take a place (the shared space
  // gives it an entry then).
  TicketStatus arrive(Link t, Nanos now) {
    Record& r = sp_.at(t);
    r.arrived_ns = r.ref_ns = now;
    const bool first = w_.head == Space::none;
    if (first) {  // the plan starts from the buckets as they are
      w_.tail_requests = requests_.state();
      w_.tail_tokens = tokens_.state();
      w_.tail_at = now;
    }
    const Nanos ref = std::max(now, w_.tail_at);
    const Nanos at = go_at(w_.tail_requests, w_.tail_tokens, r.tokens, ref);
    if (first && at <= now) {
      commit(r, now, at);
      return r.status;
    }
    r.planned_ns = at;
    if (at > r.deadline_ns) {
      if (!r.may_stand_by || now >= r.deadline_ns) return r.status = TicketStatus::refused;
      link_standby(t);
      return r.status = TicketStatus::queued;
    }
    w_.tail_requests.take(1, at, ref);
    if (r.tokens > 0) w_.tail_tokens.take(r.tokens, at, ref);
    w_.tail_at = at;
    link(t);
    return r.status = TicketStatus::queued;
  }

  // Whether a caller arriving at `now` for `tokens` is admitted at once (nobody queued, both
  // budgets allow it): then committed, with no record.
  bool admit_at_once(std::int64_t tokens, Nanos now) {
    if (w_.head != Space::none) return false;
    const Nanos at = go_at(requests_.state(), tokens_.state(), tokens, now);
    if (at > now) return false;
    Record r;
    r.tokens = tokens;
    r.ref_ns = now;
    commit(r, now, at);
    return true;
  }

  // One look at a record: the head goes (commits) once its instant has come, and stands by (or
  // is refused) once its instant has moved past its deadline; a caller standing by is refused
  // once its deadline has come. `*wake_at`: when to look again if nothing wakes it first.
  TicketStatus step(Link t, Nanos now, Nanos* wake_at) {
    Record& r = sp_.at(t);
    if (r.status != TicketStatus::queued) return r.status;
    if (r.standing_by) {
      if (now < r.deadline_ns) {
        *wake_at = r.deadline_ns;
        return r.status;
      }
      unlink_standby(t);
      return r.status = TicketStatus::refused;
    }
    if (t != w_.head) return r.status;
    const Nanos at = go_at(requests_.state(), tokens_.state(), r.tokens, r.ref_ns);
    if (at > now && at <= r.deadline_ns) {
      *wake_at = at;
      return r.status;
    }
    unlink(t);
    if (at <= now) {
      commit(r, now, at);
    } else if (r.may_stand_by && now < r.deadline_ns) {
      link_standby(t);
      *wake_at = r.deadline_ns;
    } else {
      r.status = TicketStatus::refused;
    }
    new_head_from(now);
    replan(now);
    if (r.status == TicketStatus::queued) {  // the re-plan may have moved it (a wake meant for it is lost)
      *wake_at = r.standing_by ? r.deadline_ns : (t == w_.head ? r.planned_ns : kForever);
    }
    return r.status;
  }

  // Takes a queued (or standing) record out (its caller gives up, or died); nothing was
  // committed for it. No-op for one that is not queued.
  void leave(Link t, Nanos now) {
    Record& r = sp_.at(t);
    if (r.status != TicketStatus::queued) return;
    if (r.standing_by) {  // it had no place in the plan
      unlink_standby(t);
      r.status = TicketStatus::refused;
      return;
    }
    const bool was_head = t == w_.head;
    unlink(t);
    r.status = TicketStatus::refused;
    if (was_head) new_head_from(now);
    replan(now);
  }

  // Closes every queued and standing record for which `mine(link)` holds (wakes it with
  // `closed`), then re-plans what is left.
  template <class Mine>
  void close(Nanos now, Mine&& mine) {
    bool any = false;
    for (Link t = w_.head; t != Space::none;) {
      const Link next = sp_.at(t).next;
      if (mine(t)) {
        const bool was_head = t == w_.head;
        unlink(t);
        sp_.at(t).status = TicketStatus::closed;
        sp_.notify(t);
        if (was_head) new_head_from(now);
        any = true;
      }
      t = next;
    }
    for (Link t = w_.standby_head; t != Space::none;) {
      const Link next = sp_.at(t).next;
      if (mine(t)) {
        unlink_standby(t);
        sp_.at(t).status = TicketStatus::closed;
        sp_.notify(t);
      }
      t = next;
    }
    if (any && w_.head != Space::none) replan(now);
  }

  // How long a caller arriving at `now` for `tokens` would wait (behind everyone queued).
  Nanos predicted_wait(std::int64_t tokens, Nanos now) const {
    if (w_.head == Space::none) return go_at(requests_.state(), tokens_.state(), tokens, now) - now;
    const Nanos ref = std::max(now, w_.tail_at);
    const Nanos at = go_at(w_.tail_requests, w_.tail_tokens, tokens, ref);
    return at == kForever ? kForever : at - now;
  }

  // Works out every queued caller's instant again, in order, from the buckets as they are; those
  // whose instant no longer fits their deadline stand by (or are refused), and the callers
  // standing by whose turn now fits join the back of the queue. Wakes the head (its instant may
  // have moved either way) and every caller whose place changed.
  void replan(Nanos now) {
    GcraState requests = requests_.state();
    GcraState tokens = tokens_.state();
    Nanos previous = now;
    for (Link t = w_.head; t != Space::none;) {
      Record& r = sp_.at(t);
      const Link next = r.next;
      const Nanos ref = t == w_.head ? r.ref_ns : std::max(r.arrived_ns, previous);
      const Nanos at = go_at(requests, tokens, r.tokens, ref);
      if (at > r.deadline_ns) {  // would not make it: it stands by, or is told now
        const bool was_head = t == w_.head;
        unlink(t);
        if (r.may_stand_by && now < r.deadline_ns) {
          link_standby(t);
        } else {
          r.status = TicketStatus::refused;
        }
        sp_.notify(t);
        if (was_head) new_head_from(now);
      } else {
        r.planned_ns = at;
        requests.take(1, at, ref);
        if (r.tokens > 0) tokens.take(r.tokens, at, ref);
        previous = at;
      }
      t = next;
    }
    // The callers standing by, in arrival order: a turn that fits now takes the back of the queue.
    for (Link t = w_.standby_head; t != Space::none;) {
      Record& r = sp_.at(t);
      const Link next = r.next;
      if (now >= r.deadline_ns) {
        unlink_standby(t);
        r.status = TicketStatus::refused;
        sp_.notify(t);
      } else {
        const Nanos ref = std::max(now, previous);
        const Nanos at = go_at(requests, tokens, r.tokens, ref);
        if (at <= r.deadline_ns) {
          unlink_standby(t);
          r.ref_ns = ref;
          r.planned_ns = at;
          link(t);
          requests.take(1, at, ref);
          if (r.tokens > 0) tokens.take(r.tokens, at, ref);
          previous = at;
          sp_.notify(t);
        }
      }
      t = next;
    }
    w_.tail_requests = requests;
    w_.tail_tokens = tokens;
    w_.tail_at = previous;
    if (w_.head != Space::none) sp_.notify(w_.head);
    if (hook_ != nullptr) hook_(context_);
  }

 private:
  // When a caller with reference instant `ref` can take a request and `n` tokens from these states.
  static Nanos go_at(const GcraState& requests, const GcraState& tokens, std::int64_t n, Nanos ref) noexcept {
    const Nanos at = requests.earliest(1, ref);
    return n > 0 ? std::max(at, tokens.earliest(n, ref)) : at;
  }

  // Commits a record's request and tokens, going at `now`, its instant having come at `at` (both
  // buckets allow it: checked under the mutex, which every change takes, so the CAS cannot fail).
  // A head that wakes a little late (within kLateToleranceNs, or one request interval) is booked
  // at its instant, so ordinary wake-up latency costs no capacity; one later than that is booked
  // when it goes: a stall costs capacity, never a burst.
  void commit(Record& r, Nanos now, Nanos at) {
    const Nanos tolerance = std::max(requests_.interval_ns(), kLateToleranceNs);
    const Nanos booked = std::max(at, now - std::min(now, tolerance));
    const Reservation q = requests_.reserve_at(1, booked, r.ref_ns);
    const Reservation k = r.tokens > 0 ? tokens_.reserve_at(r.tokens, booked, r.ref_ns) : Reservation{true};
    if (!q.admitted || !k.admitted) throw std::logic_error("DualBucket: a checked commit failed");
    r.planned_ns = booked;
    r.status = TicketStatus::admitted;
  }

  // A new head counts from its arrival or `now`, whichever is later.
  void new_head_from(Nanos now) {
    if (w_.head != Space::none) {
      Record& h = sp_.at(w_.head);
      h.ref_ns = std::max(h.arrived_ns, now);
    }
  }

  // The queue and the stand-by list (records with status queued and no place in the plan) are
  // two lists of the same kind: linked at the back, unlinked from anywhere.
  void push_back(Link t, Link& head, Link& tail) {
    Record& r = sp_.at(t);
    r.prev = tail;
    r.next = Space::none;
    if (tail != Space::none) sp_.at(tail).next = t; else head = t;
    tail = t;
  }
  void take_out(Link t, Link& head, Link& tail) {
    Record& r = sp_.at(t);
    if (r.prev != Space::none) sp_.at(r.prev).next = r.next; else head = r.next;
    if (r.next != Space::none) sp_.at(r.next).prev = r.prev; else tail = r.prev;
    r.prev = r.next = Space::none;
  }

  void link(Link t) {
    push_back(t, w_.head, w_.tail);
    ++w_.queued;
  }
  // Takes `t` out of the queue; the new head (if any) is woken to take its turn.
  void unlink(Link t) {
    take_out(t, w_.head, w_.tail);
    --w_.queued;
    if (w_.head != Space::none) sp_.notify(w_.head);
  }
  void link_standby(Link t) {
    push_back(t, w_.standby_head, w_.standby_tail);
    sp_.at(t).standing_by = true;
    ++w_.standing;
  }
  void unlink_standby(Link t) {
    take_out(t, w_.standby_head, w_.standby_tail);
    sp_.at(t).standing_by = false;
    --w_.standing;
  }

  Space& sp_;
  Gcra& requests_;
  Gcra& tokens_;
  PlanWords<Link>& w_;
  void (*hook_)(void*) noexcept = nullptr;
  void* context_ = nullptr;
};

}  // namespace omnilimit
