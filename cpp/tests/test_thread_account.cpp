// test_thread_account: the over-release rule (ThreadAccount, thread_account.hpp) in tables: a
// thread's acquires, releases and slots given back, in order, with whether each release answers
// the thread's own failed acquire (and is ignored); then the account's capacity, and that each
// thread keeps its own.
#include <cstdint>
#include <cstdio>
#include <set>
#include <thread>

#include "harness.hpp"
#include "omnilimit/thread_account.hpp"

namespace {

using omnilimit::ThreadAccount;

enum class Op { acquired, failed, release, gave_back };

struct Row {
  Op op;
  std::uint64_t limiter;
  bool ignored;        // release: it answers a failed acquire
  std::uint32_t held;  // the entry's slots after the op (0 with no entry)
  bool failed;         // the entry's pending failure after the op
  bool tracked;        // an entry exists after the op
};

void run(const char* table, const Row* rows, int count) {
  ThreadAccount account;
  for (int i = 0; i < count; ++i) {
    const Row& r = rows[i];
    bool ignored = false;
    switch (r.op) {
      case Op::acquired: account.after_acquire(r.limiter, true); break;
      case Op::failed: account.after_acquire(r.limiter, false); break;
      case Op::release: ignored = account.release_answers_failure(r.limiter); break;
      case Op::gave_back: account.gave_back(r.limiter); break;
    }
    const ThreadAccount::Entry* e = account.find(r.limiter);
    const bool ok = ignored == r.ignored && (e != nullptr) == r.tracked && (e ? e->held : 0u) == r.held &&
                    account.held(r.limiter) == r.held &&
                    (e ? e->failed : false) == r.failed;
    CHECK(ok);
    if (!ok) {
      std::fprintf(stderr, "  in %s, row %d: ignored %d tracked %d held %u failed %d\n", table, i, ignored,
                   e != nullptr, e ? e->held : 0u, e ? e->failed : false);
    }
  }
}

void single_limiter() {
  const Row rows[] = {
      // OmniGen's pattern: acquire(timeout) fails, the `finally` releases anyway: ignored.
      {Op::failed, 1, false, 0, true, true},
      {Op::release, 1, true, 0, false, false},
      {Op::release, 1, false, 0, false, false},  // a second one is a plain over-release (the semaphore counts it)
      // Acquire, release: a real release.
      {Op::acquired, 1, false, 1, false, true},
      {Op::release, 1, false, 0, false, false},
      // A failure while holding a slot is not the rule's case: the next release is real.
      {Op::acquired, 1, false, 1, false, true},
      {Op::failed, 1, false, 1, false, true},
      {Op::release, 1, false, 0, false, false},
      // Two slots, two releases.
      {Op::acquired, 1, false, 1, false, true},
      {Op::acquired, 1, false, 2, false, true},
      {Op::release, 1, false, 1, false, true},
      {Op::release, 1, false, 0, false, false},
      // A success forgets an earlier failure.
      {Op::failed, 1, false, 0, true, true},
      {Op::acquired, 1, false, 1, false, true},
      {Op::release, 1, false, 0, false, false},
      // Two failures, one release: ignored; the failure is forgotten with it.
      {Op::failed, 1, false, 0, true, true},
      {Op::failed, 1, false, 0, true, true},
      {Op::release, 1, true, 0, false, false},
      // A slot given back unused (a pause outlasting the timeout, a cancelled coroutine).
      {Op::acquired, 1, false, 1, false, true},
      {Op::gave_back, 1, false, 0, false, false},
      {Op::release, 1, false, 0, false, false},
      // Giving back does not forget a pending failure.
      {Op::failed, 1, false, 0, true, true},
      {Op::gave_back, 1, false, 0, true, true},
      {Op::release, 1, true, 0, false, false},
      // Giving back what was never held does nothing.
      {Op::gave_back, 1, false, 0, false, false},
  };
  run("single_limiter", rows, static_cast<int>(sizeof(rows) / sizeof(rows[0])));
}

void several_limiters() {
  static_assert(ThreadAccount::kTracked == 4, "the table below fills four entries");
  const Row rows[] = {
      // A failure on one limiter does not make a release of another one ignored.
      {Op::failed, 1, false, 0, true, true},
      {Op::acquired, 2, false, 1, false, true},
      {Op::release, 2, false, 0, false, false},
      {Op::release, 1, true, 0, false, false},
      // Four limiters tracked at once: a fifth takes the place of the oldest failure pending
      // (limiter 1's, forgotten: its release is a plain one, the semaphore decides).
      {Op::failed, 1, false, 0, true, true},
      {Op::failed, 2, false, 0, true, true},
      {Op::acquired, 3, false, 1, false, true},
      {Op::failed, 4, false, 0, true, true},
      {Op::failed, 5, false, 0, true, true},
      {Op::release, 1, false, 0, false, false},
      // The next one takes limiter 2's place (the oldest failure now), never limiter 3's (a slot).
      {Op::failed, 6, false, 0, true, true},
      {Op::release, 2, false, 0, false, false},
      {Op::acquired, 3, false, 2, false, true},
      // Entries holding slots are never given up: with four of them, a fifth is not tracked.
      {Op::acquired, 4, false, 1, false, true},
      {Op::acquired, 5, false, 1, false, true},
      {Op::acquired, 6, false, 1, false, true},
      {Op::failed, 7, false, 0, false, false},
      {Op::release, 7, false, 0, false, false},  // the rule is off for it: a plain release
      // An entry that settles frees up for the next limiter.
      {Op::release, 6, false, 0, false, false},
      {Op::failed, 7, false, 0, true, true},
      {Op::release, 7, true, 0, false, false},
      {Op::release, 5, false, 0, false, false},
      {Op::release, 4, false, 0, false, false},
      {Op::release, 3, false, 1, false, true},
      {Op::release, 3, false, 0, false, false},
  };
  run("several_limiters", rows, static_cast<int>(sizeof(rows) / sizeof(rows[0])));
}

// A full account gives up the entry of a limiter that no longer exists (a slot held when it was
// dropped is nobody's to release) before it turns the rule off for a new limiter.
void dropped_limiters() {
  ThreadAccount account;
  std::set<std::uint64_t> alive{1, 2, 3, 4, 5};
  auto live = [&](std::uint64_t id) { return alive.count(id) > 0; };
  for (std::uint64_t id = 1; id <= 4; ++id) account.after_acquire(id, true, live);  // four slots held
  account.after_acquire(5, false, live);
  CHECK(account.find(5) == nullptr);  // four living holders: not tracked, the rule is off for it
  alive.erase(2);                     // limiter 2 dropped while this thread held its slot
  account.after_acquire(5, false, live);
  CHECK(account.find(5) != nullptr);
  CHECK(account.find(2) == nullptr);
  CHECK(account.release_answers_failure(5));
  CHECK(account.held(1) == 1 && account.held(3) == 1 && account.held(4) == 1);
}

// Each thread keeps its own account (a thread_local, as the bindings keep it): a failure in one
// thread does not make another thread's release ignored.
thread_local ThreadAccount account;

void per_thread() {
  constexpr std::uint64_t kLimiter = 7;
  account.after_acquire(kLimiter, false);  // this thread's acquire failed
  bool other_ignored = true;
  std::thread other([&] {
    account.after_acquire(kLimiter, true);
    other_ignored = account.release_answers_failure(kLimiter);
  });
  other.join();
  CHECK(!other_ignored);
  CHECK(account.release_answers_failure(kLimiter));
  CHECK(account.find(kLimiter) == nullptr);
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"single_limiter", single_limiter},
      {"several_limiters", several_limiters},
      {"dropped_limiters", dropped_limiters},
      {"per_thread", per_thread},
  });
}
