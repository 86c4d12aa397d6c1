// RatePolicy: what a rate limiter's caller does next, decided at explicit instants; and the
// layout a rate limiter shares between processes.
//
// An acquire() is a loop of looks at the limiter. Each look meets a pause (wait for its end, or
// refuse), or books its turn in the bucket (go now, sleep until the instant booked, book again,
// or find the turn beyond the deadline), and a caller whose turn lies beyond its deadline stands
// by until something changes or refuses at once (fail_fast, or no time left). The functions here
// make those decisions from what the caller saw and the instant it saw it, and return what to do
// next; they read no clock and wait for nothing. Waiting (with the GIL released, on a futex, a
// condition variable or an event loop's timer) belongs to the caller, as does what the caller
// reports. So every rule can be run over fixed instants.
//
// Thread-safety: the functions are pure. LatestReservations belongs to one thread (each thread
// keeps its own); Counted only touches its atomic.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>

#include "omnilimit/clock.hpp"
#include "omnilimit/dual_bucket.hpp"
#include "omnilimit/gcra.hpp"
#include "omnilimit/histogram.hpp"
#include "omnilimit/pause.hpp"
#include "omnilimit/schedule.hpp"
#include "omnilimit/shm_segment.hpp"
#include "omnilimit/standby.hpp"
#include "omnilimit/window.hpp"

namespace omnilimit {

// ---- the shared layout -------------------------------------------------------------------------

// What the processes sharing a rate limiter share: the payload of its segment
// (rate_limit_backend: shm). Every member is lock-free atomics, built in place by the segment's
// creator. An in-process limiter keeps one of its own.
struct RateShared {
  GcraWords bucket;
  Pause pause;             // the provider said "stop until" (on_rate_limited): every process waits
  RequestWindow recorded;  // record_request() calls in the last minute: the current RPM
  alignas(64) std::atomic<std::int64_t> total_acquired{0};
  std::atomic<std::int64_t> blocked{0};
  std::atomic<std::int64_t> denied{0};  // refused without a wait: timeout=0, or fail_fast
  std::atomic<std::int64_t> tokens_admitted{0};  // with a token budget: the tokens admitted callers reserved
  std::atomic<std::int64_t> tokens_settled{0};   // and those recorded as used (record_request)
  WaitHistogram waits;                  // how long the callers that had to wait waited
  alignas(64) StandbyWords standby;     // callers whose turn lies past their deadline (standby.hpp)
  alignas(64) ScheduleWords schedule;   // the rate changes every process's sleepers follow (schedule.hpp)
};
inline constexpr std::uint32_t kRateSegmentKind = 1;
// The layout fingerprint: 2 added `standby`, 3 a ProcessWord owner, 4 a WaitHistogram of 32 buckets per
// power of two and its maximum, 5 `schedule` (a rate change moves every process's sleepers), 6 the
// token counters and the wait histogram's sum.
inline constexpr std::uint64_t kRateLayout = 6;

// What the processes sharing a rate limiter with a token budget share: the rate limiter's words
// (its bucket is the request half of the budget), the token bucket, the tokens recorded, and the
// queue of callers waiting for both (dual_bucket.hpp).
struct TokenShared {
  RateShared rate;
  GcraWords tokens;
  RequestWindow tokens_used;  // tokens recorded in the last minute: the current TPM
  SharedQueue queue;
};
inline constexpr std::uint32_t kTokenSegmentKind = 3;
inline constexpr std::uint64_t kTokenLayout = 3;  // 2: RateShared's `schedule`, 3: its token counters

// The segment of a shared rate limiter: opened, or created with fresh words for this rate (and
// token budget: `token_interval_ns` > 0). A limiter refused for its configuration opens nothing
// (opening an existing segment applies the limits to every process). An empty name: not shared
// (nullptr). A limiter with a token budget and one without are different kinds: one cannot open
// the other's segment.
inline std::unique_ptr<SharedSegment> open_rate_segment(const std::string& name, Nanos interval_ns,
                                                        std::int64_t burst, Nanos token_interval_ns,
                                                        std::int64_t token_burst) {
  if (name.empty()) return nullptr;
  if (token_interval_ns > 0) {
    return std::make_unique<SharedSegment>(name, kTokenSegmentKind, sizeof(TokenShared), kTokenLayout,
                                           [&](void* at) {
                                             auto* shared = new (at) TokenShared();
                                             Gcra::init_words(shared->rate.bucket, interval_ns, burst);
                                             Gcra::init_words(shared->tokens, token_interval_ns, token_burst);
                                           });
  }
  return std::make_unique<SharedSegment>(name, kRateSegmentKind, sizeof(RateShared), kRateLayout, [&](void* at) {
    auto* shared = new (at) RateShared();
    Gcra::init_words(shared->bucket, interval_ns, burst);
  });
}
// The rate limiter's part of a segment (either kind).
inline RateShared& rate_part(SharedSegment& segment, bool token_budget) noexcept {
  if (token_budget) return static_cast<TokenShared*>(segment.payload())->rate;
  return *static_cast<RateShared*>(segment.payload());
}
inline TokenShared* token_part(SharedSegment* segment, bool token_budget) noexcept {
  return segment != nullptr && token_budget ? static_cast<TokenShared*>(segment->payload()) : nullptr;
}

// The state of a limiter that is not shared (nullptr when it is).
inline std::unique_ptr<RateShared> local_rate_state(bool shared, Nanos interval_ns, std::int64_t burst) {
  if (shared) return nullptr;
  auto state = std::make_unique<RateShared>();
  Gcra::init_words(state->bucket, interval_ns, burst);
  return state;
}

// ---- the decisions -----------------------------------------------------------------------------

struct RatePolicy {
  // A sleeper that wakes more than this after its instant (and more than one interval) has missed
  // its turn: it books again instead of going. Going would spend a slot from the past, and a busy
  // event loop or an overloaded machine wakes many sleepers late at once: together they would
  // burst. Within the tolerance a late sleeper keeps its slot, so ordinary wake-up latency costs
  // nothing; beyond it, lateness costs capacity, never a burst: a window of any length W then sees
  // at most burst + (W + tolerance) / interval admissions. This is the rule of a limiter without a
  // WindowGuard (one shared between processes, or with a token budget).
  static constexpr Nanos kLateToleranceNs = 5'000'000;
  // With a WindowGuard (an in-process limiter without a token budget), no second and no minute
  // can hold more than the bucket allows, however late its sleepers go (window_guard.hpp). So a
  // sleeper may keep its slot up to this late: a stall of the loop or the process (a garbage
  // collection, a slow callback) no longer throws away the instants it did not use; the callers
  // it held up go afterwards, as fast as the last second has room. Later than this, it books
  // again. Windows shorter than a second are not bounded then (see window_guard.hpp).
  static constexpr Nanos kCatchUpNs = 100'000'000;

  // The late-wake rule: a sleeper booked for `ready_ns` on a bucket of interval `interval_ns`,
  // awake at `now`, books again. `guarded`: the limiter has a WindowGuard.
  static constexpr bool missed_turn(Nanos interval_ns, Nanos ready_ns, Nanos now, bool guarded = false) noexcept {
    return now - ready_ns > std::max(interval_ns, guarded ? kCatchUpNs : kLateToleranceNs);
  }
  static bool missed_turn(const Gcra& bucket, Nanos ready_ns, Nanos now, bool guarded = false) noexcept {
    return missed_turn(bucket.interval_ns(), ready_ns, now, guarded);
  }

  // The longest wait a caller at `now` may book: up to its deadline (kForever: any).
  static constexpr Nanos max_wait(Nanos now, Nanos deadline_ns) noexcept {
    return deadline_ns == kForever ? kForever : std::max<Nanos>(deadline_ns - now, 0);
  }

  // What a booking in a lone Gcra (reserve(1, max_wait(...))) means for its caller. `stable`: no
  // rate change overlapped it (Schedule::stable).
  enum class Booked {
    beyond_deadline,  // nothing booked: the turn lies past the deadline
    go,               // admitted at once
    again,            // a rate change overlapped the booking: the slot is spent, book again
    sleep,            // sleep until r.ready_at_ns (moved by rate changes meanwhile)
  };
  // `stable()` is asked only about a booked wait (it reads the schedule's sequence).
  template <class Stable>
  static constexpr Booked after_booking(const Reservation& r, Stable&& stable) noexcept(noexcept(stable())) {
    if (!r.admitted) return Booked::beyond_deadline;
    if (r.wait_ns == 0) return Booked::go;
    if (!stable()) return Booked::again;
    return Booked::sleep;
  }
  static constexpr Booked after_booking(const Reservation& r, bool stable) noexcept {
    return after_booking(r, [stable] { return stable; });
  }

  // How one look at the budget ended (errors, such as an interrupted wait, are the caller's).
  enum class Turn {
    went,             // admitted (at once, or after sleeping until its instant)
    again,            // look again at once (a rate change overlapped the booking, the sleeper lost
                      // track of the changes, or it woke too late: see kLateToleranceNs)
    beyond_deadline,  // the turn lies past the deadline (or the deadline came): nothing is held
  };
  // What acquire() does after a look.
  struct Step {
    enum class Kind {
      go,        // admitted: count it and return True
      again,     // look again at once
      stand_by,  // book nothing; wait until `until_ns` or a change, then look again
      refuse,    // return False (timed out, or refused at once)
    };
    Kind kind = Kind::again;
    Nanos until_ns = 0;  // stand_by: until when

    friend constexpr bool operator==(const Step& a, const Step& b) noexcept {
      return a.kind == b.kind && (a.kind != Kind::stand_by || a.until_ns == b.until_ns);
    }
    friend constexpr bool operator!=(const Step& a, const Step& b) noexcept { return !(a == b); }
  };

  // A look that met a pause: nothing is admitted before its end, and this caller may go at `go_at`
  // (the end plus its jitter). It reserves only then, so the callers released by the pause are
  // spaced at the pace from its end. Refused when `go_at` lies past the deadline and it may not
  // stand by (`fail_fast`, or the deadline has come); else it stands by until `go_at` or its
  // deadline, whichever comes first.
  static constexpr Step under_pause(Nanos go_at, Nanos now, Nanos deadline_ns, bool fail_fast) noexcept {
    if (go_at > deadline_ns && (fail_fast || now >= deadline_ns)) return Step{Step::Kind::refuse};
    return Step{Step::Kind::stand_by, std::min(go_at, deadline_ns)};
  }

  // A look that took its turn, at `now` (read after the turn). `pause_end`: the end of the pause
  // in effect at `now` (0: none), read only for a turn that went: a pause declared while the
  // caller slept voids its slot (the provider wants nothing before the pause's end), so it looks
  // again and waits for the end. A turn beyond the deadline is refused when the caller may not
  // stand by (`fail_fast`, or the deadline has come); else it stands by until its deadline.
  static constexpr Step after_turn(Turn turn, Nanos pause_end, Nanos now, Nanos deadline_ns,
                                   bool fail_fast) noexcept {
    switch (turn) {
      case Turn::went: return Step{pause_end == 0 ? Step::Kind::go : Step::Kind::again};
      case Turn::again: return Step{Step::Kind::again};
      case Turn::beyond_deadline: break;
    }
    if (fail_fast || now >= deadline_ns) return Step{Step::Kind::refuse};
    return Step{Step::Kind::stand_by, deadline_ns};
  }

  // How long after `now` a caller's turn comes: `bucket_wait` behind the bucket (or the queue),
  // and no sooner than the end of a pause ending at `pause_end` (0: none).
  static constexpr Nanos turn_wait(Nanos bucket_wait, Nanos pause_end, Nanos now) noexcept {
    return pause_end != 0 ? std::max(bucket_wait, pause_end - now) : bucket_wait;
  }
  // Whether a turn `wait` after `now` comes by `deadline_ns` (one at the deadline does).
  static constexpr bool turn_within(Nanos wait, Nanos now, Nanos deadline_ns) noexcept {
    return wait <= deadline_ns - std::min(deadline_ns, now);
  }
};

// ---- per-thread bookkeeping --------------------------------------------------------------------

// Each thread's latest unsettled token reservation per limiter (a few limiters per thread; the
// oldest entry makes room for a new limiter, and its reservation then stands as reserved).
// Limiter ids are never 0.
class LatestReservations {
 public:
  void remember(std::uint64_t limiter, std::int64_t tokens) noexcept {
    Entry* slot = nullptr;
    for (Entry& e : entries_) {
      if (e.limiter == limiter) slot = &e;
    }
    if (slot == nullptr) {
      slot = &entries_[next_];
      next_ = (next_ + 1) % kTracked;
    }
    *slot = Entry{limiter, tokens};
  }
  // The tokens of the thread's latest reservation on `limiter`, forgotten; nullopt if none.
  std::optional<std::int64_t> take(std::uint64_t limiter) noexcept {
    for (Entry& e : entries_) {
      if (e.limiter == limiter) {
        e.limiter = 0;
        return e.tokens;
      }
    }
    return std::nullopt;
  }

  static constexpr int kTracked = 4;

 private:
  struct Entry {
    std::uint64_t limiter = 0;
    std::int64_t tokens = 0;
  };
  Entry entries_[kTracked];
  int next_ = 0;
};

// Counts something in an atomic for as long as it lives.
class Counted {
 public:
  explicit Counted(std::atomic<std::int64_t>& count) : count_(count) { count_.fetch_add(1, std::memory_order_relaxed); }
  ~Counted() { count_.fetch_sub(1, std::memory_order_relaxed); }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;

 private:
  std::atomic<std::int64_t>& count_;
};

}  // namespace omnilimit
