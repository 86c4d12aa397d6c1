// test_gcra: Gcra (gcra.hpp), the lock-free token bucket.
//
// What it proves, with 16 threads per scenario hammering one bucket: under concurrent try_acquire()
// and reserve() (some reservations abandoned and refunded) the tokens admitted in ANY time window
// [t1, t2] never exceed burst + (t2 - t1) / interval (the GCRA guarantee, checked exactly over
// every window of the run) and the total stays near the ideal rate; with set_interval() /
// set_burst() running concurrently the total stays within the fastest rate and the state stays
// sane; while the interval flips 10x, no decision racing with set_interval() leaves more debt than
// the burst at the current pace (the "Live changes" promise in gcra.hpp); and holds and caps
// declared meanwhile keep the window bound.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "omnilimit/gcra.hpp"
#include "harness.hpp"

namespace {

using namespace omnilimit::test;
using omnilimit::Gcra;
using omnilimit::Reservation;

// The instants at which tokens were used: one entry per token (a request of cost n adds n).
// A try_acquire uses its tokens at the `now` it passed, a reservation at its ready_at.
struct GcraRun {
  std::vector<Nanos> uses;
  Nanos start = 0, end = 0;
  long tries = 0, reserved = 0, reserve_refused = 0, refunded = 0, refund_lost = 0;
};

// Runs 16 threads on `g` for `run_for`. Even threads (all of them if !with_reservations) call
// try_acquire in a tight loop; odd ones reserve with a random max_wait and sleep until ready_at,
// except that one admitted reservation in five with a wait is abandoned part-way through its
// wait and refunded (which fails once someone has queued behind it). `during(stop_at)` runs on
// this thread meanwhile.
template <class During>
GcraRun run_gcra_load(Gcra& g, Nanos run_for, bool with_reservations, During during) {
  constexpr Nanos kMaxWait = 3 * kMs;
  std::vector<GcraRun> per_thread(kThreads);
  StartGate gate;
  Nanos stop_at = 0;  // written before gate.open(), read after gate.wait()
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      Rng rng(4000 + static_cast<std::uint64_t>(i));
      GcraRun& mine = per_thread[static_cast<std::size_t>(i)];
      gate.wait();
      if (i % 2 == 0 || !with_reservations) {
        for (;;) {
          const Nanos now = now_ns();
          if (now >= stop_at) break;
          const std::int64_t cost = rng.below(16) == 0 ? 2 : 1;
          ++mine.tries;
          if (g.try_acquire(cost, now)) {
            for (std::int64_t c = 0; c < cost; ++c) mine.uses.push_back(now);
          } else if (with_reservations && rng.below(32) == 0) {
            std::this_thread::yield();  // let the sleeping reservers in; otherwise get preempted anywhere
          }
        }
        return;
      }
      for (;;) {
        const Nanos now = now_ns();
        if (now >= stop_at) break;
        const Nanos max_wait = rng.below(kMaxWait);
        const Reservation r = g.reserve(1, max_wait, now);
        if (!r.admitted) {
          ++mine.reserve_refused;
          CHECK(r.wait_ns > max_wait, "refused reservation reports wait ", r.wait_ns, " <= max_wait ", max_wait);
          CHECK(!g.refund(r, now), "refund of a refused reservation succeeded");
          sleep_for_ns(rng.below(200 * kUs));
          continue;
        }
        ++mine.reserved;
        CHECK(r.wait_ns >= 0 && r.wait_ns <= max_wait, "admitted reservation waits ", r.wait_ns,
              " ns, max_wait ", max_wait);
        CHECK(r.ready_at_ns == now + r.wait_ns, "ready_at ", r.ready_at_ns, " != now ", now, " + wait ", r.wait_ns);
        CHECK(r.cost == 1, "reservation cost ", r.cost);
        if (r.wait_ns > 0 && rng.below(5) == 0) {  // the caller gives up before its turn
          sleep_for_ns(rng.below(r.wait_ns));
          if (g.refund(r, now_ns())) {
            ++mine.refunded;
            continue;  // the token went back: never used
          }
          ++mine.refund_lost;  // someone queued behind it (or its time came): the slot is spent
          mine.uses.push_back(r.ready_at_ns);
          continue;
        }
        sleep_until_ns(r.ready_at_ns);
        mine.uses.push_back(r.ready_at_ns);
      }
    });
  }
  GcraRun all;
  all.start = now_ns();
  stop_at = all.start + run_for;
  gate.open();
  during(stop_at);
  join_all(threads);
  all.end = now_ns();
  for (const GcraRun& r : per_thread) {
    all.uses.insert(all.uses.end(), r.uses.begin(), r.uses.end());
    all.tries += r.tries;
    all.reserved += r.reserved;
    all.reserve_refused += r.reserve_refused;
    all.refunded += r.refunded;
    all.refund_lost += r.refund_lost;
  }
  std::sort(all.uses.begin(), all.uses.end());
  return all;
}

void print_gcra_run(const GcraRun& run, double ideal) {
  std::printf("    %zu tokens in %.3f s (ideal %.0f), %ld tries, %ld reserved, %ld refused, %ld refunded, "
              "%ld abandoned unrefunded\n",
              run.uses.size(), seconds(run.end - run.start), ideal, run.tries, run.reserved,
              run.reserve_refused, run.refunded, run.refund_lost);
}

// A few single-threaded facts at fixed instants, so the stress results rest on known ground.
void gcra_basics() {
  constexpr Nanos kT = 100 * kUs;
  constexpr std::int64_t kB = 10;
  Gcra g(kT, kB);
  const Nanos t0 = 1'000 * kSec;
  CHECK(g.tokens_available(t0) == kB, "fresh bucket holds ", g.tokens_available(t0));
  for (std::int64_t k = 0; k < kB; ++k) CHECK(g.try_acquire(1, t0), "token ", k, " of a full bucket refused");
  CHECK(!g.try_acquire(1, t0), "an empty bucket admitted");
  CHECK(g.tokens_available(t0) == 0, "empty bucket reports ", g.tokens_available(t0));
  CHECK(g.try_acquire(1, t0 + kT), "the token refilled after one interval was refused");
  const Reservation r1 = g.reserve(1, kMs, t0 + kT);
  CHECK(r1.admitted && r1.wait_ns == kT, "reserve on an empty bucket: admitted ", r1.admitted, " wait ", r1.wait_ns);
  const Reservation refused = g.reserve(1, kT - 1, t0 + kT);
  CHECK(!refused.admitted && refused.wait_ns == 2 * kT, "reserve beyond max_wait: admitted ", refused.admitted,
        " wait ", refused.wait_ns);
  CHECK(g.refund(r1, t0 + kT), "refund of the latest reservation failed");
  const Reservation r2 = g.reserve(1, kMs, t0 + kT);
  CHECK(r2.admitted && r2.wait_ns == kT, "after a refund the same slot should be free again: wait ", r2.wait_ns);
  const Reservation r3 = g.reserve(1, kMs, t0 + kT);
  CHECK(!g.refund(r2, t0 + kT), "refund of a reservation with another queued behind it succeeded");
  CHECK(!g.refund(r3, r3.ready_at_ns), "refund after the reservation's time came succeeded");
}

// 16 threads on one bucket with a fixed configuration: the exact window bound must hold.
void gcra_fixed_config() {
  gcra_basics();
  constexpr Nanos kT = 100 * kUs;
  constexpr std::int64_t kB = 10;
  Gcra g(kT, kB);
  const GcraRun run = run_gcra_load(g, 1500 * kMs, true, [](Nanos) {});
  const double elapsed = static_cast<double>(run.end - run.start);
  const double ideal = static_cast<double>(kB) + elapsed / static_cast<double>(kT);
  print_gcra_run(run, ideal);

  const double total = static_cast<double>(run.uses.size());
  CHECK(total <= ideal + 1.0, "admitted ", total, " tokens in ", elapsed,
        " ns: more than burst + elapsed / interval + 1 = ", ideal + 1.0);
  CHECK(total >= 0.5 * ideal, "admitted only ", total, " tokens, under half the ideal ", ideal);
  CHECK(run.uses.empty() || (run.uses.front() >= run.start && run.uses.back() <= run.end),
        "a token was used outside the run");
  check_every_window(run.uses, kT, kB, "fixed config");
  const Nanos now = now_ns();
  const std::int64_t left = g.tokens_available(now);
  CHECK(left >= 0 && left <= kB, "tokens_available = ", left, " outside [0, ", kB, "]");
  CHECK(g.tokens_available(std::max(now, g.tat_ns())) == kB, "the bucket does not refill to the burst");
}

// The same load while this thread keeps changing the interval (never faster than kTMin) and the
// burst (never above kBMax). Checked: the total against the fastest rate and largest burst, and
// that the state is sane afterwards. (Not checked per window: a reservation keeps the ready_at
// it was given, so after a speed-up the old, slower schedule and the new one overlap for a while
// and a short window can legitimately exceed the new rate. gcra_rate_changes checks the debt.)
void gcra_reconfigured() {
  constexpr Nanos kTMin = 100 * kUs;
  constexpr Nanos kIntervals[] = {100 * kUs, 150 * kUs, 250 * kUs};
  constexpr Nanos kTMax = 250 * kUs;
  constexpr std::int64_t kBMax = 10;
  Gcra g(kTMin, kBMax);
  long changes = 0;
  const GcraRun run = run_gcra_load(g, 1500 * kMs, true, [&](Nanos stop_at) {
    Rng rng(5000);
    while (now_ns() < stop_at) {
      const Nanos interval = kIntervals[rng.below(3)];
      if (rng.below(2) == 0) {
        g.set_interval(interval);
      } else {
        g.set_interval(interval, now_ns());
      }
      g.set_burst(2 + rng.below(kBMax - 1));  // 2..kBMax
      ++changes;
      sleep_for_ns(kMs + rng.below(4 * kMs));
    }
  });
  const double elapsed = static_cast<double>(run.end - run.start);
  const double most = static_cast<double>(kBMax) + elapsed / static_cast<double>(kTMin);
  const double least = elapsed / static_cast<double>(kTMax);
  print_gcra_run(run, most);
  std::printf("    %ld configuration changes\n", changes);

  const double total = static_cast<double>(run.uses.size());
  CHECK(total <= most + 1.0, "admitted ", total, " tokens: more than max burst + elapsed / min interval + 1 = ",
        most + 1.0);
  CHECK(total >= 0.5 * least, "admitted only ", total, " tokens, under half of elapsed / max interval ", least);

  // The state is still sane and still behaves like a bucket.
  const Nanos now = now_ns();
  const std::int64_t burst = g.burst();
  const Nanos interval = g.interval_ns();
  CHECK(burst >= 2 && burst <= kBMax, "burst() = ", burst);
  CHECK(interval >= kTMin && interval <= kTMax, "interval_ns() = ", interval);
  const std::int64_t left = g.tokens_available(now);
  CHECK(left >= 0 && left <= burst, "tokens_available = ", left, " outside [0, ", burst, "]");
  CHECK(g.tat_ns() <= now + kSec, "TAT ran ", g.tat_ns() - now, " ns into the future");
  g.set_interval(kTMin);
  g.set_burst(kBMax);
  const Nanos full_at = std::max(now_ns(), g.tat_ns());
  CHECK(g.tokens_available(full_at) == kBMax, "not full at TAT: ", g.tokens_available(full_at));
  for (std::int64_t k = 0; k < kBMax; ++k) CHECK(g.try_acquire(1, full_at), "token ", k, " of a full bucket refused");
  CHECK(!g.try_acquire(1, full_at), "more than the burst admitted after reconfiguration");
}

// try_acquire only while the interval flips between kFast and ten times slower. set_interval
// promises that no decision mixes the old pace with the rescaled TAT (or the reverse): a decision
// is made wholly before or wholly after the change. Then the debt stays bounded: every admission leaves
// TAT <= (its now) + burst * interval, and a rescale keeps tokens owed as tokens owed. This
// thread is the only one that changes the interval, so between its changes it polls
// TAT - now <= burst * interval + E, where E is what the rescale itself may have added beyond
// that; E decays by 1 ns per ns, as nothing but a rescale can push TAT past the bound:
//   * After slowing down, E is measured: TAT read right after set_interval returns, minus the
//     clock, minus burst * new interval. (A slow-down anchored at a `now` that is d stale by the
//     time the rescale runs counts every token taken since as owed at the slow pace, about
//     (new/old - 1) * d more debt: conservative, hence allowed. Under TSan d is sometimes tens
//     of ms, so a formula for E would be far too loose.)
//   * After speeding up (anchored at the clock read just before the call, which can only keep
//     more owed), E is the previous excess scaled by new/old, plus rounding.
// A decision that pairs the old, slow interval with a TAT already rescaled to the fast one treats
// the tokens owed as ten times fewer: on a drained bucket it is admitted and pushes TAT about
// kSlow past the bound.
void gcra_rate_changes() {
  constexpr Nanos kFast = 100 * kUs;
  constexpr Nanos kSlow = 10 * kFast;
  constexpr std::int64_t kB = 10;
  Gcra g(kFast, kB);
  long changes = 0, polls = 0, violations = 0;
  Nanos worst_excess = 0, worst_debt = 0, worst_allowed = 0, worst_interval = 0, largest_allowance = 0;
  const GcraRun run = run_gcra_load(g, 2500 * kMs, false, [&](Nanos stop_at) {
    Rng rng(5500);
    Nanos excess = 0;                // bound on TAT - now - burst * interval ...
    Nanos excess_since = now_ns();   // ... as of this instant, decaying 1 ns per ns after it
    while (now_ns() < stop_at) {
      const Nanos old_interval = g.interval_ns();
      const Nanos interval = changes % 2 == 0 ? kSlow : kFast;
      const Nanos before = now_ns();
      const Nanos carried = std::max<Nanos>(0, excess - (before - excess_since));
      g.set_interval(interval, before);
      ++changes;
      if (interval > old_interval) {
        const Nanos tat = g.tat_ns();
        excess_since = now_ns();
        excess = std::max<Nanos>(0, tat - excess_since - kB * interval);
      } else {
        excess_since = now_ns();
        excess = (carried * interval + old_interval - 1) / old_interval + 2;  // +2: rounding
      }
      largest_allowance = std::max(largest_allowance, excess);
      const Nanos next_change = excess_since + kMs + rng.below(3 * kMs);
      for (;;) {
        const Nanos tat = g.tat_ns();  // TAT first: the `now` behind every admission in it is <= the clock read next
        const Nanos now = now_ns();
        if (now >= next_change) break;
        ++polls;
        const Nanos allowed = kB * interval + std::max<Nanos>(0, excess - (now - excess_since));
        if (tat - now > allowed) {
          ++violations;
          if (tat - now - allowed > worst_excess) {
            worst_excess = tat - now - allowed;
            worst_debt = tat - now;
            worst_allowed = allowed;
            worst_interval = interval;
          }
        }
        sleep_for_ns(20 * kUs);
      }
    }
  });
  const double elapsed = static_cast<double>(run.end - run.start);
  print_gcra_run(run, static_cast<double>(kB) + elapsed / static_cast<double>(kFast));
  std::printf("    %ld interval changes between %lld and %lld ns, %ld polls of TAT, largest allowance "
              "for a rescale %lld ns\n",
              changes, static_cast<long long>(kFast), static_cast<long long>(kSlow), polls,
              static_cast<long long>(largest_allowance));
  CHECK(violations == 0, violations, " polls saw TAT - now above burst * interval + allowance; worst: ", worst_debt,
        " ns owed at interval ", worst_interval, " ns (",
        static_cast<double>(worst_debt) / static_cast<double>(worst_interval), " tokens, burst ", kB,
        "), allowed ", worst_allowed, " ns: a decision mixed the old interval with the rescaled TAT?");
  CHECK(static_cast<double>(run.uses.size()) >= 0.5 * elapsed / static_cast<double>(kSlow), "admitted only ",
        run.uses.size(), " tokens");
  const std::int64_t left = g.tokens_available(now_ns());
  CHECK(left >= 0 && left <= kB, "tokens_available = ", left, " outside [0, ", kB, "]");
}

// A provider's feedback under load: this thread keeps declaring holds (hold_until: nothing before
// an instant, then from an empty bucket) and caps (limit_available) while 16 threads take tokens.
// Both only move TAT forward, so the exact window bound of the fixed configuration must still
// hold; and a try_acquire made after a hold was declared never succeeds before its end (checked
// by the taker that declares it, at fixed instants, so the check is exact).
void gcra_holds_under_load() {
  constexpr Nanos kT = 100 * kUs;
  constexpr std::int64_t kB = 10;
  Gcra g(kT, kB);
  Rng rng(7);
  std::int64_t holds = 0, caps = 0;
  const GcraRun run = run_gcra_load(g, 1000 * kMs, true, [&](Nanos stop_at) {
    while (now_ns() < stop_at) {
      const Nanos now = now_ns();
      if (rng.below(2) == 0) {
        const Nanos end = now + 1 + rng.below(2 * kMs);
        g.hold_until(end);
        ++holds;
        CHECK(!g.try_acquire(1, std::max(now, end - 1)), "a token was admitted before the end of a hold");
      } else {
        const std::int64_t cap = rng.below(kB + 2);
        g.limit_available(cap, now);
        ++caps;
        CHECK(g.tokens_available(now) <= cap, "limit_available(", cap, ") left ", g.tokens_available(now));
      }
      sleep_for_ns(rng.below(3 * kMs));
    }
  });
  const double elapsed = static_cast<double>(run.end - run.start);
  const double ideal = static_cast<double>(kB) + elapsed / static_cast<double>(kT);
  print_gcra_run(run, ideal);
  std::printf("    %lld holds and %lld caps declared meanwhile\n", static_cast<long long>(holds),
              static_cast<long long>(caps));
  CHECK(static_cast<double>(run.uses.size()) <= ideal + 1.0, "admitted ", run.uses.size(), " > ideal ", ideal);
  check_every_window(run.uses, kT, kB, "holds under load");
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"gcra: 16 threads, fixed interval and burst", gcra_fixed_config},
      {"gcra: 16 threads while set_interval/set_burst run", gcra_reconfigured},
      {"gcra: debt bound while the interval flips 10x", gcra_rate_changes},
      {"gcra: hold_until and limit_available under load", gcra_holds_under_load},
  });
}
