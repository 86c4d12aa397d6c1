// Pause: "send nothing before instant E", the limiter's side of a provider's 429 / Retry-After.
//
// A provider that answers 429 says how long to stop (Retry-After, reset headers). Every caller of
// the limiter, and of every role that shares it, must then stop once, together: not each one
// after its own 429. So a limiter owns one Pause. hold_until(E) extends it (never shortens it:
// concurrent 429s from calls already in flight name overlapping pauses, and the latest end wins,
// so a burst of 429s pauses once). Callers check it at the moment they would be admitted; one that
// meets a pause sleeps until E plus a small positive jitter, so that the callers released by the
// end of a pause do not all fire in the same millisecond.
//
// Cost when no pause was ever declared: one relaxed load of a word that is 0. The end instant is
// left in place after it passes and cleared by the first caller that sees it expired (so a
// limiter that paused once pays one clock read per admission until somebody clears it, which the
// first admission after the end does).
//
// Jitter. Each waiter draws from [0, J], J = min(pause length / 8, kMaxJitterNs), with a
// per-thread xorshift generator: no shared state, no lock. A pause of 0.5 s spreads its waiters
// over 62.5 ms; long pauses over at most 250 ms.
//
// Thread-safety: all members are safe from any thread and take no lock.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>

#include "omnilimit/clock.hpp"

namespace omnilimit {

class Pause {
 public:
  static constexpr Nanos kMaxJitterNs = 250'000'000;

  // Nobody is admitted before `until_ns`. Extends a pause in effect; never shortens one.
  // Returns the end now in effect.
  Nanos hold_until(Nanos until_ns, Nanos now) noexcept {
    if (until_ns <= now) return end_ns(now);
    Nanos current = until_.load(std::memory_order_relaxed);
    while (current < until_ns) {
      if (until_.compare_exchange_weak(current, until_ns, std::memory_order_release, std::memory_order_relaxed)) {
        // The jitter bound follows the pause that set the end (a benign race with a concurrent
        // longer pause: both bounds are valid).
        jitter_ns_.store(std::min((until_ns - now) / 8, kMaxJitterNs), std::memory_order_relaxed);
        pauses_.fetch_add(1, std::memory_order_relaxed);
        return until_ns;
      }
    }
    return current;
  }

  // The end of the pause in effect at `now`, or 0 when there is none.
  Nanos end_ns(Nanos now) noexcept {
    Nanos until = until_.load(std::memory_order_acquire);
    if (until == 0) return 0;
    if (until > now) return until;
    until_.compare_exchange_strong(until, 0, std::memory_order_relaxed);  // expired: clear it
    return 0;
  }

  // True when a pause may be in effect (one load, no clock): the fast paths' test.
  bool maybe_active() const noexcept { return until_.load(std::memory_order_relaxed) != 0; }
  // The end of the latest pause, in effect or past (0: none yet), for a reader that must not write
  // (end_ns() clears a pause that has ended).
  Nanos last_end_ns() const noexcept { return until_.load(std::memory_order_acquire); }

  // When a caller that meets the pause ending at `end` may go: `end` plus its jitter.
  Nanos release_time(Nanos end) const noexcept {
    const Nanos bound = jitter_ns_.load(std::memory_order_relaxed);
    return bound <= 0 ? end : saturating_add(end, static_cast<Nanos>(next_random() % static_cast<std::uint64_t>(bound + 1)));
  }

  // Pauses declared that extended the end (a 429 inside a pause already in effect that ends no
  // later does not count).
  std::int64_t pauses() const noexcept { return pauses_.load(std::memory_order_relaxed); }

  // 429s (and exhausted budgets) reported to the limiter, whether or not they moved the end.
  void note_reported() noexcept { reported_.fetch_add(1, std::memory_order_relaxed); }
  std::int64_t reported() const noexcept { return reported_.load(std::memory_order_relaxed); }

  void reinit_after_fork() noexcept {}  // plain atomics: nothing to repair

 private:
  static std::uint64_t next_random() noexcept {
    thread_local std::uint64_t state =
        0x9E3779B97F4A7C15ULL ^ static_cast<std::uint64_t>(std::hash<std::thread::id>{}(std::this_thread::get_id())) ^
        static_cast<std::uint64_t>(now_ns());
    state ^= state << 13;  // xorshift64
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  }

  std::atomic<Nanos> until_{0};
  std::atomic<Nanos> jitter_ns_{0};
  std::atomic<std::int64_t> pauses_{0};
  std::atomic<std::int64_t> reported_{0};
};

// A caller that got a concurrency slot when a pause may be in effect. It keeps the slot (and so
// its place in line) and goes at the pause's end plus its jitter, if that comes by its deadline.
// Otherwise it passes the slot on and waits out its timeout holding nothing (a pause never
// shortens), so that a caller that ignores the answer does not call the provider during the
// pause. decide() reads no clock: the caller passes what it saw.
struct SlotUnderPause {
  enum class Action {
    go,         // no pause in effect: go now
    hold,       // keep the slot, sleep until `until_ns` (the pause's end plus jitter), then go
    give_back,  // pass the slot on, sleep until `until_ns` (the deadline), then report a timeout
  };
  Action action = Action::go;
  Nanos until_ns = 0;     // hold, give_back: until when
  Nanos deadline_ns = 0;  // hold, give_back: the caller's deadline (a hold cut short waits it out)

  // `end`: the end of the pause in effect when the slot came (0: none); `go_at`: release_time(end)
  // (read only when there is a pause); `started_ns`: when the caller began waiting for the slot
  // (when it arrived, or when the slot came at once); `timeout_ns`: its timeout (kForever: none).
  static constexpr SlotUnderPause decide(Nanos end, Nanos go_at, Nanos started_ns, Nanos timeout_ns) noexcept {
    if (end == 0) return SlotUnderPause{Action::go, 0, 0};
    const Nanos deadline_ns = saturating_add(started_ns, timeout_ns);
    if (go_at <= deadline_ns) return SlotUnderPause{Action::hold, go_at, deadline_ns};
    return SlotUnderPause{Action::give_back, deadline_ns, deadline_ns};
  }

  friend constexpr bool operator==(const SlotUnderPause& a, const SlotUnderPause& b) noexcept {
    return a.action == b.action && a.until_ns == b.until_ns && a.deadline_ns == b.deadline_ns;
  }
  friend constexpr bool operator!=(const SlotUnderPause& a, const SlotUnderPause& b) noexcept { return !(a == b); }
};

}  // namespace omnilimit
