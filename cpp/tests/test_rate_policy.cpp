// test_rate_policy: RatePolicy's decisions (rate_policy.hpp) at fixed instants, in tables:
//   * the late-wake rule (missed_turn, kLateToleranceNs; kCatchUpNs with a WindowGuard);
//   * how long a caller may book (max_wait);
//   * a first look at a lone Gcra, caller after caller: go, sleep until X, book again, stand by
//     until the deadline, or refuse (after_booking, then after_turn for a turn out of reach);
//   * a look that meets a pause (under_pause) and what a turn leads to (after_turn);
//   * the predicted turn and whether it comes by a deadline (turn_wait, turn_within);
//   * LatestReservations (per-thread reservation bookkeeping) and Counted;
//   * the shared layout's fixed points (RateShared, kRateLayout, the segment helpers).
// Times are ms written as ns (kMs); the first look is at 1 s, so that a bucket's TAT 0 ("never
// used") lies in the past.
#include <cstdint>
#include <cstdio>
#include <optional>
#include <stdexcept>

#include "harness.hpp"
#include "omnilimit/gcra.hpp"
#include "omnilimit/pause.hpp"
#include "omnilimit/rate_policy.hpp"

namespace {

using omnilimit::Counted;
using omnilimit::Gcra;
using omnilimit::kForever;
using omnilimit::LatestReservations;
using omnilimit::Nanos;
using omnilimit::RatePolicy;
using omnilimit::Reservation;
using Booked = RatePolicy::Booked;
using Step = RatePolicy::Step;
using Kind = RatePolicy::Step::Kind;
using Turn = RatePolicy::Turn;

constexpr Nanos kMs = 1'000'000;

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::go: return "go";
    case Kind::again: return "again";
    case Kind::stand_by: return "stand_by";
    case Kind::refuse: return "refuse";
  }
  return "?";
}

// Prints the row a failed check belongs to (the harness names the line).
void report_row(bool ok, const char* table, int row) {
  if (!ok) std::fprintf(stderr, "  in %s, row %d\n", table, row);
}

void late_wake_rule() {
  static_assert(RatePolicy::kLateToleranceNs == 5 * kMs, "the tolerance is part of the documented bound");
  struct Row {
    Nanos interval_ns, ready_ns, now;
    bool missed;
  };
  const Row rows[] = {
      // An interval below the tolerance: the tolerance decides.
      {1 * kMs, 1000 * kMs, 1000 * kMs, false},                 // on time
      {1 * kMs, 1000 * kMs, 999 * kMs, false},                  // early (a spurious wake)
      {1 * kMs, 1000 * kMs, 1002 * kMs, false},                 // late by two intervals, within the tolerance
      {1 * kMs, 1000 * kMs, 1005 * kMs, false},                 // late by exactly the tolerance
      {1 * kMs, 1000 * kMs, 1005 * kMs + 1, true},              // one ns more
      // An interval above the tolerance: one interval of lateness is allowed.
      {100 * kMs, 1000 * kMs, 1050 * kMs, false},
      {100 * kMs, 1000 * kMs, 1100 * kMs, false},
      {100 * kMs, 1000 * kMs, 1100 * kMs + 1, true},
      // The interval equal to the tolerance.
      {5 * kMs, 1000 * kMs, 1005 * kMs, false},
      {5 * kMs, 1000 * kMs, 1005 * kMs + 1, true},
      // A 1-ns interval (a rate faster than the clock).
      {1, 1000 * kMs, 1000 * kMs + 5 * kMs, false},
      {1, 1000 * kMs, 1000 * kMs + 5 * kMs + 1, true},
  };
  int i = 0;
  for (const Row& r : rows) {
    const bool got = RatePolicy::missed_turn(r.interval_ns, r.ready_ns, r.now);
    CHECK_EQ(got, r.missed);
    report_row(got == r.missed, "late_wake_rule", i++);
  }
  // The Gcra form reads the bucket's interval.
  Gcra bucket(100 * kMs, 3);
  CHECK(!RatePolicy::missed_turn(bucket, 1000 * kMs, 1100 * kMs));
  CHECK(RatePolicy::missed_turn(bucket, 1000 * kMs, 1100 * kMs + 1));
  bucket.set_interval(1 * kMs, 900 * kMs);
  CHECK(!RatePolicy::missed_turn(bucket, 1000 * kMs, 1005 * kMs));
  CHECK(RatePolicy::missed_turn(bucket, 1000 * kMs, 1005 * kMs + 1));
  // With a WindowGuard, a sleeper keeps its slot up to kCatchUpNs (100 ms) late.
  CHECK(!RatePolicy::missed_turn(bucket, 1000 * kMs, 1100 * kMs, true));
  CHECK(RatePolicy::missed_turn(bucket, 1000 * kMs, 1100 * kMs + 1, true));
  CHECK(!RatePolicy::missed_turn(1500 * kMs, 1000 * kMs, 2500 * kMs, true));  // or one interval
  CHECK(RatePolicy::missed_turn(1500 * kMs, 1000 * kMs, 2500 * kMs + 1, true));
}

void max_wait_table() {
  struct Row {
    Nanos now, deadline_ns, max_wait;
  };
  const Row rows[] = {
      {1000 * kMs, kForever, kForever},              // no deadline: any wait
      {1000 * kMs, 1250 * kMs, 250 * kMs},           // up to the deadline
      {1000 * kMs, 1000 * kMs, 0},                   // the deadline is now (a try)
      {1000 * kMs, 900 * kMs, 0},                    // the deadline has passed
      {kForever - 1, kForever - 1, 0},               // at the end of time, a deadline is still a deadline
  };
  int i = 0;
  for (const Row& r : rows) {
    const Nanos got = RatePolicy::max_wait(r.now, r.deadline_ns);
    CHECK_EQ(got, r.max_wait);
    report_row(got == r.max_wait, "max_wait_table", i++);
  }
}

void booking_outcomes() {
  // after_booking alone, on hand-made reservations.
  struct Row {
    bool admitted;
    Nanos wait_ns;
    bool stable;
    Booked booked;
  };
  const Row rows[] = {
      {false, 100 * kMs, true, Booked::beyond_deadline},
      {false, 100 * kMs, false, Booked::beyond_deadline},  // nothing booked: a change does not matter
      {true, 0, true, Booked::go},
      {true, 0, false, Booked::go},                        // at once: a change cannot move "now"
      {true, 1, true, Booked::sleep},
      {true, 1, false, Booked::again},
      {true, kForever - 1, true, Booked::sleep},
  };
  int i = 0;
  for (const Row& r : rows) {
    Reservation res;
    res.admitted = r.admitted;
    res.wait_ns = r.wait_ns;
    const Booked got = RatePolicy::after_booking(res, r.stable);
    CHECK(got == r.booked);
    report_row(got == r.booked, "booking_outcomes", i++);
  }
  // The schedule's stability is asked only about a booked wait.
  int asked = 0;
  const auto stable = [&asked] {
    ++asked;
    return true;
  };
  Reservation res;
  CHECK(RatePolicy::after_booking(res, stable) == Booked::beyond_deadline);
  res.admitted = true;
  CHECK(RatePolicy::after_booking(res, stable) == Booked::go);
  CHECK_EQ(asked, 0);
  res.wait_ns = 5;
  CHECK(RatePolicy::after_booking(res, stable) == Booked::sleep);
  CHECK_EQ(asked, 1);
}

// What a caller does after its first look at a lone Gcra (no pause): go, sleep until X, book
// again, stand by until its deadline, or refuse. Mirrors the order of acquire(): max_wait,
// reserve, after_booking, and after_turn for a turn it took at once or that lies out of reach.
struct Look {
  enum class What { go, sleep, again, stand_by, refuse } what;
  Nanos until_ns;  // sleep: the instant booked; stand_by: until when

  bool operator==(const Look& o) const { return what == o.what && until_ns == o.until_ns; }
};

Look first_look(Gcra& bucket, Nanos now, Nanos deadline_ns, bool fail_fast, bool stable) {
  const Reservation r = bucket.reserve(1, RatePolicy::max_wait(now, deadline_ns), now);
  Step step;
  switch (RatePolicy::after_booking(r, stable)) {
    case Booked::sleep: return Look{Look::What::sleep, r.ready_at_ns};
    case Booked::again: return Look{Look::What::again, 0};
    case Booked::go: step = RatePolicy::after_turn(Turn::went, 0, now, deadline_ns, fail_fast); break;
    case Booked::beyond_deadline:
      step = RatePolicy::after_turn(Turn::beyond_deadline, 0, now, deadline_ns, fail_fast);
      break;
  }
  switch (step.kind) {
    case Kind::go: return Look{Look::What::go, 0};
    case Kind::again: return Look{Look::What::again, 0};
    case Kind::stand_by: return Look{Look::What::stand_by, step.until_ns};
    case Kind::refuse: return Look{Look::What::refuse, 0};
  }
  return Look{Look::What::refuse, -1};
}

void gcra_first_look() {
  using W = Look::What;
  // Burst 2 at 100 ms: 600 RPM. Each row is a caller arriving at `now` with a deadline; the rows
  // run in order on one bucket, so each sees what the rows above it booked.
  Gcra bucket(100 * kMs, 2);
  struct Row {
    Nanos now, deadline_ns;
    bool fail_fast, stable;
    Look want;
    Nanos tat_after;  // the bucket's TAT after the look
  };
  const Row rows[] = {
      {1000 * kMs, 1000 * kMs, false, true, {W::go, 0}, 1100 * kMs},         // a try, within the burst
      {1000 * kMs, 1000 * kMs, false, true, {W::go, 0}, 1200 * kMs},         // the burst's last token
      {1000 * kMs, 1000 * kMs, false, true, {W::refuse, 0}, 1200 * kMs},     // a try: nothing left, refused
      {1000 * kMs, 1050 * kMs, false, true, {W::stand_by, 1050 * kMs}, 1200 * kMs},  // turn at 1100: out of reach
      {1000 * kMs, 1050 * kMs, true, true, {W::refuse, 0}, 1200 * kMs},      // the same, fail_fast
      {1000 * kMs, 1100 * kMs, false, true, {W::sleep, 1100 * kMs}, 1300 * kMs},  // turn at the deadline: booked
      {1000 * kMs, kForever, false, false, {W::again, 0}, 1400 * kMs},       // a rate change overlapped: slot spent
      {1150 * kMs, 1400 * kMs, true, true, {W::sleep, 1300 * kMs}, 1500 * kMs},  // fail_fast books what fits
      {1150 * kMs, 1300 * kMs, false, true, {W::stand_by, 1300 * kMs}, 1500 * kMs},  // turn at 1400 > 1300
      {1300 * kMs, 1300 * kMs, false, true, {W::refuse, 0}, 1500 * kMs},     // the deadline has come
      {1500 * kMs, 1500 * kMs, false, true, {W::go, 0}, 1600 * kMs},         // caught up: one token back
      {2000 * kMs, 2000 * kMs, false, true, {W::go, 0}, 2100 * kMs},         // idle: full again
      {2000 * kMs, 2000 * kMs, true, true, {W::go, 0}, 2200 * kMs},
      {2000 * kMs, 2000 * kMs, true, true, {W::refuse, 0}, 2200 * kMs},
  };
  int i = 0;
  for (const Row& r : rows) {
    const Look got = first_look(bucket, r.now, r.deadline_ns, r.fail_fast, r.stable);
    CHECK(got == r.want);
    CHECK_EQ(bucket.tat_ns(), r.tat_after);
    if (!(got == r.want) || bucket.tat_ns() != r.tat_after) {
      std::fprintf(stderr, "  in gcra_first_look, row %d: got %d until %lld, TAT %lld\n", i,
                   static_cast<int>(got.what), static_cast<long long>(got.until_ns),
                   static_cast<long long>(bucket.tat_ns()));
    }
    ++i;
  }
}

void under_pause_table() {
  struct Row {
    Nanos go_at, now, deadline_ns;
    bool fail_fast;
    Step want;
  };
  const Row rows[] = {
      {2000 * kMs, 1000 * kMs, 5000 * kMs, false, {Kind::stand_by, 2000 * kMs}},  // the end comes first
      {2000 * kMs, 1000 * kMs, 5000 * kMs, true, {Kind::stand_by, 2000 * kMs}},   // fail_fast too: it fits
      {2000 * kMs, 1000 * kMs, 2000 * kMs, true, {Kind::stand_by, 2000 * kMs}},   // the end at the deadline fits
      {2000 * kMs, 1000 * kMs, 1500 * kMs, false, {Kind::stand_by, 1500 * kMs}},  // out of reach: stand by
      {2000 * kMs, 1000 * kMs, 1500 * kMs, true, {Kind::refuse, 0}},              // out of reach, fail_fast
      {2000 * kMs, 1000 * kMs, 1000 * kMs, false, {Kind::refuse, 0}},             // a try (timeout 0)
      {2000 * kMs, 1600 * kMs, 1500 * kMs, false, {Kind::refuse, 0}},             // the deadline has passed
      {2000 * kMs, 1000 * kMs, kForever, false, {Kind::stand_by, 2000 * kMs}},    // no deadline
      {2000 * kMs, 1000 * kMs, kForever, true, {Kind::stand_by, 2000 * kMs}},
  };
  int i = 0;
  for (const Row& r : rows) {
    const Step got = RatePolicy::under_pause(r.go_at, r.now, r.deadline_ns, r.fail_fast);
    CHECK(got == r.want);
    if (got != r.want) {
      std::fprintf(stderr, "  in under_pause_table, row %d: got %s until %lld\n", i, kind_name(got.kind),
                   static_cast<long long>(got.until_ns));
    }
    ++i;
  }
  // With a real Pause at fixed instants: a caller arriving during a 1 s pause may go at its end
  // plus a jitter of at most 1/8 of it.
  omnilimit::Pause pause;
  CHECK(!pause.maybe_active());
  CHECK_EQ(pause.hold_until(2000 * kMs, 1000 * kMs), 2000 * kMs);
  CHECK(pause.maybe_active());
  const Nanos end = pause.end_ns(1200 * kMs);
  CHECK_EQ(end, 2000 * kMs);
  const Nanos go_at = pause.release_time(end);
  CHECK(go_at >= 2000 * kMs && go_at <= 2125 * kMs);
  const Step step = RatePolicy::under_pause(go_at, 1200 * kMs, 3000 * kMs, true);
  CHECK(step.kind == Kind::stand_by && step.until_ns == go_at);
  CHECK_EQ(pause.end_ns(2000 * kMs), 0);  // over at its end: no pause any more
  CHECK(!pause.maybe_active());
}

void after_turn_table() {
  struct Row {
    Turn turn;
    Nanos pause_end, now, deadline_ns;
    bool fail_fast;
    Step want;
  };
  const Row rows[] = {
      {Turn::went, 0, 1000 * kMs, 5000 * kMs, false, {Kind::go, 0}},
      {Turn::went, 0, 6000 * kMs, 5000 * kMs, true, {Kind::go, 0}},             // a turn that went stands
      {Turn::went, 3000 * kMs, 1000 * kMs, 5000 * kMs, false, {Kind::again, 0}},  // paused meanwhile: slot void
      {Turn::went, 3000 * kMs, 1000 * kMs, 1000 * kMs, true, {Kind::again, 0}},   // the pause's look decides
      {Turn::again, 0, 1000 * kMs, 5000 * kMs, false, {Kind::again, 0}},
      {Turn::again, 0, 6000 * kMs, 5000 * kMs, true, {Kind::again, 0}},          // booking again is not a refusal
      {Turn::beyond_deadline, 0, 1000 * kMs, 5000 * kMs, false, {Kind::stand_by, 5000 * kMs}},
      {Turn::beyond_deadline, 0, 1000 * kMs, kForever, false, {Kind::stand_by, kForever}},
      {Turn::beyond_deadline, 0, 1000 * kMs, 5000 * kMs, true, {Kind::refuse, 0}},   // fail_fast
      {Turn::beyond_deadline, 0, 5000 * kMs, 5000 * kMs, false, {Kind::refuse, 0}},  // the deadline came
      {Turn::beyond_deadline, 0, 5001 * kMs, 5000 * kMs, false, {Kind::refuse, 0}},
  };
  int i = 0;
  for (const Row& r : rows) {
    const Step got = RatePolicy::after_turn(r.turn, r.pause_end, r.now, r.deadline_ns, r.fail_fast);
    CHECK(got == r.want);
    if (got != r.want) {
      std::fprintf(stderr, "  in after_turn_table, row %d: got %s until %lld\n", i, kind_name(got.kind),
                   static_cast<long long>(got.until_ns));
    }
    ++i;
  }
}

void turn_within_table() {
  struct Row {
    Nanos bucket_wait, pause_end, now, deadline_ns;
    Nanos wait;
    bool within;
  };
  const Row rows[] = {
      {0, 0, 1000 * kMs, 1000 * kMs, 0, true},                       // at once, deadline now
      {100 * kMs, 0, 1000 * kMs, 1099 * kMs, 100 * kMs, false},
      {100 * kMs, 0, 1000 * kMs, 1100 * kMs, 100 * kMs, true},       // the turn at the deadline comes by it
      {100 * kMs, 1500 * kMs, 1000 * kMs, 1400 * kMs, 500 * kMs, false},  // the pause ends later
      {100 * kMs, 1500 * kMs, 1000 * kMs, 1500 * kMs, 500 * kMs, true},
      {600 * kMs, 1500 * kMs, 1000 * kMs, 1500 * kMs, 600 * kMs, false},  // the bucket is later still
      {0, 0, 1000 * kMs, 900 * kMs, 0, true},                        // past deadline: only "at once" is within
      {1, 0, 1000 * kMs, 900 * kMs, 1, false},
      {kForever / 2, 0, 1000 * kMs, kForever, kForever / 2, true},   // no deadline: any turn that comes
      {kForever, 0, 1000 * kMs, kForever, kForever, false},          // a saturated bucket's never does
  };
  int i = 0;
  for (const Row& r : rows) {
    const Nanos wait = RatePolicy::turn_wait(r.bucket_wait, r.pause_end, r.now);
    const bool within = RatePolicy::turn_within(wait, r.now, r.deadline_ns);
    CHECK_EQ(wait, r.wait);
    CHECK_EQ(within, r.within);
    report_row(wait == r.wait && within == r.within, "turn_within_table", i++);
  }
}

void latest_reservations_table() {
  // Rows run in order on one thread's LatestReservations: remember(limiter, tokens), or
  // take(limiter) expecting `tokens` (-1: nothing).
  enum class Op { remember, take };
  struct Row {
    Op op;
    std::uint64_t limiter;
    std::int64_t tokens;
  };
  static_assert(LatestReservations::kTracked == 4, "the table below fills four entries");
  const Row rows[] = {
      {Op::take, 1, -1},             // nothing yet
      {Op::remember, 1, 500},
      {Op::take, 1, 500},
      {Op::take, 1, -1},             // taken once
      {Op::remember, 1, 10},
      {Op::remember, 1, 20},         // the latest reservation replaces the earlier (same entry)
      {Op::take, 1, 20},
      {Op::take, 1, -1},
      // Limiter 1 used entries 0 and 1 (an entry taken is not reused first): the cursor is at 2.
      {Op::remember, 2, 2},          // entry 2
      {Op::remember, 3, 3},          // entry 3
      {Op::remember, 4, 4},          // entry 0 (the cursor wraps)
      {Op::remember, 5, 5},          // entry 1
      {Op::remember, 6, 6},          // entry 2: limiter 2's reservation makes room (stands as reserved)
      {Op::take, 2, -1},
      {Op::take, 3, 3},
      {Op::take, 4, 4},
      {Op::take, 5, 5},
      {Op::take, 6, 6},
      {Op::remember, 7, 0},          // a reservation of 0 tokens is still one
      {Op::take, 7, 0},
  };
  LatestReservations latest;
  int i = 0;
  for (const Row& r : rows) {
    if (r.op == Op::remember) {
      latest.remember(r.limiter, r.tokens);
    } else {
      const std::optional<std::int64_t> got = latest.take(r.limiter);
      const std::int64_t tokens = got ? *got : -1;
      CHECK_EQ(tokens, r.tokens);
      report_row(tokens == r.tokens, "latest_reservations_table", i);
    }
    ++i;
  }
}

void counted() {
  std::atomic<std::int64_t> count{0};
  {
    const Counted a(count);
    CHECK_EQ(count.load(), 1);
    {
      const Counted b(count);
      CHECK_EQ(count.load(), 2);
    }
    CHECK_EQ(count.load(), 1);
  }
  CHECK_EQ(count.load(), 0);
}

void shared_layout() {
  static_assert(omnilimit::kRateSegmentKind == 1, "the kind other processes check");
  static_assert(omnilimit::kRateLayout == 6, "bump kRateLayout when RateShared changes");
  static_assert(alignof(omnilimit::RateShared) >= 64, "the counters and stand-by words get their own lines");
  // Not shared: a fresh local state with this rate; shared: none.
  const auto local = omnilimit::local_rate_state(false, 100 * kMs, 3);
  CHECK(local != nullptr);
  if (local) {
    CHECK_EQ(local->bucket.interval_ns.load(), 100 * kMs);
    CHECK_EQ(local->bucket.burst.load(), 3);
    CHECK_EQ(local->bucket.tat_ns.load(), 0);
    CHECK_EQ(local->total_acquired.load(), 0);
    CHECK_EQ(reinterpret_cast<std::uintptr_t>(&local->standby) % 64, 0u);
    CHECK_EQ(reinterpret_cast<std::uintptr_t>(&local->total_acquired) % 64, 0u);
  }
  CHECK(omnilimit::local_rate_state(true, 100 * kMs, 3) == nullptr);
  // No name: no segment, with a token budget or without.
  CHECK(omnilimit::open_rate_segment("", 100 * kMs, 3, 0, 1) == nullptr);
  CHECK(omnilimit::open_rate_segment("", 100 * kMs, 3, kMs, 10) == nullptr);
  static_assert(omnilimit::kTokenSegmentKind != omnilimit::kRateSegmentKind, "one kind cannot open the other");
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"late_wake_rule", late_wake_rule},
      {"max_wait_table", max_wait_table},
      {"booking_outcomes", booking_outcomes},
      {"gcra_first_look", gcra_first_look},
      {"under_pause_table", under_pause_table},
      {"after_turn_table", after_turn_table},
      {"turn_within_table", turn_within_table},
      {"latest_reservations_table", latest_reservations_table},
      {"counted", counted},
      {"shared_layout", shared_layout},
  });
}
