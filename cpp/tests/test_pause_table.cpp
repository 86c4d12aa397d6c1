// test_pause_table: Pause's promises (pause.hpp) pinned at exact nanosecond instants.
//
// Each table is a list of rows {instant, call, expected result} run in order against one Pause,
// with no thread and no clock (instants relative to kT0). Pinned: hold_until extends and never
// shortens, an end not after `now` declares nothing, a pause is over at its own end and the first
// look after it clears it, pauses() counts only the declarations that moved the end, and the
// jitter bound is min(length / 8, kMaxJitterNs) of the pause that set the end.

#include <cstdint>
#include <vector>

#include "omnilimit/pause.hpp"
#include "harness.hpp"

namespace {

using namespace omnilimit::test;
using omnilimit::Pause;

constexpr Nanos kT0 = 1'000 * kSec;

enum class Op {
  hold_until,     // x = the end; want = the end in effect it returns
  end,            // want = end_ns (0: none)
  maybe_active,   // want = 1 or 0
  release_time,   // x = the end; want = the jitter bound J: every draw in [end, end + J]
  pauses,         // want
  note_reported,
  reported,       // want
};

struct Row {
  Nanos at;  // relative to kT0
  Op op;
  Nanos x;   // relative to kT0
  std::int64_t want;
};

Nanos abs_at(Nanos relative) { return kT0 + relative; }
Nanos rel_at(Nanos absolute) { return absolute == 0 ? 0 : absolute - kT0; }  // 0: no pause

void run_table(const char* table, const std::vector<Row>& rows) {
  Pause pause;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    const Nanos now = abs_at(row.at);
    const std::size_t line = i + 1;
    switch (row.op) {
      case Op::hold_until:
        CHECK_EQ(rel_at(pause.hold_until(abs_at(row.x), now)), row.want, table, " row ", line);
        break;
      case Op::end: CHECK_EQ(rel_at(pause.end_ns(now)), row.want, table, " row ", line); break;
      case Op::maybe_active: CHECK_EQ(pause.maybe_active() ? 1 : 0, row.want, table, " row ", line); break;
      case Op::release_time: {
        // 2000 draws: all within the bound; with J >= 1 both halves of [end, end + J] are reached
        // (a miss has probability 2^-2000).
        const Nanos end = abs_at(row.x);
        Nanos lowest = kForever, highest = 0;
        for (int d = 0; d < 2000; ++d) {
          const Nanos go = pause.release_time(end);
          lowest = std::min(lowest, go);
          highest = std::max(highest, go);
        }
        CHECK(lowest >= end && highest <= end + row.want, table, " row ", line, ": draws in [end + ", lowest - end,
              ", end + ", highest - end, "], bound ", row.want);
        if (row.want >= 1) {
          CHECK(lowest - end <= row.want / 2 && highest - end > row.want / 2, table, " row ", line,
                ": draws in [end + ", lowest - end, ", end + ", highest - end, "] do not spread over [0, ", row.want,
                "]");
        }
        break;
      }
      case Op::pauses: CHECK_EQ(pause.pauses(), row.want, table, " row ", line); break;
      case Op::note_reported: pause.note_reported(); break;
      case Op::reported: CHECK_EQ(pause.reported(), row.want, table, " row ", line); break;
    }
  }
}

// The end only moves later; a pause is over at its own end, and the look that finds it over
// clears it.
void pause_table_extends() {
  run_table("extends, never shortens", {
      {0, Op::maybe_active, 0, 0},
      {0, Op::end, 0, 0},
      {0, Op::hold_until, 8000, 8000},
      {0, Op::maybe_active, 0, 1},
      {100, Op::hold_until, 5000, 8000},     // ends earlier: the later end stays
      {100, Op::hold_until, 8000, 8000},     // the same end: not a new pause
      {100, Op::pauses, 0, 1},
      {100, Op::hold_until, 16'100, 16'100},
      {100, Op::pauses, 0, 2},
      {16'099, Op::end, 0, 16'100},
      {16'100, Op::maybe_active, 0, 1},
      {16'100, Op::end, 0, 0},               // over at its own end ...
      {16'100, Op::maybe_active, 0, 0},      // ... and cleared by that look
      {16'100, Op::hold_until, 16'100, 0},   // an end not after now declares nothing
      {16'100, Op::pauses, 0, 2},
  });
}

// The jitter bound follows the pause that set the end: length / 8, at most kMaxJitterNs. An end
// left in place after it passed is replaced by a new pause, or cleared by a look.
void pause_table_jitter() {
  constexpr Nanos kLong = 10 * kSec;
  run_table("jitter and expired ends", {
      {0, Op::hold_until, 7, 7},                  // 7 / 8 = 0: no jitter
      {0, Op::release_time, 7, 0},
      {1000, Op::maybe_active, 0, 1},             // expired, but nobody looked
      {1000, Op::hold_until, 1008, 1008},         // replaces the expired end: J = 1
      {1000, Op::release_time, 1008, 1},
      {1000, Op::hold_until, 17'000, 17'000},     // J = 16000 / 8
      {1000, Op::release_time, 17'000, 2000},
      {20'000, Op::hold_until, 20'000 + kLong, 20'000 + kLong},  // J = min(1.25 s, 250 ms)
      {20'000, Op::release_time, 20'000 + kLong, Pause::kMaxJitterNs},
      {20'001 + kLong, Op::hold_until, 5, 0},     // in the past: declares nothing, clears the end
      {20'001 + kLong, Op::maybe_active, 0, 0},
      {20'001 + kLong, Op::pauses, 0, 4},
      {20'001 + kLong, Op::note_reported, 0, 0},
      {20'001 + kLong, Op::note_reported, 0, 0},
      {20'001 + kLong, Op::reported, 0, 2},       // reported whether or not they moved the end
      {20'001 + kLong, Op::pauses, 0, 4},
  });
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"pause table: extends, never shortens", pause_table_extends},
      {"pause table: jitter and expired ends", pause_table_jitter},
  });
}
