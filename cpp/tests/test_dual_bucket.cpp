// test_dual_bucket: DualBucket (dual_bucket.hpp), a request budget and a token budget taken
// together by callers in a queue.
//
// What it proves, with 16 threads: requests and tokens taken together through its queue, with
// deadlines, callers giving up, settles, holds, caps and live changes: the request window bound
// holds, the tokens stay within burst + refill, callers go in arrival order, nobody is lost or
// left queued.
//
// The shared queue (SharedQueue: entries in a table, futex words, a robust mutex) runs the same
// load through two DualBuckets over one state, as two processes would.
//
// Coroutine tickets (the Waker path of waker.hpp, which the asyncio bindings use), on fake event
// loops (harness.hpp) alongside 8 plain threads, in the queue while it is settled, capped and
// re-paced: every wake is made under the bucket's mutex and posts a shared waiter; waiters give up
// (leave()) or are dropped while queued (leaving in their destructor while wakes race them); each
// loop audits its waiters, so a lost wake-up is reported rather than hung on. The same bounds hold
// as for threads alone, every coroutine ends, every post is taken, the queue ends empty.

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

#include "omnilimit/dual_bucket.hpp"
#include "harness.hpp"

namespace {

using namespace omnilimit::test;
using omnilimit::DualBucket;

const char* name_of(DualBucket::Status s) {
  switch (s) {
    case DualBucket::Status::admitted: return "admitted";
    case DualBucket::Status::queued: return "queued";
    case DualBucket::Status::refused: return "refused";
    case DualBucket::Status::closed: return "closed";
  }
  return "?";
}

// 16 threads take one request and 1..64 tokens together through the queue (some with deadlines
// that expire, some giving up early as an interrupted caller does), settling with what they
// "used" (never more than they took), while this thread declares holds and caps. The request
// bucket must keep the exact window bound, the tokens used may not exceed the token burst plus
// what refilled during the run, nobody may be admitted before its planned instant, and the queue
// must end empty.
constexpr Nanos kRequestT = 200 * kUs;
constexpr std::int64_t kRequestB = 8;
constexpr Nanos kTokenT = 5 * kUs;  // 200,000 tokens/s
constexpr std::int64_t kTokenB = 400;

// The state a shared DualBucket keeps in a segment, here on the heap: the same code (entries,
// futex words, the robust mutex), within one process.
struct SharedState {
  omnilimit::SharedQueue queue;
  omnilimit::GcraWords requests;
  omnilimit::GcraWords tokens;
  SharedState() {
    omnilimit::Gcra::init_words(requests, kRequestT, kRequestB);
    omnilimit::Gcra::init_words(tokens, kTokenT, kTokenB);
  }
};

void under_load(DualBucket& first, DualBucket& second);

void dual_bucket_under_load() {
  DualBucket bucket(kRequestT, kRequestB, kTokenT, kTokenB);
  under_load(bucket, bucket);
}

// The same over a shared queue, through two DualBuckets over the same state (as two processes
// would have): half the threads use each.
void shared_dual_bucket_under_load() {
  const auto state = std::make_unique<SharedState>();
  DualBucket one(state->queue, state->requests, state->tokens);
  DualBucket other(state->queue, state->requests, state->tokens);
  CHECK(one.shared() && other.shared(), "not shared");
  under_load(one, other);
}

void under_load(DualBucket& first, DualBucket& second) {
  DualBucket& bucket = first;
  std::vector<std::vector<Nanos>> requests(kThreads);
  std::vector<std::int64_t> tokens_used(kThreads, 0);
  std::atomic<long> refused{0}, gave_up{0};
  std::atomic<bool> stop{false};
  StartGate gate;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(300 + t);
      DualBucket& bucket = t % 2 == 0 ? first : second;
      gate.wait();
      while (!stop.load(std::memory_order_relaxed)) {
        const std::int64_t tokens = 1 + rng.below(64);
        const Nanos now = now_ns();
        const Nanos deadline = rng.below(8) == 0 ? omnilimit::kForever : now + rng.below(4 * kMs);
        DualBucket::Ticket ticket(bucket, tokens, deadline);
        DualBucket::Status status = bucket.arrive(ticket, now);
        if (status == DualBucket::Status::queued) {
          const bool impatient = rng.below(6) == 0;  // gives up before its turn, or not
          const Nanos until = impatient ? now + rng.below(kMs) : deadline;
          status = bucket.wait(ticket, until);
          if (status == DualBucket::Status::queued && impatient) {
            bucket.leave(ticket);  // an interrupted caller: nothing was committed for it
            gave_up.fetch_add(1, std::memory_order_relaxed);
            continue;
          }
        }
        if (status != DualBucket::Status::admitted) {
          // refused (would not fit), or still queued at its deadline (the callers ahead were
          // late): a timeout either way, and ~Ticket takes it out of the queue.
          refused.fetch_add(1, std::memory_order_relaxed);
          sleep_for_ns(rng.below(300 * kUs));
          continue;
        }
        const Nanos went = now_ns();
        CHECK(ticket.planned_ns() <= went, "admitted at ", ticket.planned_ns(), " after reading ", went);
        requests[t].push_back(ticket.planned_ns());
        const std::int64_t used = rng.below(tokens + 1);
        tokens_used[t] += used;
        bucket.settle(tokens, used, now_ns());
      }
    });
  }
  const Nanos start = now_ns();
  gate.open();
  Rng rng(99);
  while (now_ns() < start + 1200 * kMs) {
    const Nanos now = now_ns();
    switch (rng.below(3)) {
      case 0: bucket.hold_until(now + rng.below(kMs)); break;
      case 1: bucket.limit_available_requests(rng.below(kRequestB + 1), now); break;
      default: bucket.limit_available_tokens(rng.below(kTokenB + 1), now); break;
    }
    sleep_for_ns(rng.below(5 * kMs));
  }
  stop.store(true);
  join_all(threads);
  const Nanos end = now_ns();
  std::vector<Nanos> all;
  std::int64_t used = 0;
  for (int t = 0; t < kThreads; ++t) {
    all.insert(all.end(), requests[t].begin(), requests[t].end());
    used += tokens_used[t];
  }
  std::sort(all.begin(), all.end());
  const double elapsed = static_cast<double>(end - start);
  const double token_bound = static_cast<double>(kTokenB) + elapsed / static_cast<double>(kTokenT) + 64.0;
  std::printf("    %zu requests (%ld refused, %ld gave up), %lld tokens used (bound %.0f) in %.3f s\n", all.size(),
              refused.load(), gave_up.load(), static_cast<long long>(used), token_bound, seconds(end - start));
  CHECK(!all.empty(), "no request went through");
  CHECK(gave_up.load() > 0 && refused.load() > 0, "the run never gave up or refused: it tested too little");
  check_every_window(all, kRequestT, kRequestB, "dual bucket requests");
  CHECK(static_cast<double>(used) <= token_bound, "tokens used ", used, " exceed burst + refill ", token_bound);
  CHECK(bucket.queued() == 0 && bucket.standing_by() == 0, bucket.queued(), " tickets left in the queue");
}

// The queue keeps arrival order and follows every change. Callers arrive one after another
// (each enqueued before the next starts, so the arrival order is known) and wait with no
// deadline, while this thread keeps changing the token rate 10x either way, the burst, and gives
// tokens back: every caller must be admitted (no lost wake-up: the watchdog would fire), in
// exactly the order it arrived, and the queue must end empty.
void dual_bucket_queue_order_and_changes() {
  constexpr int kCallers = 64;
  DualBucket bucket(100 * kUs, 1, 20 * kUs, 50);  // tokens: 50,000/s or 5,000/s
  std::vector<Nanos> went(kCallers, 0);  // the instant each was admitted (read under the queue's mutex)
  std::atomic<int> arrived{0};
  std::atomic<bool> done{false};
  std::thread changer([&] {
    Rng rng(7);
    bool fast = true;
    while (!done.load()) {
      const Nanos now = now_ns();
      switch (rng.below(4)) {
        case 0: bucket.set_token_interval((fast = !fast) ? 20 * kUs : 200 * kUs, now); break;
        case 1: bucket.set_token_burst(1 + rng.below(100)); break;
        case 2: bucket.settle(100, rng.below(100), now); break;
        default: bucket.set_request_interval(50 * kUs + rng.below(100 * kUs), now); break;
      }
      sleep_for_ns(rng.below(2 * kMs));
    }
  });
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    std::atomic<bool> queued{false};
    callers.emplace_back([&, c] {
      DualBucket::Ticket ticket(bucket, 20 + c % 50, omnilimit::kForever);
      DualBucket::Status status = bucket.arrive(ticket, now_ns());
      queued.store(true);
      while (status == DualBucket::Status::queued) status = bucket.wait(ticket, omnilimit::kForever);
      CHECK(status == DualBucket::Status::admitted, "caller ", c, " was not admitted");
      went[c] = ticket.planned_ns();
    });
    while (!queued.load()) std::this_thread::yield();  // arrivals in a known order
    arrived.fetch_add(1);
  }
  join_all(callers);
  done.store(true);
  changer.join();
  for (int c = 1; c < kCallers; ++c) {
    CHECK(went[c - 1] <= went[c], "caller ", c, " went at ", went[c], ", before caller ", c - 1, " (", went[c - 1], ")");
  }
  CHECK(bucket.queued() == 0, bucket.queued(), " tickets left in the queue");
}

// A coroutine holding a token-budget ticket (AsyncWait's `ticket`).
class TicketCoroutine final : public LoopTask {
 public:
  explicit TicketCoroutine(FakeLoop& loop) : LoopTask(loop) {}
  // As ~AsyncWait: the ticket leaves the queue (under the bucket's mutex) before the Waker goes
  // (after `linger`, as in ~SemCoroutine).
  ~TicketCoroutine() override {
    if (linger > 0) sleep_for_ns(linger);
    ticket.reset();
  }

  Nanos timer() const noexcept { return std::min({head_at, give_up_at, deadline}); }

  std::optional<DualBucket::Ticket> ticket;
  std::int64_t tokens = 0;
  Nanos deadline = kForever;
  Nanos give_up_at = kForever;  // an impatient caller (interrupted): kForever for the others
  bool abandon = false;         // gives up by being dropped (~Ticket leaves), not by leave()
  Nanos linger = 0;
  bool done = false;
  Nanos head_at = kForever;  // the instant poll() gave at the last look (kForever: not the head)
  bool standing = false;     // standing by at the last look (head_at is then its deadline)
  long seen_wakes = 0;       // wakes() just before the last look
};

// 8 threads take one request and 1..64 tokens together through the queue (arrive/wait, as in
// dual_bucket_under_load) while 2 fake event loops run coroutine tickets through the Waker path:
// arrive, then poll() on every post and at the instant poll() returned (the loop's timer); some
// with deadlines, some giving up early (leave(), or dropped while queued, leaving in the
// destructor as an abandoned AsyncWait does). This thread settles (charging and giving back),
// caps tokens and requests and flips the token interval 4x. The request window bound holds over
// every admission (threads and coroutines), the tokens used stay within burst + the refill at
// the pace in force, period by period (+ what this thread gave back), every coroutine ends, every
// post is taken, and the queue ends empty. Lost wake-ups are looked for directly: each loop
// re-polls its waiters every few ms, and a ticket that nothing woke since its last look must find
// the same thing (not the head; or the head with the same instant, admitted once that has come):
// becoming the head, being refused or having one's instant moved all come with a wake, made
// under the bucket's mutex.
void dual_bucket_coroutine_tickets() {
  constexpr Nanos kRequestT = 200 * kUs;
  constexpr std::int64_t kRequestB = 8;
  // Tokens are the scarcer budget here (the callers ask for about 120,000 a second), so the token
  // bound below is tight.
  constexpr Nanos kTokenT = 10 * kUs;         // 100,000 tokens/s
  constexpr Nanos kSlowTokenT = 4 * kTokenT;  // 25,000 tokens/s
  constexpr std::int64_t kTokenB = 400;
  constexpr int kWorkers = kThreads / 2;
  constexpr int kLoops = 2;
  constexpr std::size_t kPerLoop = 6;
  constexpr Nanos kRunFor = 1000 * kMs;
  constexpr Nanos kAuditEvery = 3 * kMs;
  constexpr Nanos kDrainLimit = 5 * kSec;
  using Status = DualBucket::Status;
  DualBucket bucket(kRequestT, kRequestB, kTokenT, kTokenB);
  FakeLoop loops[kLoops];  // declared after `bucket`: destroyed before it

  struct Tally {
    std::vector<Nanos> requests;  // planned_ns() of each admission
    std::int64_t tokens_used = 0;
    long started = 0, admitted = 0, refused = 0, gave_up = 0, abandoned = 0, timed_out = 0;
    long posts = 0, stale_posts = 0, looks_after_post = 0, timer_looks = 0, audits = 0, lost = 0, stuck = 0;
  };
  std::vector<Tally> workers(kWorkers);
  std::vector<Tally> tallies(kLoops);
  std::atomic<bool> stop{false};
  StartGate gate;
  std::vector<std::thread> threads;
  for (int w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      Rng rng(1400 + static_cast<std::uint64_t>(w));
      Tally& mine = workers[static_cast<std::size_t>(w)];
      gate.wait();
      while (!stop.load(std::memory_order_relaxed)) {
        const std::int64_t tokens = 1 + rng.below(64);
        const Nanos now = now_ns();
        const Nanos deadline = rng.below(8) == 0 ? kForever : now + rng.below(4 * kMs);
        DualBucket::Ticket ticket(bucket, tokens, deadline);
        ++mine.started;
        Status status = bucket.arrive(ticket, now);
        if (status == Status::queued) {
          const bool impatient = rng.below(6) == 0;
          const Nanos until = impatient ? now + rng.below(kMs) : deadline;
          status = bucket.wait(ticket, until);
          if (status == Status::queued && impatient) {
            bucket.leave(ticket);
            ++mine.gave_up;
            continue;
          }
        }
        if (status != Status::admitted) {  // refused, or still queued at its deadline (~Ticket leaves)
          ++mine.refused;
          sleep_for_ns(rng.below(300 * kUs));
          continue;
        }
        ++mine.admitted;
        const Nanos went = now_ns();
        CHECK(ticket.planned_ns() <= went, "thread admitted at ", ticket.planned_ns(), " after reading ", went);
        mine.requests.push_back(ticket.planned_ns());
        const std::int64_t used = rng.below(2) == 0 ? tokens : rng.below(tokens + 1);
        mine.tokens_used += used;
        bucket.settle(tokens, used, now_ns());
      }
    });
  }
  for (int l = 0; l < kLoops; ++l) {
    threads.emplace_back([&, l] {
      FakeLoop& loop = loops[l];
      Tally& t = tallies[static_cast<std::size_t>(l)];
      Rng rng(1500 + static_cast<std::uint64_t>(l));
      std::vector<std::shared_ptr<TicketCoroutine>> active;

      // What a coroutine does with what poll() (or arrive()) told it.
      auto handle = [&](TicketCoroutine& c, Status s, Nanos now) {
        switch (s) {
          case Status::admitted: {
            const Nanos went = now_ns();
            CHECK(c.ticket->planned_ns() <= went, "coroutine admitted at ", c.ticket->planned_ns(),
                  " after reading ", went);
            t.requests.push_back(c.ticket->planned_ns());
            const std::int64_t used = rng.below(2) == 0 ? c.tokens : rng.below(c.tokens + 1);
            t.tokens_used += used;
            bucket.settle(c.tokens, used, now_ns());  // re-plans: may wake this loop's own waiters
            ++t.admitted;
            c.done = true;
            return;
          }
          case Status::refused:
          case Status::closed:  // (nothing closes the bucket here)
            ++t.refused;
            c.done = true;
            return;
          case Status::queued:
            if (now >= c.give_up_at) {
              if (c.abandon) {
                ++t.abandoned;  // dropped with its ticket queued: ~TicketCoroutine leaves
                c.linger = rng.below(100 * kUs);
              } else {
                bucket.leave(*c.ticket);
                ++t.gave_up;
              }
              c.done = true;
            } else if (now >= c.deadline) {  // still queued at its deadline: those ahead were late
              bucket.leave(*c.ticket);
              ++t.timed_out;
              c.done = true;
            }
            return;
        }
      };
      // One look (poll). Returns what it found, the instant in *head_at (a caller standing by:
      // its deadline, with *standing set).
      auto poll = [&](TicketCoroutine& c, Nanos now, Nanos* head_at, bool* standing) {
        Nanos wake_at = kForever;
        const Status s = bucket.poll(*c.ticket, now, &wake_at, standing);
        *head_at = s == Status::queued ? wake_at : kForever;
        return s;
      };
      auto look = [&](TicketCoroutine& c) {
        c.seen_wakes = c.wakes();
        const Nanos now = now_ns();
        const Status s = poll(c, now, &c.head_at, &c.standing);
        handle(c, s, now);
      };

      gate.wait();
      Nanos next_start = 0, next_audit = now_ns() + kAuditEvery, drain_until = kForever;
      bool rescued = false;
      for (;;) {
        Nanos now = now_ns();
        const bool stopping = stop.load(std::memory_order_relaxed);
        if (stopping && drain_until == kForever) drain_until = now + kDrainLimit;
        if (!stopping && active.size() < kPerLoop && now >= next_start) {  // a coroutine arrives
          auto c = std::make_shared<TicketCoroutine>(loop);
          c->tokens = 1 + rng.below(64);
          c->deadline = rng.below(8) == 0 ? kForever : now + rng.below(4 * kMs);
          if (rng.below(6) == 0) {
            c->give_up_at = now + rng.below(kMs);
            c->abandon = rng.below(2) == 0;
          }
          c->ticket.emplace(bucket, c->tokens, c->deadline, c.get());
          ++t.started;
          const Status s = bucket.arrive(*c->ticket, now);
          if (s == Status::queued) {
            look(*c);  // its first look: the head learns its instant
          } else {
            handle(*c, s, now);
          }
          if (!c->done) active.push_back(std::move(c));
          next_start = now + rng.below(300 * kUs);
        }
        if (stopping && active.empty()) break;

        Nanos until = next_audit;
        if (!stopping && active.size() < kPerLoop) until = std::min(until, next_start);
        for (const auto& c : active) until = std::min(until, c->timer());
        for (const std::shared_ptr<LoopTask>& task : loop.take(until)) {
          ++t.posts;
          TicketCoroutine& c = static_cast<TicketCoroutine&>(*task);
          if (c.done) {
            ++t.stale_posts;
            continue;
          }
          ++t.looks_after_post;
          look(c);
        }

        now = now_ns();
        for (const auto& c : active) {
          if (c->done || c->timer() > now) continue;
          ++t.timer_looks;
          look(*c);
        }

        if (now >= next_audit) {
          next_audit = now + kAuditEvery;
          for (const auto& cp : active) {
            TicketCoroutine& c = *cp;
            if (c.done) continue;
            ++t.audits;
            const long before = c.wakes();
            const Nanos at_now = now_ns();
            Nanos head_at = kForever;
            bool standing = false;
            const Status s = poll(c, at_now, &head_at, &standing);
            if (c.wakes() == c.seen_wakes) {  // nothing woke it since just before its last look
              // Standing by, only its deadline ends the stand-by without a wake (joining the
              // queue comes with one); in the queue, as before.
              const bool same = c.standing ? (s == Status::queued && standing && head_at == c.head_at) ||
                                                 (s == Status::refused && at_now >= c.deadline)
                                : c.head_at == kForever
                                    ? s == Status::queued && !standing && head_at == kForever
                                    : (s == Status::queued && !standing && head_at == c.head_at) ||
                                          (s == Status::admitted && at_now >= c.head_at);
              if (!same) {
                ++t.lost;
                auto instant = [](Nanos at) { return at == kForever ? std::string("none") : std::to_string(at); };
                CHECK(false, "lost wake-up: a ticket that nothing woke since its last look (which found it ",
                      c.standing                 ? "standing by until " + instant(c.head_at)
                      : c.head_at == kForever ? "behind the head"
                                              : "the head, instant " + instant(c.head_at),
                      ") now finds it ", name_of(s), ", instant ", instant(head_at), " (now ", at_now, ")");
              }
            }
            c.seen_wakes = before;
            c.head_at = head_at;
            c.standing = standing;
            handle(c, s, at_now);
          }
        }
        if (!rescued && now >= drain_until) {  // nothing can legitimately wait this long
          rescued = true;
          for (const auto& c : active) {
            if (c->done) continue;
            ++t.stuck;
            ++t.abandoned;
            c->done = true;
          }
        }
        active.erase(std::remove_if(active.begin(), active.end(),
                                    [](const std::shared_ptr<TicketCoroutine>& c) { return c->done; }),
                     active.end());
      }
      t.posts += static_cast<long>(loop.take(now_ns()).size());
    });
  }

  // The token refill, period by period. set_token_interval(T, a) keeps the tokens owed at `a` and
  // refills at the new pace from `a` on: as if the pace had changed at `a` (this thread's clock
  // reading, so the periods follow one another). Only the decisions made between `a` and the
  // rescale itself (the call waits for the bucket's mutex) still use the old pace; after a
  // slow-down that is at most (after - a) * (1/fast - 1/slow) more tokens, counted in `slack`.
  double refill = 0.0, slack = 0.0;
  Nanos period_start = 0, pace = kTokenT;
  const Nanos start = now_ns();
  period_start = start;
  gate.open();
  Rng rng(1414);
  std::int64_t given_back = 0;
  long changes = 0, pace_changes = 0;
  while (now_ns() < start + kRunFor) {
    const Nanos now = now_ns();
    switch (rng.below(5)) {
      case 0: bucket.settle(0, 1 + rng.below(100), now); break;  // a call that used more than it took
      case 1: {
        const std::int64_t n = 1 + rng.below(100);
        bucket.settle(n, 0, now);  // tokens given back that nobody took: added to the bound
        given_back += n;
        break;
      }
      case 2: bucket.limit_available_tokens(rng.below(kTokenB + 1), now); break;
      case 3: {
        const Nanos next = pace == kTokenT ? kSlowTokenT : kTokenT;
        const Nanos old = bucket.set_token_interval(next, now);
        const Nanos after = now_ns();
        CHECK(old == pace, "set_token_interval replaced ", old, ", expected ", pace);
        refill += static_cast<double>(now - period_start) / static_cast<double>(pace);
        if (next > pace) slack += static_cast<double>(after - now) * (1.0 / static_cast<double>(pace) - 1.0 / static_cast<double>(next));
        period_start = now;
        pace = next;
        ++pace_changes;
        break;
      }
      default: bucket.limit_available_requests(rng.below(kRequestB + 1), now); break;
    }
    ++changes;
    sleep_for_ns(rng.below(3 * kMs));
  }
  stop.store(true);
  join_all(threads);
  const Nanos end = now_ns();
  refill += static_cast<double>(end - period_start) / static_cast<double>(pace);

  std::vector<Nanos> all;
  std::int64_t used = 0;
  Tally threads_sum, loops_sum;
  for (const Tally& w : workers) {
    all.insert(all.end(), w.requests.begin(), w.requests.end());
    used += w.tokens_used;
    threads_sum.started += w.started;
    threads_sum.admitted += w.admitted;
    threads_sum.refused += w.refused;
    threads_sum.gave_up += w.gave_up;
  }
  for (int l = 0; l < kLoops; ++l) {
    const Tally& t = tallies[static_cast<std::size_t>(l)];
    all.insert(all.end(), t.requests.begin(), t.requests.end());
    used += t.tokens_used;
    const long ended = t.admitted + t.refused + t.gave_up + t.abandoned + t.timed_out;
    CHECK(t.started == ended, "loop ", l, ": ", t.started, " tickets started, ", ended, " ended");
    CHECK(t.posts == loops[l].posts(), "loop ", l, ": ", loops[l].posts(), " posts made, ", t.posts, " taken");
    CHECK(t.admitted > 0, "loop ", l, ": no coroutine ticket was admitted");
    loops_sum.started += t.started;
    loops_sum.admitted += t.admitted;
    loops_sum.refused += t.refused;
    loops_sum.gave_up += t.gave_up;
    loops_sum.abandoned += t.abandoned;
    loops_sum.timed_out += t.timed_out;
    loops_sum.posts += t.posts;
    loops_sum.stale_posts += t.stale_posts;
    loops_sum.looks_after_post += t.looks_after_post;
    loops_sum.timer_looks += t.timer_looks;
    loops_sum.audits += t.audits;
    loops_sum.lost += t.lost;
    loops_sum.stuck += t.stuck;
  }
  const long dropped = loops[0].dropped_wakes() + loops[1].dropped_wakes();
  std::sort(all.begin(), all.end());
  const double token_bound = static_cast<double>(kTokenB) + refill + slack + 64.0 + static_cast<double>(given_back);
  std::printf("    threads: %ld tickets, %ld admitted, %ld refused or late, %ld gave up\n", threads_sum.started,
              threads_sum.admitted, threads_sum.refused, threads_sum.gave_up);
  std::printf("    coroutines on %d loops: %ld tickets, %ld admitted, %ld refused, %ld late, %ld left early, "
              "%ld dropped while queued\n",
              kLoops, loops_sum.started, loops_sum.admitted, loops_sum.refused, loops_sum.timed_out,
              loops_sum.gave_up, loops_sum.abandoned);
  std::printf("    %ld posts (%ld for tickets that had ended), %ld timer looks, %ld wakes during a waiter's "
              "destruction, %ld audits, %ld lost, %ld stuck; %ld changes by this thread\n",
              loops_sum.posts, loops_sum.stale_posts, loops_sum.timer_looks, dropped, loops_sum.audits,
              loops_sum.lost, loops_sum.stuck, changes);
  std::printf("    %zu requests, %lld tokens used in %.3f s; bound %.0f = burst + refill %.0f (%ld pace changes) "
              "+ slack %.0f + 64 + %lld given back\n",
              all.size(), static_cast<long long>(used), seconds(end - start), token_bound, refill, pace_changes, slack,
              static_cast<long long>(given_back));
  CHECK(loops_sum.lost == 0, loops_sum.lost, " lost wake-ups seen by the audits");
  CHECK(loops_sum.stuck == 0, loops_sum.stuck, " coroutine tickets still queued ", seconds(kDrainLimit),
        " s after the run (lost wake-up?)");
  CHECK(loops_sum.looks_after_post > 0, "no coroutine was ever woken");
  CHECK(threads_sum.admitted > 0, "no thread was ever admitted");
  check_every_window(all, kRequestT, kRequestB, "dual bucket requests (threads and coroutines)");
  CHECK(static_cast<double>(used) <= token_bound, "tokens used ", used, " exceed burst + refill ", token_bound);
  CHECK(bucket.queued() == 0, bucket.queued(), " tickets left in the queue");
  if (dropped == 0) std::printf("    note: no wake raced a waiter's destruction (path not exercised)\n");
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"dual bucket: requests and tokens together, settled, held and capped", dual_bucket_under_load},
      {"shared dual bucket (entries, futexes, robust mutex): the same, through two buckets over one state",
       shared_dual_bucket_under_load},
      {"dual bucket: arrival order kept through rate, burst and settle changes", dual_bucket_queue_order_and_changes},
      {"dual bucket: coroutine tickets on 2 fake loops alongside 8 threads", dual_bucket_coroutine_tickets},
  });
}
