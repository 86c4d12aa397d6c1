// test_schedule_table: Schedule's promises (schedule.hpp) pinned at exact nanosecond instants.
//
// Each table is a list of rows {instant, call, expected result} run in order against one Schedule
// (and the Gcra whose interval it changes), with no thread and no clock: instants are relative to
// kT0 and every change names its own. Pinned: map() moves an instant after the change by
// new/old, rounded up, as Gcra rescales TAT; sleepers follow the changes they missed, so that the
// ones booked before a change and the arrivals booked after it keep their order and spacing; a
// booking that overlapped a change is told so (stable()); only the last 16 changes are kept (a
// sleeper that missed more is lost); close() answers every wait.

#include <cstdint>
#include <vector>

#include "omnilimit/gcra.hpp"
#include "omnilimit/schedule.hpp"
#include "harness.hpp"

namespace {

using namespace omnilimit::test;
using omnilimit::Gcra;
using omnilimit::Reservation;
using omnilimit::Schedule;

constexpr Nanos kT0 = 1'000 * kSec;

Nanos abs_at(Nanos relative) { return relative == kForever ? kForever : kT0 + relative; }
Nanos rel_at(Nanos absolute) { return absolute == kForever ? kForever : absolute - kT0; }

// Schedule::map(ready, at, old, new), row by row (instants relative to kT0). Where the instant is
// after the change, the same rescale done by Gcra::set_interval on a TAT at `ready` must agree,
// except for the 1 ns by which set_interval always moves TAT when the rescale would leave it in
// place (gcra.hpp, "Live changes").
void schedule_table_map() {
  struct MapRow {
    Nanos ready, at, old_interval, new_interval, want;
  };
  const std::vector<MapRow> rows = {
      {1000, 2000, 100, 400, 1000},             // before the change: stays
      {2000, 2000, 100, 400, 2000},             // at the change: stays
      {kForever, 2000, 100, 400, kForever},     // no instant: stays
      {3000, 2000, 100, 400, 6000},             // 1000 after, 4x slower
      {3000, 2000, 400, 100, 2250},             // 1000 after, 4x faster
      {2010, 2000, 3, 2, 2007},                 // ceil(10 * 2 / 3) = 7
      {2000 + 999'999, 2000, 1'000'000, 1, 2001},  // ceil(0.999999) = 1
      {2001, 2000, 3, 1, 2001},                 // ceil(1 / 3) = 1: the instant stays
      {5000, 0, 7, 7, 5000},                    // the same interval
      {1'000 * kSec, 0, 1, 1'000'000'000, kForever},  // saturates
  };
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const MapRow& r = rows[i];
    const Nanos mapped = Schedule::map(abs_at(r.ready), abs_at(r.at), r.old_interval, r.new_interval);
    CHECK_EQ(rel_at(mapped), r.want, "map row ", i + 1);
    if (r.ready <= r.at || r.ready == kForever || r.old_interval == r.new_interval) continue;
    Gcra g(r.old_interval, 1);
    g.hold_until(abs_at(r.ready));  // burst 1: TAT = ready
    g.set_interval(r.new_interval, abs_at(r.at));
    const Nanos tat = g.tat_ns();
    const bool nudged = mapped == abs_at(r.ready) && tat == mapped + 1;
    CHECK(tat == mapped || nudged, "map row ", i + 1, ": Gcra rescaled TAT to ", rel_at(tat), ", map() gave ",
          rel_at(mapped));
  }
}

enum class Op {
  book,      // k = sleeper: epoch(), then Gcra::reserve(1, kForever) at the row's instant; want = ready
  sleeper,   // k = sleeper: epoch(), and ready = x (no booking)
  stable,    // k; want = 1 if no change began since its epoch
  follow,    // k; want = 1 if it could follow, want_ready = its instant after
  wait,      // k; want = the Woke (only the answers that need no clock: lost, closed)
  change,    // x = the new interval, at the row's instant (n times, alternating with the old one)
  epoch,     // want
  close,
};

struct Row {
  Nanos at;  // relative to kT0
  Op op;
  int k;
  Nanos x;
  std::int64_t want;
  Nanos want_ready = 0;
};

struct Sleeper {
  Nanos ready = 0;
  std::uint64_t epoch = 0;
};

// Runs `rows` in order against a fresh Schedule over a fresh Gcra(interval, 1).
void run_table(const char* table, Nanos interval, const std::vector<Row>& rows) {
  Gcra g(interval, 1);
  Schedule schedule;
  std::vector<Sleeper> sleepers(8);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    const Nanos now = abs_at(row.at);
    const std::size_t line = i + 1;
    Sleeper* s = row.k >= 0 ? &sleepers.at(static_cast<std::size_t>(row.k)) : nullptr;
    switch (row.op) {
      case Op::book: {
        s->epoch = schedule.epoch();
        const Reservation r = g.reserve(1, kForever, now);
        CHECK(r.admitted, table, " row ", line, ": the booking was refused");
        s->ready = r.ready_at_ns;
        CHECK_EQ(rel_at(s->ready), row.want, table, " row ", line, ": sleeper ", row.k, " booked");
        break;
      }
      case Op::sleeper:
        s->epoch = schedule.epoch();
        s->ready = abs_at(row.x);
        break;
      case Op::stable: CHECK_EQ(schedule.stable(s->epoch) ? 1 : 0, row.want, table, " row ", line); break;
      case Op::follow: {
        const bool ok = schedule.follow(s->ready, s->epoch);
        CHECK_EQ(ok ? 1 : 0, row.want, table, " row ", line, ": sleeper ", row.k, " follows");
        if (ok) CHECK_EQ(rel_at(s->ready), row.want_ready, table, " row ", line, ": sleeper ", row.k, "'s instant");
        break;
      }
      case Op::wait: {
        const Schedule::Woke woke = schedule.wait(s->ready, s->epoch, kForever);
        CHECK_EQ(static_cast<std::int64_t>(woke), row.want, table, " row ", line, " (1 deadline, 2 lost, 3 closed)");
        break;
      }
      case Op::change: {
        const Nanos other = g.interval_ns();
        for (std::int64_t n = 0; n < row.want; ++n) {
          const Nanos next = n % 2 == 0 ? row.x : other;
          schedule.change(now, next, [&] {
            const Nanos old = g.interval_ns();
            g.set_interval(next, now);
            return old;
          });
        }
        break;
      }
      case Op::epoch: CHECK_EQ(static_cast<std::int64_t>(schedule.epoch()), row.want, table, " row ", line); break;
      case Op::close: schedule.close(); break;
    }
  }
}

constexpr std::int64_t kLost = static_cast<std::int64_t>(Schedule::Woke::lost);
constexpr std::int64_t kClosed = static_cast<std::int64_t>(Schedule::Woke::closed);

// T = 1000 ns, burst 1: each booking goes one interval after the last. Two changes (4x slower at
// 500, 4x faster at 6000): the sleepers booked before each change move as TAT does, and the
// arrivals after it go right behind the last of them, at the new pace.
void schedule_table_follow() {
  run_table("sleepers follow the changes", 1000, {
      {0, Op::book, 0, 0, 0},
      {0, Op::book, 1, 0, 1000},
      {0, Op::book, 2, 0, 2000},
      {0, Op::stable, 2, 0, 1},
      {500, Op::change, -1, 4000, 1},   // 2500 ns owed become 10000: TAT 10500
      {500, Op::stable, 2, 0, 0},       // a change began since sleeper 2 booked
      {500, Op::epoch, -1, 0, 2},
      {500, Op::follow, 0, 0, 1, 0},    // its instant was before the change
      {500, Op::follow, 1, 0, 1, 2500},
      {500, Op::follow, 2, 0, 1, 6500},
      {500, Op::book, 3, 0, 10'500},    // one new interval after sleeper 2
      {6000, Op::change, -1, 1000, 1},  // 8500 ns owed become 2125: TAT 8125
      {6000, Op::follow, 2, 0, 1, 6125},
      {6000, Op::follow, 3, 0, 1, 7125},
      {6000, Op::follow, 1, 0, 1, 2500},  // before the second change: stays
      {6000, Op::book, 4, 0, 8125},     // one new interval after sleeper 3
      {6000, Op::epoch, -1, 0, 4},
  });
}

// T = 1000 ns. Only the last 16 changes are kept: a sleeper that missed 16 follows them, one that
// missed 17 is lost (its wait says so, without sleeping). close() answers every wait.
void schedule_table_kept_and_close() {
  run_table("the last 16 changes, and close", 1000, {
      {0, Op::sleeper, 0, 100'000, 0},
      {0, Op::change, -1, 2000, 16},       // 2000, 1000, ...: back to 1000
      {0, Op::epoch, -1, 0, 32},
      {0, Op::follow, 0, 0, 1, 100'000},   // x2, /2, ... 16 times
      {0, Op::sleeper, 1, 100'000, 0},
      {0, Op::change, -1, 2000, 17},       // ends at 2000
      {0, Op::follow, 1, 0, 0},
      {0, Op::wait, 1, 0, kLost},
      {0, Op::sleeper, 2, 100'000, 0},
      {50'000, Op::change, -1, 1000, 1},   // 2x faster from 50000
      {50'000, Op::follow, 2, 0, 1, 75'000},
      {50'000, Op::sleeper, 3, 100'000, 0},
      {50'000, Op::close, -1, 0, 0},
      {50'000, Op::wait, 3, 0, kClosed},
      {50'000, Op::wait, 1, 0, kClosed},   // closed comes before lost
      {50'000, Op::epoch, -1, 0, 68},
  });
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"schedule table: map() as Gcra rescales TAT", schedule_table_map},
      {"schedule table: sleepers follow the changes", schedule_table_follow},
      {"schedule table: the last 16 changes, and close", schedule_table_kept_and_close},
  });
}
