// DualBucket: a request budget and a token budget, reserved together.
//
// LLM providers limit requests per minute and tokens per minute. A call that will use about N
// tokens must take one request and N tokens at the same instant, or neither: taking the request
// and then waiting for tokens would hold a request slot nobody uses, and taking tokens first the
// reverse. So a reservation computes when each bucket could serve it, picks the later instant,
// and commits both as arrivals at that instant (Gcra::reserve_at); when that instant lies beyond
// the caller's patience nothing is committed at all.
//
// Why a mutex here, when Gcra is lock-free. Committing two atomic words together cannot be done
// with one CAS; with two, a reservation could take the request and lose the race for the tokens.
// Every change to either bucket therefore goes through this class under one mutex (held for
// ~100 ns, never while sleeping), and the buckets' own CAS loops always succeed at the first try.
// Limiters without a token budget keep using a lone Gcra, lock-free.
//
// Debt. A call larger than the token burst is not refused: GCRA lets the bucket go into debt and
// the caller waits in proportion ((N - burst) intervals on a full bucket), never forever.
//
// Settling. After the call, the caller knows what it really used: settle() charges the
// difference (the next callers wait for it) or gives it back (never beyond a full bucket).
//
// Thread-safety: every member is safe from any thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <new>

#include "omnilimit/clock.hpp"
#include "omnilimit/gcra.hpp"

namespace omnilimit {

class DualBucket {
 public:
  struct Reservation {
    bool admitted = false;
    Nanos wait_ns = 0;      // from `now` (if not admitted: the wait it would have needed)
    Nanos ready_at_ns = 0;  // when the call may go
    std::int64_t tokens = 0;
    omnilimit::Reservation requests_part;
    omnilimit::Reservation tokens_part;  // not admitted when tokens == 0
  };

  DualBucket(Nanos request_interval_ns, std::int64_t request_burst, Nanos token_interval_ns,
             std::int64_t token_burst)
      : requests_(request_interval_ns, request_burst), tokens_(token_interval_ns, token_burst) {}
  DualBucket(const DualBucket&) = delete;
  DualBucket& operator=(const DualBucket&) = delete;

  // One request and `tokens` tokens (>= 0) at the same instant, if that instant is within
  // `max_wait_ns` of `now` (kForever: whatever the wait); otherwise nothing is committed.
  Reservation reserve(std::int64_t tokens, Nanos max_wait_ns, Nanos now) {
    if (tokens < 0) throw std::invalid_argument("tokens must be >= 0");
    std::lock_guard<std::mutex> lock(mutex_);
    Reservation r;
    r.tokens = tokens;
    const Nanos wait = std::max(requests_.wait_for(1, now), tokens > 0 ? tokens_.wait_for(tokens, now) : 0);
    r.wait_ns = wait;
    if (wait > max_wait_ns || wait == kForever) return r;
    const Nanos at = saturating_add(now, wait);
    r.requests_part = requests_.reserve_at(1, at, now);
    if (tokens > 0) r.tokens_part = tokens_.reserve_at(tokens, at, now);
    if (!r.requests_part.admitted || (tokens > 0 && !r.tokens_part.admitted)) {
      // Cannot happen while every change goes through this mutex; undo rather than half-commit.
      requests_.refund(r.requests_part, now);
      tokens_.refund(r.tokens_part, now);
      r.requests_part = r.tokens_part = omnilimit::Reservation{};
      return r;
    }
    r.admitted = true;
    r.ready_at_ns = r.requests_part.ready_at_ns;
    return r;
  }

  // Gives back a reservation whose time has not come (an interrupted waiter), each part only if
  // it is still the latest of its bucket (see Gcra::refund).
  void refund(const Reservation& r, Nanos now) {
    std::lock_guard<std::mutex> lock(mutex_);
    requests_.refund(r.requests_part, now);
    tokens_.refund(r.tokens_part, now);
  }

  // A call that reserved `reserved` tokens used `used`: charge or give back the difference.
  void settle(std::int64_t reserved, std::int64_t used, Nanos now) {
    if (reserved < 0 || used < 0) throw std::invalid_argument("token counts must be >= 0");
    std::lock_guard<std::mutex> lock(mutex_);
    if (used > reserved) tokens_.charge(used - reserved, now);
    if (used < reserved) tokens_.give_back(reserved - used, now);
  }

  // A provider's 429: nothing before `until_ns`, then both buckets start empty.
  void hold_until(Nanos until_ns) {
    std::lock_guard<std::mutex> lock(mutex_);
    requests_.hold_until(until_ns);
    tokens_.hold_until(until_ns);
  }
  void limit_available_requests(std::int64_t n, Nanos now) {
    std::lock_guard<std::mutex> lock(mutex_);
    requests_.limit_available(n, now);
  }
  void limit_available_tokens(std::int64_t n, Nanos now) {
    std::lock_guard<std::mutex> lock(mutex_);
    tokens_.limit_available(n, now);
  }

  // Live changes (see Gcra::set_interval / set_burst); each returns the value it replaced.
  Nanos set_request_interval(Nanos interval_ns, Nanos now) {
    std::lock_guard<std::mutex> lock(mutex_);
    const Nanos old = requests_.interval_ns();
    requests_.set_interval(interval_ns, now);
    return old;
  }
  Nanos set_token_interval(Nanos interval_ns, Nanos now) {
    std::lock_guard<std::mutex> lock(mutex_);
    const Nanos old = tokens_.interval_ns();
    tokens_.set_interval(interval_ns, now);
    return old;
  }
  void set_request_burst(std::int64_t burst) {
    std::lock_guard<std::mutex> lock(mutex_);
    requests_.set_burst(burst);
  }
  void set_token_burst(std::int64_t burst) {
    std::lock_guard<std::mutex> lock(mutex_);
    tokens_.set_burst(burst);
  }

  std::int64_t requests_available(Nanos now) const { return requests_.tokens_available(now); }
  std::int64_t tokens_available(Nanos now) const { return tokens_.tokens_available(now); }
  const Gcra& requests() const noexcept { return requests_; }
  const Gcra& tokens() const noexcept { return tokens_; }

  // In the child of fork(): the mutex may have been held by a thread the child does not have.
  void reinit_after_fork() noexcept {
    new (&mutex_) std::mutex();
    requests_.reinit_after_fork();
    tokens_.reinit_after_fork();
  }

 private:
  mutable std::mutex mutex_;
  Gcra requests_;
  Gcra tokens_;
};

}  // namespace omnilimit
