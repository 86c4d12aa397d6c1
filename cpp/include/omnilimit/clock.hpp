// Time for the omnilimit core.
//
// Every instant in the core is a signed 64-bit count of nanoseconds on std::chrono::steady_clock
// (CLOCK_MONOTONIC on Linux, so the same numbers as Python's time.monotonic_ns()). Durations are
// nanoseconds too. kForever (INT64_MAX) stands for "no deadline". Arithmetic that could pass the
// end of the range saturates instead of overflowing.
//
// Thread-safety: every function here is safe to call from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <thread>

#if defined(__linux__)
#include <cerrno>
#include <time.h>
#endif

namespace omnilimit {

using Nanos = std::int64_t;

inline constexpr Nanos kForever = std::numeric_limits<Nanos>::max();
inline constexpr Nanos kNanosPerSecond = 1'000'000'000;

static_assert(std::chrono::steady_clock::is_steady, "the core needs a steady clock");

// Now on steady_clock, in ns.
inline Nanos now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Now on the same clock with the resolution of a scheduler tick (about 4 ms on Linux) for a few
// ns instead of about 20: good enough to place an event in a 50 ms bucket of a one-minute window.
inline Nanos coarse_now_ns() noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<Nanos>(ts.tv_sec) * kNanosPerSecond + ts.tv_nsec;
#else
  return now_ns();
#endif
}

// a + b for b >= 0, clamped to kForever.
inline constexpr Nanos saturating_add(Nanos a, Nanos b) noexcept {
  return (b > 0 && a > kForever - b) ? kForever : a + b;
}

// Seconds (finite or infinite, >= 0) to ns, clamped to kForever.
inline Nanos seconds_to_ns(double seconds) noexcept {
  if (!(seconds > 0.0)) return 0;
  const double ns = seconds * 1e9;
  return ns >= 9.2e18 ? kForever : static_cast<Nanos>(ns);
}

inline std::chrono::steady_clock::time_point to_time_point(Nanos t_ns) noexcept {
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(t_ns));
}

// Sleeps until the steady clock reads t_ns (returns at once if it already has). Not interruptible.
inline void sleep_until_ns(Nanos t_ns) noexcept {
  if (t_ns == kForever) t_ns = kForever / 2;  // ~146 years: keeps the conversions in range
#if defined(__linux__)
  timespec ts;
  ts.tv_sec = static_cast<time_t>(t_ns / kNanosPerSecond);
  ts.tv_nsec = static_cast<long>(t_ns % kNanosPerSecond);
  // An absolute deadline on CLOCK_MONOTONIC: a signal that interrupts the sleep does not stretch it.
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
#else
  std::this_thread::sleep_until(to_time_point(t_ns));
#endif
}

}  // namespace omnilimit
