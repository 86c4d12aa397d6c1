// The harness of omnilimit's C++ tests: checks that record a failure and carry on, the scenario
// runner with its watchdog, and the helpers several test files share (threads that start together,
// a seedable generator, the GCRA window bound, fake event loops for the Waker path).
//
// Each test file is one executable (registered with ctest by CMakeLists.txt) whose main() is
//   int main() { return omnilimit::test::run_scenarios({{"name", scenario}, ...}); }
// A failed check prints "FAIL file:line: CHECK(expr): message" (or "CHECK_EQ(a, b) (x vs y)") to
// stderr and the exit status is 1; the watchdog turns a hang (a deadlock, a lost wake-up) into a
// message and exit status 3.
//
// Header-only, for one translation unit per executable: everything here is inline.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <ostream>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "omnilimit/clock.hpp"
#include "omnilimit/waker.hpp"

namespace omnilimit::test {

using omnilimit::kForever;
using omnilimit::Nanos;
using omnilimit::now_ns;
using omnilimit::sleep_until_ns;

inline constexpr Nanos kUs = 1'000;
inline constexpr Nanos kMs = 1'000'000;
inline constexpr Nanos kSec = 1'000'000'000;
inline constexpr int kThreads = 16;

// ---------------------------------------------------------------------------------------------
// Checks

inline std::atomic<int> g_failures{0};
inline std::mutex g_report_mutex;
inline constexpr int kMaxReportedFailures = 40;

template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// A value as a check's message shows it: streamed when it can be (an operator<< found by ADL
// included), else an enum as its number.
template <class T, class = void>
struct Streamable : std::false_type {};
template <class T>
struct Streamable<T, std::void_t<decltype(std::declval<std::ostream&>() << std::declval<const T&>())>>
    : std::true_type {};

template <class T>
std::string show(const T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    return value ? "true" : "false";
  } else if constexpr (Streamable<T>::value) {
    return cat(value);
  } else if constexpr (std::is_enum_v<T>) {
    return cat("enum ", static_cast<long long>(value));
  } else {
    return "(not printable)";
  }
}

// `check` is the check as written ("CHECK(x)", "CHECK_EQ(a, b) (1 vs 2)"); `msg` may be empty.
inline void record_failure(const char* file, int line, const std::string& check, const std::string& msg) {
  const int n = g_failures.fetch_add(1) + 1;
  if (n > kMaxReportedFailures) return;
  std::lock_guard<std::mutex> lock(g_report_mutex);
  std::fprintf(stderr, "FAIL %s:%d: %s%s%s\n", file, line, check.c_str(), msg.empty() ? "" : ": ", msg.c_str());
  if (n == kMaxReportedFailures) std::fprintf(stderr, "(further failures are counted, not printed)\n");
}

template <class A, class B, class... Parts>
void check_eq(const char* file, int line, const char* a_text, const char* b_text, const A& a, const B& b,
              const Parts&... parts) {
  if (a == b) return;
  record_failure(file, line, cat("CHECK_EQ(", a_text, ", ", b_text, ") (", show(a), " vs ", show(b), ")"),
                 cat(parts...));
}

// Checks failed so far in this process.
inline int failures() { return g_failures.load(); }

}  // namespace omnilimit::test

// CHECK(condition, message parts...): records a failure (thread-safe) and carries on. The message
// parts are optional and only formatted when the check fails.
#define CHECK(...) OMNILIMIT_TEST_CHECK_(__VA_ARGS__, "")
#define OMNILIMIT_TEST_CHECK_(cond, ...)                                                                   \
  do {                                                                                                     \
    if (!(cond)) {                                                                                         \
      ::omnilimit::test::record_failure(__FILE__, __LINE__, "CHECK(" #cond ")", ::omnilimit::test::cat(__VA_ARGS__)); \
    }                                                                                                      \
  } while (0)

// CHECK_EQ(a, b, message parts...): as CHECK(a == b), and the failure shows both values. Each
// side is evaluated once.
#define CHECK_EQ(...) OMNILIMIT_TEST_CHECK_EQ_(__VA_ARGS__, "")
#define OMNILIMIT_TEST_CHECK_EQ_(a, b, ...) \
  ::omnilimit::test::check_eq(__FILE__, __LINE__, #a, #b, (a), (b), __VA_ARGS__)

namespace omnilimit::test {

// ---------------------------------------------------------------------------------------------
// Scenarios

struct Scenario {
  const char* name;
  void (*run)();
};

// Names the running scenario for the watchdog.
inline std::atomic<const char*> g_current_scenario{"startup"};

inline double seconds(Nanos d) { return static_cast<double>(d) / static_cast<double>(kSec); }

// Ends the process with a message if the run hangs (a deadlock or a lost wake-up in the core
// would otherwise just stall CI until its job timeout).
class Watchdog {
 public:
  explicit Watchdog(std::chrono::seconds limit)
      : thread_([this, limit] {
          std::unique_lock<std::mutex> lock(mutex_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            std::fprintf(stderr,
                         "WATCHDOG: still running after %lld s, in scenario '%s' "
                         "(a deadlock or a lost wake-up?)\n",
                         static_cast<long long>(limit.count()), g_current_scenario.load());
            std::fflush(stderr);
            std::_Exit(3);
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

// Runs each scenario in turn, printing its name, outcome and duration, under a watchdog (a hang
// ends the process with status 3). A scenario that throws counts as a failure. Returns the exit
// status: 0 if no check failed, 1 otherwise.
inline int run_scenarios(std::initializer_list<Scenario> scenarios) {
  Watchdog watchdog(std::chrono::seconds(120));
  const Nanos started = now_ns();
  std::vector<const char*> failed;
  for (const Scenario& s : scenarios) {
    g_current_scenario.store(s.name);
    std::printf("[ RUN  ] %s\n", s.name);
    std::fflush(stdout);
    const int failures_before = g_failures.load();
    const Nanos t0 = now_ns();
    try {
      s.run();
    } catch (const std::exception& e) {
      CHECK(false, "scenario threw: ", e.what());
    }
    const int failures = g_failures.load() - failures_before;
    std::printf("[ %s ] %s (%.2f s)\n", failures == 0 ? " OK " : "FAIL", s.name, seconds(now_ns() - t0));
    std::fflush(stdout);
    if (failures != 0) failed.push_back(s.name);
  }

  const double total_s = seconds(now_ns() - started);
  if (failed.empty()) {
    std::printf("all %zu scenarios passed in %.2f s\n", scenarios.size(), total_s);
    return 0;
  }
  std::fprintf(stderr, "%d check(s) FAILED in %zu of %zu scenarios (%.2f s):\n", g_failures.load(), failed.size(),
               scenarios.size(), total_s);
  for (const char* name : failed) std::fprintf(stderr, "  - %s\n", name);
  return 1;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

// splitmix64: a fast, seedable per-thread generator (the tests are deterministic in their choices,
// though not in their interleavings).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n >= 1.
  std::int64_t below(std::int64_t n) { return static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(n)); }

 private:
  std::uint64_t state_;
};

// Lets every worker thread start at the same moment.
class StartGate {
 public:
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return open_; });
  }
  void open() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

inline void join_all(std::vector<std::thread>& threads) {
  for (auto& t : threads) t.join();
  threads.clear();
}

inline void sleep_for_ns(Nanos d) { sleep_until_ns(now_ns() + d); }

// Polls `pred` until it holds or `timeout` passes; returns whether it held.
template <class Pred>
bool wait_for_condition(Pred pred, Nanos timeout) {
  const Nanos deadline = now_ns() + timeout;
  while (!pred()) {
    if (now_ns() >= deadline) return false;
    sleep_for_ns(50 * kUs);
  }
  return true;
}

inline void raise_to(std::atomic<int>& peak, int value) {
  int seen = peak.load(std::memory_order_relaxed);
  while (value > seen && !peak.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
  }
}

// The GCRA guarantee over every window: for all i <= j, the tokens used in [uses[i], uses[j]]
// (j - i + 1 of them) are at most burst + (uses[j] - uses[i]) / interval. With
// g(k) = k*interval - uses[k] that is g(j) - g(i) <= (burst - 1) * interval: one pass keeping the
// running minimum of g checks every window exactly, in integers. (This holds for stale `now`
// values too: each admission needs TAT <= now + (burst - cost) * interval and moves TAT to at
// least max(TAT, now) + cost * interval, and a refund only undoes the latest admission.)
inline void check_every_window(const std::vector<Nanos>& uses, Nanos interval, std::int64_t burst, const char* what) {
  if (uses.empty()) return;
  Nanos min_g = 0, fullest = 0;
  std::size_t min_at = 0, first = 0, last = 0;
  for (std::size_t j = 0; j < uses.size(); ++j) {
    const Nanos gj = static_cast<Nanos>(j) * interval - uses[j];
    if (j == 0 || gj < min_g) {
      min_g = gj;
      min_at = j;
    }
    if (j == 0 || gj - min_g > fullest) {
      fullest = gj - min_g;
      first = min_at;
      last = j;
    }
  }
  const Nanos span = uses[last] - uses[first];
  const std::int64_t tokens = static_cast<std::int64_t>(last - first + 1);
  const std::int64_t bound = burst + span / interval;
  std::printf("    fullest window: %lld tokens in %lld ns; burst + window / interval = %lld\n",
              static_cast<long long>(tokens), static_cast<long long>(span), static_cast<long long>(bound));
  CHECK(fullest <= (burst - 1) * interval, what, ": ", tokens, " tokens used within ", span, " ns, but burst ",
        burst, " + window / interval ", interval, " allows ", bound, " (window starts ", uses[first] - uses.front(),
        " ns into the run)");
}

// ---------------------------------------------------------------------------------------------
// Coroutine waiters: the Waker path (waker.hpp), without Python
//
// The bindings (async_wait.*) let an asyncio coroutine wait in the core's queues. Its waiter
// carries a Waker whose wake(), called by the core under the core's own mutex from whatever
// thread handed over the slot or changed the budget, posts the waiter to its event loop (a list
// and an eventfd); the loop's thread takes the list, and each posted waiter asks the core where
// it stands (status() / poll()). FakeLoop is that list, with a condition variable standing in for
// the eventfd; LoopTask is the waiter, shared as the bindings' AsyncWait is (std::shared_ptr: the
// coroutine holds it, and so does the list from a post until the loop takes it, so a post made
// just before the waiter left the queue stays harmless, and a waiter dropped while still queued
// leaves the queue in its destructor while a wake may be racing it). A loop thread runs many
// coroutines at once, each a small state machine driven by posts and by the loop's timers: it
// waits until a post or its next timer, and never longer than an audit period.

class LoopTask;

class FakeLoop {
 public:
  FakeLoop() = default;
  FakeLoop(const FakeLoop&) = delete;
  FakeLoop& operator=(const FakeLoop&) = delete;

  // Any thread, with the core's mutex held: queue `task` for the loop and wake its thread.
  void post(std::shared_ptr<LoopTask> task) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    ready_.push_back(std::move(task));  // (bad_alloc would end the test here: noexcept)
    ++posts_;
    cv_.notify_one();
  }

  // The loop's thread: waits until something is posted or the clock reaches `until_ns` (finite),
  // then takes what was posted, each post once and in order. Nothing is destroyed under the
  // mutex: the last reference to a waiter may go with the returned vector, and a waiter's
  // destructor may leave a queue, which may post to this loop.
  std::vector<std::shared_ptr<LoopTask>> take(Nanos until_ns) {
    std::vector<std::shared_ptr<LoopTask>> taken;
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait_until(lock, omnilimit::to_time_point(until_ns), [this] { return !ready_.empty(); });
    taken.swap(ready_);
    return taken;
  }

  void count_dropped_wake() noexcept { dropped_wakes_.fetch_add(1, std::memory_order_relaxed); }
  long posts() {
    std::lock_guard<std::mutex> lock(mutex_);
    return posts_;
  }
  long dropped_wakes() const noexcept { return dropped_wakes_.load(std::memory_order_relaxed); }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<LoopTask>> ready_;  // guarded by mutex_
  long posts_ = 0;                                // guarded by mutex_
  std::atomic<long> dropped_wakes_{0};
};

// A coroutine's waiter, as AsyncWait: a Waker that posts itself to its loop.
class LoopTask : public omnilimit::Waker, public std::enable_shared_from_this<LoopTask> {
 public:
  explicit LoopTask(FakeLoop& loop) : loop_(loop) {}
  virtual ~LoopTask() = default;
  LoopTask(const LoopTask&) = delete;
  LoopTask& operator=(const LoopTask&) = delete;

  // The core calls this under its mutex. A waiter whose last reference is gone is being
  // destroyed: its destructor is about to leave the queue (blocked on that same mutex), and
  // nobody will look, so the wake is dropped (as AsyncWait's bad_weak_ptr case).
  void wake() noexcept override {
    wakes_.fetch_add(1, std::memory_order_relaxed);
    if (std::shared_ptr<LoopTask> self = weak_from_this().lock()) {
      loop_.post(std::move(self));
    } else {
      loop_.count_dropped_wake();
    }
  }

  // wake() calls so far. Each is made under the core's mutex, so a load after any call that
  // took that mutex sees every wake made before that call.
  long wakes() const noexcept { return wakes_.load(std::memory_order_relaxed); }

 private:
  FakeLoop& loop_;
  std::atomic<long> wakes_{0};
};

}  // namespace omnilimit::test
