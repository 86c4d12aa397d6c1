// Gcra: a token bucket kept as one atomic word (the Generic Cell Rate Algorithm).
//
// Why one word. A token bucket with capacity B (the burst) that refills one token every T ns
// (the emission interval) is fully described by a single instant, the theoretical arrival time
// (TAT): the moment at which the bucket would be full again if nothing else were taken. A request
// of cost n arriving at `now` is admitted once
//
//     max(TAT, now) + n*T - B*T  <=  now          (the bucket holds at least n tokens)
//
// and admitting it moves TAT to max(TAT, now) + n*T. The left-hand side minus `now` is exactly
// how long the caller would have to wait, so "try", "reserve and wait" and "how many tokens are
// left" all fall out of the same arithmetic, and the whole state fits in one std::atomic<int64_t>
// updated by compare-and-swap: no lock, no refill timer, nothing to drift. TAT == 0 means "never
// used" (any real `now` is later).
//
// Waiting without a queue. reserve() commits a request's place in time and returns how long the
// caller must sleep. Each reservation pushes TAT on by n*T, so callers are served in the order
// their reservations landed, and each sleeps exactly until its turn: no polling, no wake-up storm.
// reserve() commits only when the wait fits in `max_wait`; a caller that would time out takes
// nothing and learns so at once (the limiter then lets it stand by until its deadline, in case a
// change brings its turn within reach: standby.hpp).
//
// Time. Instants are steady_clock ns (clock.hpp). Every operation has a form that takes `now`
// explicitly, so tests can run the algorithm over fixed instants. A stale or backwards `now`
// (a thread preempted between reading the clock and deciding) only makes a decision more
// conservative: max(TAT, now) never moves TAT backwards. Intermediate arithmetic is 128-bit and
// results saturate at kForever, so far-future reservations, enormous bursts or tiny rates never
// overflow. A TAT that reaches kForever (about 292 years after boot) stays there and admits
// nothing more.
//
// Rounding. T is a whole number of ns, rounded up from the configured rate, so the bucket never
// admits more than the configured rate; the shortfall is under 1 ns per request (1e-7 of a
// 6000-RPM limit). Rates faster than one request per ns behave as one per ns.
//
// Live changes. set_interval() and set_burst() are rare and serialised by a lock (ConfigLock,
// which processes sharing a bucket share too); decisions never take it. A decision must not mix the old pace with a TAT already rescaled to the new one (or the
// reverse), so the pair (T, B) is guarded by a sequence counter that writers make odd while they
// work: a decision reads the counter, T, B and TAT, re-reads the counter and starts over if a
// change began meanwhile. A change that begins after that check is caught by the CAS instead:
// set_interval() always moves TAT (by at least 1 ns) while rescaling it, so a decision computed with
// the old T can only commit before the rescale, which then converts it with everything else.
//
// Non-promise: refund() gives a reservation back only while it is still the latest one. A hole in
// the middle of the schedule cannot be represented by one word, and handing it to a newcomer
// would put two requests in one slot, so a cancelled reservation that others have queued behind
// is simply lost (the limiter errs on the side of admitting less).
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <thread>

#include "omnilimit/clock.hpp"
#include "omnilimit/process.hpp"

#if !defined(__SIZEOF_INT128__)
#error "omnilimit's core needs a compiler with a 128-bit integer type (GCC or Clang on a 64-bit target)"
#endif

namespace omnilimit {

using Wide = __int128;

inline constexpr Nanos clamp_to_nanos(Wide value) noexcept {
  if (value > static_cast<Wide>(kForever)) return kForever;
  if (value < -static_cast<Wide>(kForever)) return -kForever;
  return static_cast<Nanos>(value);
}

// The outcome of Gcra::reserve(). A plain value: copy it, keep it for refund().
struct Reservation {
  bool admitted = false;
  // How long after `now` the request may go: 0 for "at once". When not admitted, the wait it
  // would have needed (kForever when that does not fit in 64 bits).
  Nanos wait_ns = 0;
  Nanos ready_at_ns = 0;    // now + wait_ns (admitted reservations only)
  Nanos tat_ns = 0;         // the TAT this reservation committed
  Nanos increment_ns = 0;   // cost * T at the time of the reservation
  std::int64_t cost = 0;
};

// A copy of a Gcra's state, to plan on without committing anything: a queue of callers can work
// out when each of them will go by taking, in order, from a copy of the bucket.
//
// `ref` is the instant a caller's claim counts from (when it arrived, or when the callers ahead of
// it went): a cost within the burst goes once the bucket holds it; a larger one goes into debt
// and waits (cost - B) intervals from a full bucket at `ref`, as reserve() at `ref` would.
struct GcraState {
  Nanos tat_ns = 0;
  Nanos interval_ns = 1;
  std::int64_t burst = 1;

  // The first instant >= `ref` at which `cost` tokens can go: max(TAT, ref) + (cost - B)*T
  // (kForever once saturated).
  Nanos earliest(std::int64_t cost, Nanos ref) const noexcept {
    if (tat_ns == kForever) return kForever;
    const Wide at = static_cast<Wide>(std::max(tat_ns, ref)) + static_cast<Wide>(cost - burst) * interval_ns;
    return at > ref ? clamp_to_nanos(at) : ref;
  }
  // The TAT after `cost` tokens go at `at` (>= earliest(cost, ref)): an arrival at `at` for a cost
  // within the burst; for a larger one, the debt run up from max(TAT, ref).
  Nanos tat_after(std::int64_t cost, Nanos at, Nanos ref) const noexcept {
    const Wide excess = static_cast<Wide>(std::max<std::int64_t>(cost - burst, 0)) * interval_ns;
    const Wide base = std::max(static_cast<Wide>(std::max(tat_ns, ref)), static_cast<Wide>(at) - excess);
    return clamp_to_nanos(base + static_cast<Wide>(cost) * interval_ns);
  }
  void take(std::int64_t cost, Nanos at, Nanos ref) noexcept { tat_ns = tat_after(cost, at, ref); }
};

// The words of one bucket. In an in-process Gcra they are members; in a shared-memory segment
// every process that maps the segment shares them, and so one bucket: every member is a lock-free
// 64-bit atomic (checked below), which on Linux is also address-free, so it works at whatever
// address each process maps it. config_owner holds the process changing T or B, as a ProcessWord
// (pid and start time: a holder that died is told from a newer process given its pid).
struct GcraWords {
  alignas(64) std::atomic<Nanos> tat_ns{0};
  std::atomic<Nanos> interval_ns{1};
  std::atomic<std::int64_t> burst{1};
  std::atomic<std::uint64_t> config_sequence{0};  // odd while set_interval/set_burst run
  std::atomic<std::int64_t> config_owner{0};
};
static_assert(std::atomic<Nanos>::is_always_lock_free && std::atomic<std::uint64_t>::is_always_lock_free,
              "a bucket shared between processes needs lock-free 64-bit atomics");


class Gcra {
 public:
  // T in ns (>= 1) and the burst B (>= 1 requests). Throws std::invalid_argument otherwise.
  Gcra(Nanos interval_ns, std::int64_t burst) : w_(&own_) { init_words(own_, interval_ns, burst); }

  // A bucket over words that live elsewhere: in a shared-memory segment, where every process that
  // maps it shares one bucket (see GcraWords). The words must have been set up by init_words()
  // and outlive this object.
  explicit Gcra(GcraWords& shared) noexcept : w_(&shared) {}

  // Sets up fresh words (before any Gcra uses them). Throws std::invalid_argument for a bad
  // interval or burst.
  static void init_words(GcraWords& w, Nanos interval_ns, std::int64_t burst) {
    w.interval_ns.store(check_interval(interval_ns), std::memory_order_relaxed);
    w.burst.store(check_burst(burst), std::memory_order_relaxed);
    w.tat_ns.store(0, std::memory_order_relaxed);
    w.config_sequence.store(0, std::memory_order_relaxed);
    w.config_owner.store(0, std::memory_order_relaxed);
  }

  Gcra(const Gcra&) = delete;
  Gcra& operator=(const Gcra&) = delete;

  // T for a rate of `count` requests per `period_s` seconds, rounded up to whole ns (at least 1,
  // at most kForever). Throws std::invalid_argument unless both are finite and > 0.
  static Nanos interval_for(double count, double period_s) {
    if (!(std::isfinite(count) && count > 0.0) || !(std::isfinite(period_s) && period_s > 0.0)) {
      throw std::invalid_argument("a rate needs a finite count > 0 per a finite period > 0");
    }
    const double interval = std::ceil(period_s * 1e9 / count);
    if (!(interval < 9.2e18)) return kForever;
    return std::max<Nanos>(1, static_cast<Nanos>(interval));
  }

  // Takes `cost` tokens if the bucket holds them at `now`. Thread-safe; takes no lock.
  bool try_acquire(std::int64_t cost, Nanos now) { return reserve(cost, 0, now).admitted; }
  bool try_acquire(std::int64_t cost = 1) { return try_acquire(cost, now_ns()); }

  // Commits `cost` tokens if the caller would have them within `max_wait_ns` of `now`
  // (kForever: whatever the wait). Returns the wait; commits nothing when it does not fit.
  // Thread-safe; takes no lock (it only yields while a set_interval/set_burst is half done).
  Reservation reserve(std::int64_t cost, Nanos max_wait_ns, Nanos now) {
    check_cost(cost);
    if (max_wait_ns < 0) throw std::invalid_argument("max_wait_ns must be >= 0");
    for (;;) {
      const Snapshot snap = snapshot();
      const Nanos tat = snap.tat_ns;
      const Wide increment = static_cast<Wide>(cost) * snap.interval_ns;
      if (tat == kForever) {  // saturated: the schedule already runs past the end of time
        Reservation r;
        r.cost = cost;
        r.wait_ns = kForever;
        return r;
      }
      const Nanos base = std::max(tat, now);
      const Wide wait =
          (static_cast<Wide>(base) - now) + increment - static_cast<Wide>(snap.burst) * snap.interval_ns;
      Reservation r;
      r.cost = cost;
      r.increment_ns = clamp_to_nanos(increment);
      if (wait > max_wait_ns) {
        r.wait_ns = clamp_to_nanos(wait);
        return r;
      }
      const Nanos new_tat = clamp_to_nanos(static_cast<Wide>(base) + increment);
      Nanos expected = tat;
      if (w_->tat_ns.compare_exchange_strong(expected, new_tat, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
        r.admitted = true;
        r.wait_ns = wait > 0 ? clamp_to_nanos(wait) : 0;
        r.ready_at_ns = saturating_add(now, r.wait_ns);
        r.tat_ns = new_tat;
        return r;
      }
    }
  }
  Reservation reserve(std::int64_t cost, Nanos max_wait_ns) {
    return reserve(cost, max_wait_ns, now_ns());
  }

  // Gives back a reservation whose time has not come (a waiter that was interrupted), provided
  // no later reservation has been made since (see the non-promise above). Returns whether the
  // tokens went back. Thread-safe; takes no lock.
  bool refund(const Reservation& r, Nanos now) {
    if (!r.admitted || now >= r.ready_at_ns || r.tat_ns == kForever) return false;
    Nanos expected = r.tat_ns;
    return w_->tat_ns.compare_exchange_strong(expected, r.tat_ns - r.increment_ns,
                                           std::memory_order_acq_rel, std::memory_order_acquire);
  }
  bool refund(const Reservation& r) { return refund(r, now_ns()); }

  // Whole tokens a caller could take at `now` without waiting, in [0, burst].
  // Thread-safe; takes no lock.
  std::int64_t tokens_available(Nanos now) const {
    const Snapshot snap = snapshot();
    if (snap.tat_ns <= now) return snap.burst;
    const Wide debt = static_cast<Wide>(snap.tat_ns) - now;
    const Wide owed = (debt + snap.interval_ns - 1) / snap.interval_ns;  // tokens still being refilled
    return owed >= snap.burst ? 0 : static_cast<std::int64_t>(snap.burst - owed);
  }
  std::int64_t tokens_available() const { return tokens_available(now_ns()); }

  // How long after `now` a caller would wait for `cost` tokens (0: at once). Commits nothing.
  Nanos wait_for(std::int64_t cost, Nanos now) const {
    check_cost(cost);
    const Snapshot snap = snapshot();
    if (snap.tat_ns == kForever) return kForever;
    const Wide wait = (static_cast<Wide>(std::max(snap.tat_ns, now)) - now) +
                      static_cast<Wide>(cost - snap.burst) * snap.interval_ns;
    return wait > 0 ? clamp_to_nanos(wait) : 0;
  }

  // Commits `cost` tokens for a caller (arrived at `now`) that will go at `at` >= now because it
  // also waits for something else (another bucket), if this bucket allows it to go then:
  // max(TAT, now) + (cost - B)*T <= at, as for reserve(). TAT becomes
  // max(max(TAT, now), at - max(0, cost - B)*T) + cost*T: an arrival at `at` for a cost within the
  // burst, and for a larger one the debt reserve() would run up, paid from `at` on. Not admitted
  // when the bucket does not allow `at`, or another thread changed it meanwhile.
  Reservation reserve_at(std::int64_t cost, Nanos at, Nanos now) {
    check_cost(cost);
    const GcraState state = this->state();
    Reservation r;
    r.cost = cost;
    r.wait_ns = kForever;
    r.increment_ns = clamp_to_nanos(static_cast<Wide>(cost) * state.interval_ns);
    if (state.tat_ns == kForever || at < now || state.earliest(cost, now) > at) return r;
    Nanos expected = state.tat_ns;
    const Nanos new_tat = state.tat_after(cost, at, now);
    if (!w_->tat_ns.compare_exchange_strong(expected, new_tat, std::memory_order_acq_rel, std::memory_order_acquire)) {
      return r;
    }
    r.admitted = true;
    r.wait_ns = at - now;
    r.ready_at_ns = at;
    r.tat_ns = new_tat;
    return r;
  }

  // Takes `cost` more tokens now, whatever the bucket holds (a request turned out to cost more
  // than it reserved): later callers wait for them. Thread-safe; takes no lock.
  void charge(std::int64_t cost, Nanos now) {
    check_cost(cost);
    raise_tat([cost, now](const Snapshot& snap) {
      return static_cast<Wide>(std::max(snap.tat_ns, now)) + static_cast<Wide>(cost) * snap.interval_ns;
    });
  }

  // Gives `cost` tokens back (a request cost less than it reserved), never filling the bucket
  // beyond full. Thread-safe; takes no lock.
  void give_back(std::int64_t cost, Nanos now) {
    check_cost(cost);
    for (;;) {
      const Snapshot snap = snapshot();
      if (snap.tat_ns <= now || snap.tat_ns == kForever) return;  // already full, or saturated
      const Nanos lowered = clamp_to_nanos(std::max(static_cast<Wide>(snap.tat_ns) - static_cast<Wide>(cost) * snap.interval_ns,
                                                    static_cast<Wide>(now)));
      Nanos expected = snap.tat_ns;
      if (w_->tat_ns.compare_exchange_strong(expected, lowered, std::memory_order_acq_rel, std::memory_order_acquire)) {
        return;
      }
    }
  }

  // Admits nothing before `until_ns`, and from then on at most the pace: the bucket is empty at
  // `until_ns` (a provider's 429 says its budget is spent). Moves TAT forward only. Thread-safe;
  // takes no lock.
  void hold_until(Nanos until_ns) {
    // A request is admitted once TAT + T - B*T <= now: the first comes at until_ns exactly.
    raise_tat([until_ns](const Snapshot& snap) {
      return static_cast<Wide>(until_ns) + static_cast<Wide>(snap.burst - 1) * snap.interval_ns;
    });
  }

  // Leaves at most `tokens` available at `now` (a provider reports fewer requests remaining than
  // the bucket holds: the budget was shared, or the limit is lower than configured). Moves TAT
  // forward only; a bucket that holds no more than `tokens` is left alone. Thread-safe; no lock.
  void limit_available(std::int64_t tokens, Nanos now) {
    if (tokens < 0) throw std::invalid_argument("tokens must be >= 0");
    raise_tat([tokens, now](const Snapshot& snap) {
      if (tokens >= snap.burst) return static_cast<Wide>(0);  // at most burst are ever available
      return static_cast<Wide>(now) + static_cast<Wide>(snap.burst - tokens) * snap.interval_ns;
    });
  }

  // Changes T, keeping the accrued state: the tokens owed at `now` stay owed, now at the new
  // pace. Thread-safe (serialised with set_burst by the ConfigLock; see "Live changes" above).
  void set_interval(Nanos interval_ns, Nanos now) {
    check_interval(interval_ns);
    ConfigLock lock(*w_);
    set_interval_locked(interval_ns, &now);
  }
  void set_interval(Nanos interval_ns) {
    check_interval(interval_ns);
    ConfigLock lock(*w_);
    set_interval_locked(interval_ns, nullptr);
  }

  // Changes B. The TAT stays; a smaller burst simply leaves fewer tokens available.
  // Thread-safe.
  void set_burst(std::int64_t burst) {
    check_burst(burst);
    ConfigLock lock(*w_);
    begin_change();
    w_->burst.store(burst);
    end_change();
  }

  // A consistent copy of (TAT, T, B), to plan with (see GcraState).
  GcraState state() const noexcept {
    const Snapshot snap = snapshot();
    return GcraState{snap.tat_ns, snap.interval_ns, snap.burst};
  }

  Nanos interval_ns() const noexcept { return w_->interval_ns.load(std::memory_order_relaxed); }
  std::int64_t burst() const noexcept { return w_->burst.load(std::memory_order_relaxed); }
  Nanos tat_ns() const noexcept { return w_->tat_ns.load(std::memory_order_acquire); }

  // In the child of fork(): the config lock may have been held, and the sequence counter left
  // odd, by a thread that the child does not have. The budget already spent stays spent. Call
  // with no other thread running. A shared bucket is left alone: the parent still uses it.
  void reinit_after_fork() noexcept {
    if (w_ != &own_) return;
    own_.config_owner.store(0, std::memory_order_relaxed);
    const std::uint64_t sequence = own_.config_sequence.load(std::memory_order_relaxed);
    own_.config_sequence.store(sequence + (sequence & 1U), std::memory_order_relaxed);
  }

 private:
  static Nanos check_interval(Nanos interval_ns) {
    if (interval_ns < 1) throw std::invalid_argument("the emission interval must be >= 1 ns");
    return interval_ns;
  }
  static std::int64_t check_burst(std::int64_t burst) {
    if (burst < 1) throw std::invalid_argument("the burst must be >= 1");
    return burst;
  }
  static void check_cost(std::int64_t cost) {
    if (cost < 1) throw std::invalid_argument("the cost must be >= 1");
  }

  struct Snapshot {
    Nanos tat_ns;
    Nanos interval_ns;
    std::int64_t burst;
  };

  // A consistent (TAT, T, B): read while no change is under way (the sequence counter is even and
  // the same before and after). Sequentially consistent loads and stores order the reads against a
  // writer's without standalone fences (which ThreadSanitizer cannot check); on x86-64 they cost
  // what relaxed loads cost.
  Snapshot snapshot() const noexcept {
    for (std::uint32_t spins = 0;; ++spins) {
      const std::uint64_t before = w_->config_sequence.load();
      if (before & 1U) {  // a change is under way: it takes a few ns unless its thread is preempted
        if ((spins & 0xffffU) == 0xffffU) ConfigLock::recover(*w_);  // or its process died mid-change
        std::this_thread::yield();
        continue;
      }
      const Snapshot snap{w_->tat_ns.load(), w_->interval_ns.load(), w_->burst.load()};
      if (w_->config_sequence.load() == before) return snap;
    }
  }

  // TAT = max(TAT, floor(snapshot)), by CAS against a consistent snapshot.
  template <class Floor>
  void raise_tat(Floor&& floor) {
    for (;;) {
      const Snapshot snap = snapshot();
      const Nanos wanted = clamp_to_nanos(floor(snap));
      if (wanted <= snap.tat_ns) return;
      Nanos expected = snap.tat_ns;
      if (w_->tat_ns.compare_exchange_strong(expected, wanted, std::memory_order_acq_rel, std::memory_order_acquire)) {
        return;
      }
    }
  }

  // The lock of set_interval/set_burst: the pid of its holder in config_owner (0: free), so that
  // processes sharing the words share the lock, and one whose holder was killed (kill -9 in the
  // middle of a change) can be taken over: the taker ends the half-done change (the sequence
  // counter goes even again; a TAT already rescaled stays rescaled). Held for a few ns.
  class ConfigLock : public OwnerLock {
   public:
    explicit ConfigLock(GcraWords& w) : OwnerLock(w.config_owner, [&w] { end_dead_change(w); }) {}

    // For a reader stuck on an odd sequence: if the writer's process is gone, end its change.
    static void recover(GcraWords& w) { OwnerLock::recover(w.config_owner, [&w] { end_dead_change(w); }); }

   private:
    static void end_dead_change(GcraWords& w) {
      if (w.config_sequence.load() & 1U) w.config_sequence.fetch_add(1);
    }
  };

  // Writers hold the ConfigLock and change T or B only between these two.
  void begin_change() noexcept { w_->config_sequence.fetch_add(1); }
  void end_change() noexcept { w_->config_sequence.fetch_add(1); }

  // `given_now` null: read the clock once decisions are held off, since every ns by which `now`
  // is stale would be charged again at the new pace.
  void set_interval_locked(Nanos new_interval, const Nanos* given_now) {
    const Nanos old_interval = w_->interval_ns.load(std::memory_order_relaxed);
    if (new_interval == old_interval) return;
    begin_change();
    const Nanos now = given_now != nullptr ? *given_now : now_ns();
    Nanos tat = w_->tat_ns.load();
    for (;;) {
      Nanos new_tat;
      if (tat <= now) {
        new_tat = now;  // nothing owed: the bucket is full either way
      } else if (tat == kForever) {
        new_tat = kForever;  // saturated: a debt past the end of time stays there at any pace
      } else {
        const Wide debt = static_cast<Wide>(tat) - now;
        const Wide scaled = (debt * new_interval + old_interval - 1) / old_interval;
        new_tat = clamp_to_nanos(static_cast<Wide>(now) + scaled);
      }
      if (new_tat == tat && tat != kForever) ++new_tat;  // always move TAT: see "Live changes"
      if (w_->tat_ns.compare_exchange_weak(tat, new_tat)) break;
    }
    w_->interval_ns.store(new_interval);
    end_change();
  }

  GcraWords own_;   // the words of an in-process bucket (unused when shared)
  GcraWords* w_;    // the words in use
};

}  // namespace omnilimit
