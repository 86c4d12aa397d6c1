// test_gcra_table: Gcra's promises (gcra.hpp) pinned at exact nanosecond instants.
//
// Each table is a list of rows {instant, call, expected result} run in order against one bucket,
// with no thread and no clock: every call takes its `now` from the row. Instants are written
// relative to kT0 (far from 0, as a real clock reading is). The stress scenarios in test_gcra.cpp
// prove the bounds under concurrency; these pin the arithmetic behind them: the burst, the refill,
// reserve and refund, debt, set_interval / set_burst mid-way, hold_until, limit_available,
// charge / give_back, and saturation at kForever.

#include <cstdint>
#include <vector>

#include "omnilimit/gcra.hpp"
#include "harness.hpp"

namespace {

using namespace omnilimit::test;
using omnilimit::Gcra;
using omnilimit::Reservation;

constexpr Nanos kT0 = 1'000 * kSec;

enum class Op {
  try_acquire,      // n = cost; want = 1 admitted, 0 refused
  reserve,          // n = cost, x = max_wait; admitted, want = wait_ns (the reservation is kept)
  reserve_refused,  // n = cost, x = max_wait; not admitted, want = the wait it would have needed
  refund,           // n = index of a kept reservation (refused ones count); want = 1 given back
  available,        // want = tokens_available
  wait_for,         // n = cost; want = wait_for
  tat,              // want = TAT, relative to kT0 (kForever as is)
  set_interval,     // x = the new interval (at the row's instant)
  set_burst,        // n = the new burst
  hold_until,       // x = the end, relative to kT0 (kForever as is)
  limit_available,  // n = tokens
  charge,           // n = cost
  give_back,        // n = cost
};

struct Row {
  Nanos at;  // relative to kT0
  Op op;
  std::int64_t n;
  Nanos x;
  std::int64_t want;
};

Nanos abs_at(Nanos relative) { return relative == kForever ? kForever : kT0 + relative; }
Nanos rel_at(Nanos absolute) { return absolute == kForever ? kForever : absolute - kT0; }

// Runs `rows` in order against a fresh Gcra(interval, burst).
void run_table(const char* table, Nanos interval, std::int64_t burst, const std::vector<Row>& rows) {
  Gcra g(interval, burst);
  std::vector<Reservation> kept;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    const Nanos now = abs_at(row.at);
    switch (row.op) {
      case Op::try_acquire:
        CHECK_EQ(g.try_acquire(row.n, now) ? 1 : 0, row.want, table, " row ", i + 1);
        break;
      case Op::reserve:
      case Op::reserve_refused: {
        const Reservation r = g.reserve(row.n, row.x, now);
        kept.push_back(r);
        CHECK_EQ(r.admitted, row.op == Op::reserve, table, " row ", i + 1);
        CHECK_EQ(r.wait_ns, row.want, table, " row ", i + 1, ": the wait");
        if (r.admitted) CHECK_EQ(r.ready_at_ns, omnilimit::saturating_add(now, r.wait_ns), table, " row ", i + 1, ": ready_at");
        break;
      }
      case Op::refund:
        CHECK_EQ(g.refund(kept.at(static_cast<std::size_t>(row.n)), now) ? 1 : 0, row.want, table, " row ", i + 1);
        break;
      case Op::available: CHECK_EQ(g.tokens_available(now), row.want, table, " row ", i + 1); break;
      case Op::wait_for: CHECK_EQ(g.wait_for(row.n, now), row.want, table, " row ", i + 1); break;
      case Op::tat: CHECK_EQ(rel_at(g.tat_ns()), row.want, table, " row ", i + 1); break;
      case Op::set_interval: g.set_interval(row.x, now); break;
      case Op::set_burst: g.set_burst(row.n); break;
      case Op::hold_until: g.hold_until(abs_at(row.x)); break;
      case Op::limit_available: g.limit_available(row.n, now); break;
      case Op::charge: g.charge(row.n, now); break;
      case Op::give_back: g.give_back(row.n, now); break;
    }
  }
}

constexpr std::int64_t kNo = 0, kYes = 1;

// T = 1000 ns, B = 3. A fresh bucket is full; it empties by the burst and refills one token per
// interval, never beyond the burst; a cost above the burst is never admitted by try_acquire.
void gcra_table_burst_and_refill() {
  run_table("burst and refill", 1000, 3, {
      {0, Op::available, 0, 0, 3},
      {0, Op::try_acquire, 1, 0, kYes},
      {0, Op::try_acquire, 1, 0, kYes},
      {0, Op::try_acquire, 1, 0, kYes},
      {0, Op::try_acquire, 1, 0, kNo},       // the burst is spent
      {0, Op::available, 0, 0, 0},
      {999, Op::try_acquire, 1, 0, kNo},     // 1 ns before the first token is back
      {999, Op::wait_for, 1, 0, 1},
      {1000, Op::try_acquire, 1, 0, kYes},   // one interval later: one token
      {1000, Op::available, 0, 0, 0},
      {2500, Op::available, 0, 0, 1},        // 1.5 intervals later: one whole token
      {2500, Op::try_acquire, 2, 0, kNo},
      {2500, Op::wait_for, 2, 0, 500},
      {3000, Op::try_acquire, 2, 0, kYes},
      {3000, Op::tat, 0, 0, 6000},
      {100'000, Op::available, 0, 0, 3},     // a long idle time refills only up to the burst
      {100'000, Op::try_acquire, 3, 0, kYes},
      {100'000, Op::try_acquire, 1, 0, kNo},
      {200'000, Op::try_acquire, 4, 0, kNo},  // more than the burst, on a full bucket
      {200'000, Op::wait_for, 4, 0, 1000},    // ... would go into debt for one interval
  });
}

// T = 1000 ns, B = 2. reserve() commits only a wait within max_wait and serves reservations in
// order; refund() gives back only the latest reservation, only before its time, never a refused
// one; a cost above the burst goes into debt ((cost - B) intervals from a full bucket).
void gcra_table_reserve_and_refund() {
  run_table("reserve and refund", 1000, 2, {
      {0, Op::reserve, 1, 0, 0},                   // #0
      {0, Op::reserve, 1, 0, 0},                   // #1
      {0, Op::reserve_refused, 1, 999, 1000},      // #2: 1 ns short of its max_wait; nothing taken
      {0, Op::reserve, 1, 1000, 1000},             // #3
      {0, Op::reserve, 1, 5000, 2000},             // #4
      {0, Op::refund, 3, 0, kNo},                  // #4 is queued behind #3
      {0, Op::refund, 2, 0, kNo},                  // a refused reservation holds nothing
      {500, Op::refund, 4, 0, kYes},               // the latest, before its time
      {500, Op::tat, 0, 0, 3000},
      {500, Op::reserve, 1, kForever, 1500},       // #5 takes #4's slot again: ready at 2000
      {2000, Op::refund, 5, 0, kNo},               // its time has come
      {2000, Op::refund, 5, 0, kNo},
      {10'000, Op::reserve, 3, kForever, 1000},    // #6: cost 3 > B 2 on a full bucket: 1 interval of debt
      {10'000, Op::available, 0, 0, 0},
      {10'000, Op::reserve_refused, 1, 0, 2000},   // #7
      {10'999, Op::refund, 6, 0, kYes},            // 1 ns before its time
      {10'999, Op::available, 0, 0, 2},
      {10'999, Op::tat, 0, 0, 10'000},
  });
}

// T = 1000 ns, B = 4. set_interval keeps the tokens owed at its instant owed, at the new pace
// (TAT - now scaled by new/old, rounded up); the same interval again changes nothing.
void gcra_table_set_interval() {
  run_table("set_interval mid-way", 1000, 4, {
      {0, Op::try_acquire, 4, 0, kYes},
      {1000, Op::available, 0, 0, 1},
      {1000, Op::set_interval, 0, 2000, 0},  // 3 tokens owed: 3000 ns at the old pace, 6000 at the new
      {1000, Op::tat, 0, 0, 7000},
      {1000, Op::available, 0, 0, 1},
      {1000, Op::try_acquire, 1, 0, kYes},
      {1000, Op::try_acquire, 1, 0, kNo},
      {1000, Op::wait_for, 1, 0, 2000},      // the next token comes at the new pace
      {3000, Op::try_acquire, 1, 0, kYes},
      {3000, Op::set_interval, 0, 500, 0},   // 4 tokens owed: 8000 ns become 2000
      {3000, Op::tat, 0, 0, 5000},
      {3000, Op::available, 0, 0, 0},
      {3500, Op::available, 0, 0, 1},
      {5001, Op::try_acquire, 1, 0, kYes},   // TAT 5001 + 500
      {5002, Op::set_interval, 0, 7, 0},     // 499 ns owed at 500/token: ceil(499 * 7 / 500) = 7 ns
      {5002, Op::tat, 0, 0, 5009},
      {5002, Op::set_interval, 0, 7, 0},     // the same interval: TAT stays (else 2 would be owed)
      {5002, Op::available, 0, 0, 3},
      {5009, Op::set_interval, 0, 1000, 0},  // nothing owed, TAT == now: moved by 1 ns ("Live changes")
      {5009, Op::available, 0, 0, 3},        // ... so one token is owed for that 1 ns
  });
}

// T = 1000 ns, B = 3. hold_until(E): nothing before E, the first request at E exactly, then the
// pace from an empty bucket; an earlier hold changes nothing. limit_available(n): at most n left
// now; a cap at or above what the bucket holds (or the burst) changes nothing.
void gcra_table_hold_and_limit() {
  run_table("hold_until and limit_available", 1000, 3, {
      {0, Op::available, 0, 0, 3},
      {0, Op::hold_until, 0, 5000, 0},
      {0, Op::tat, 0, 0, 7000},
      {0, Op::available, 0, 0, 0},
      {4999, Op::try_acquire, 1, 0, kNo},
      {4999, Op::wait_for, 1, 0, 1},
      {5000, Op::try_acquire, 1, 0, kYes},  // at E exactly
      {5000, Op::try_acquire, 1, 0, kNo},   // then from an empty bucket
      {5000, Op::hold_until, 0, 3000, 0},   // ends earlier: ignored
      {5000, Op::tat, 0, 0, 8000},
      {6000, Op::try_acquire, 1, 0, kYes},
      {20'000, Op::available, 0, 0, 3},
      {20'000, Op::limit_available, 1, 0, 0},
      {20'000, Op::available, 0, 0, 1},
      {20'000, Op::limit_available, 2, 0, 0},  // holds 1 <= 2: left alone
      {20'000, Op::limit_available, 5, 0, 0},  // above the burst: left alone
      {20'000, Op::available, 0, 0, 1},
      {20'000, Op::limit_available, 0, 0, 0},
      {20'000, Op::wait_for, 1, 0, 1000},
      {21'000, Op::try_acquire, 1, 0, kYes},
  });
}

// T = 1000 ns, B = 4. charge() takes tokens whatever the bucket holds (debt beyond the burst);
// give_back() returns them, never beyond a full bucket; set_burst() keeps TAT.
void gcra_table_charge_give_back_burst() {
  run_table("charge, give_back and set_burst", 1000, 4, {
      {0, Op::try_acquire, 2, 0, kYes},
      {0, Op::charge, 3, 0, 0},         // 5 tokens owed, one more than the burst
      {0, Op::available, 0, 0, 0},
      {0, Op::wait_for, 1, 0, 2000},
      {0, Op::give_back, 2, 0, 0},
      {0, Op::available, 0, 0, 1},
      {0, Op::give_back, 10, 0, 0},     // more than was owed: full, no more
      {0, Op::tat, 0, 0, 0},
      {0, Op::available, 0, 0, 4},
      {0, Op::give_back, 1, 0, 0},      // already full
      {0, Op::tat, 0, 0, 0},
      {0, Op::try_acquire, 4, 0, kYes},
      {0, Op::set_burst, 2, 0, 0},      // TAT stays: 4 owed, burst 2
      {2000, Op::available, 0, 0, 0},
      {3000, Op::available, 0, 0, 1},
      {3000, Op::set_burst, 6, 0, 0},   // 1 owed, burst 6
      {3000, Op::available, 0, 0, 5},
      {3000, Op::try_acquire, 5, 0, kYes},
      {3000, Op::try_acquire, 1, 0, kNo},
  });
}

// T = 1000 ns, B = 2. A TAT that reaches kForever stays there and admits nothing more; costs
// whose wait does not fit in 64 bits report kForever.
void gcra_table_saturation() {
  constexpr std::int64_t kHuge = std::int64_t{1} << 62;
  run_table("saturation", 1000, 2, {
      {0, Op::reserve_refused, kHuge, kForever - 1, kForever},  // kHuge * T does not fit
      {0, Op::tat, 0, 0, 0 - kT0},                               // nothing taken: still never used
      {0, Op::available, 0, 0, 2},
      {0, Op::hold_until, 0, kForever, 0},                       // + (B - 1) * T saturates
      {0, Op::tat, 0, 0, kForever},
      {0, Op::try_acquire, 1, 0, kNo},
      {0, Op::reserve_refused, 1, kForever, kForever},
      {0, Op::available, 0, 0, 0},
      {0, Op::wait_for, 1, 0, kForever},
      {0, Op::give_back, 5, 0, 0},
      {0, Op::set_interval, 0, 2000, 0},  // slower: still saturated
      {0, Op::tat, 0, 0, kForever},
      {0, Op::set_interval, 0, 1, 0},  // faster: still saturated (the debt is not rescaled)
      {0, Op::tat, 0, 0, kForever},
      {0, Op::reserve_refused, 1, kForever, kForever},
  });
}

// Gcra::interval_for rounds the interval up to whole ns (never admitting more than the rate).
void gcra_interval_for() {
  CHECK_EQ(Gcra::interval_for(3, 1.0), 333'333'334);
  CHECK_EQ(Gcra::interval_for(6000, 60.0), 10'000'000);
  CHECK_EQ(Gcra::interval_for(1e12, 1.0), 1);  // faster than one per ns: one per ns
  CHECK_EQ(Gcra::interval_for(1, 1e300), kForever);
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"gcra table: burst and refill", gcra_table_burst_and_refill},
      {"gcra table: reserve and refund", gcra_table_reserve_and_refund},
      {"gcra table: set_interval mid-way", gcra_table_set_interval},
      {"gcra table: hold_until and limit_available", gcra_table_hold_and_limit},
      {"gcra table: charge, give_back and set_burst", gcra_table_charge_give_back_burst},
      {"gcra table: saturation at kForever", gcra_table_saturation},
      {"gcra: interval_for rounds up", gcra_interval_for},
  });
}
