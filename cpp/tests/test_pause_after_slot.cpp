// test_pause_after_slot: what a caller holding a concurrency slot does when a pause may be in
// effect (SlotUnderPause, pause.hpp), at fixed instants, in a table; then the same decision fed
// by a real Pause (its end, its jitter, its expiry).
// Times are ms written as ns (kMs).
#include <cstdio>

#include "harness.hpp"
#include "omnilimit/pause.hpp"

namespace {

using omnilimit::kForever;
using omnilimit::Nanos;
using omnilimit::Pause;
using omnilimit::SlotUnderPause;
using Action = SlotUnderPause::Action;

constexpr Nanos kMs = 1'000'000;

const char* action_name(Action a) {
  switch (a) {
    case Action::go: return "go";
    case Action::hold: return "hold";
    case Action::give_back: return "give_back";
  }
  return "?";
}

void decision_table() {
  struct Row {
    const char* what;
    Nanos end, go_at, started_ns, timeout_ns;
    SlotUnderPause want;
  };
  const Row rows[] = {
      {"no pause: go now", 0, 0, 1000 * kMs, 120'000 * kMs, {Action::go, 0, 0}},
      {"no pause, no timeout", 0, 0, 1000 * kMs, kForever, {Action::go, 0, 0}},
      {"the end comes within the timeout: hold the slot until it", 2000 * kMs, 2100 * kMs, 1000 * kMs,
       120'000 * kMs, {Action::hold, 2100 * kMs, 121'000 * kMs}},
      {"the end plus jitter exactly at the deadline: hold", 2000 * kMs, 3000 * kMs, 1000 * kMs, 2000 * kMs,
       {Action::hold, 3000 * kMs, 3000 * kMs}},
      {"one ns past the deadline: give the slot back, wait out the timeout", 2000 * kMs, 3000 * kMs + 1,
       1000 * kMs, 2000 * kMs, {Action::give_back, 3000 * kMs, 3000 * kMs}},
      {"the end itself past the deadline", 9000 * kMs, 9000 * kMs, 1000 * kMs, 2000 * kMs,
       {Action::give_back, 3000 * kMs, 3000 * kMs}},
      {"a try (timeout 0) under a pause: give back at once", 2000 * kMs, 2000 * kMs, 1000 * kMs, 0,
       {Action::give_back, 1000 * kMs, 1000 * kMs}},
      {"the deadline counts from the arrival, not from the slot", 5000 * kMs, 5000 * kMs, 1000 * kMs,
       3000 * kMs, {Action::give_back, 4000 * kMs, 4000 * kMs}},
      {"no timeout: hold whatever the pause", 2000 * kMs, 500'000 * kMs, 1000 * kMs, kForever,
       {Action::hold, 500'000 * kMs, kForever}},
      {"a deadline past the end of time saturates", kForever - 1, kForever - 1, kForever - 10, 20,
       {Action::hold, kForever - 1, kForever}},
  };
  int i = 0;
  for (const Row& r : rows) {
    const SlotUnderPause got = SlotUnderPause::decide(r.end, r.go_at, r.started_ns, r.timeout_ns);
    CHECK(got == r.want);
    if (got != r.want) {
      std::fprintf(stderr, "  row %d (%s): got %s until %lld deadline %lld\n", i, r.what, action_name(got.action),
                   static_cast<long long>(got.until_ns), static_cast<long long>(got.deadline_ns));
    }
    ++i;
  }
}

// The decision as acquire() makes it: the pause's end at the instant the slot came, and a
// release time drawn only when there is a pause.
SlotUnderPause with_pause(Pause& pause, Nanos now, Nanos started_ns, Nanos timeout_ns) {
  const Nanos end = pause.end_ns(now);
  const Nanos go_at = end == 0 ? 0 : pause.release_time(end);
  return SlotUnderPause::decide(end, go_at, started_ns, timeout_ns);
}

void real_pause() {
  Pause pause;
  CHECK(with_pause(pause, 1000 * kMs, 1000 * kMs, 0) == (SlotUnderPause{Action::go, 0, 0}));
  // A 1 s pause declared at 1 s: its jitter is at most 125 ms.
  CHECK_EQ(pause.hold_until(2000 * kMs, 1000 * kMs), 2000 * kMs);
  for (int i = 0; i < 100; ++i) {
    const SlotUnderPause held = with_pause(pause, 1500 * kMs, 1400 * kMs, 10'000 * kMs);
    CHECK(held.action == Action::hold);
    CHECK(held.until_ns >= 2000 * kMs && held.until_ns <= 2125 * kMs);
    CHECK_EQ(held.deadline_ns, 11'400 * kMs);
  }
  // A timeout that ends before the pause does: the slot goes back.
  const SlotUnderPause given = with_pause(pause, 1500 * kMs, 1400 * kMs, 500 * kMs);
  CHECK(given == (SlotUnderPause{Action::give_back, 1900 * kMs, 1900 * kMs}));
  // A shorter pause declared meanwhile does not shorten it.
  CHECK_EQ(pause.hold_until(1800 * kMs, 1500 * kMs), 2000 * kMs);
  CHECK(with_pause(pause, 1600 * kMs, 1600 * kMs, 200 * kMs).action == Action::give_back);
  // At its end the pause is over: go.
  CHECK(with_pause(pause, 2000 * kMs, 1900 * kMs, 0) == (SlotUnderPause{Action::go, 0, 0}));
  CHECK(!pause.maybe_active());
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"decision_table", decision_table},
      {"real_pause", real_pause},
  });
}
