// test_dual_bucket_table: DualBucket's promises (dual_bucket.hpp) pinned at exact nanosecond
// instants.
//
// Each table is a list of rows {instant, call, expected result} run in order against one bucket,
// with no thread: every call that takes a `now` takes it from the row (instants relative to kT0).
// Tickets are named 'a', 'b', ... and made by their arrive row. Pinned: a request and its tokens go
// together or not at all, nothing is committed for a queued caller, arrival order, the planned
// instants and how settle / caps / rate changes re-plan them, standing by and refusal at the
// deadline, debt beyond the token burst, the late-head booking rule, leave() and close().
// (leave() reads the clock itself; the tables use it only where the re-plan does not depend on the
// instant: no deadline in the queue, nobody standing by.)

#include <cstdint>
#include <memory>
#include <ostream>
#include <vector>

#include "omnilimit/dual_bucket.hpp"
#include "harness.hpp"

namespace {

using namespace omnilimit::test;
using omnilimit::DualBucket;
using Status = DualBucket::Status;

constexpr Nanos kT0 = 1'000 * kSec;
constexpr Nanos kAny = -1;  // an expected instant that is not checked

// What a look finds: DualBucket::Status, with `queued` split into in the queue and standing by.
enum class Want { admitted, queued, standing, refused, closed };

std::ostream& operator<<(std::ostream& os, Want w) {
  switch (w) {
    case Want::admitted: return os << "admitted";
    case Want::queued: return os << "queued";
    case Want::standing: return os << "standing by";
    case Want::refused: return os << "refused";
    case Want::closed: return os << "closed";
  }
  return os << "?";
}

enum class Op {
  arrive,            // ticket (n tokens, deadline x) arrives: status, want = planned instant
  arrive_fail_fast,  // the same with may_stand_by = false
  poll,              // status, want = wake_at (admitted: the booked instant)
  planned,           // want = the ticket's planned instant
  leave,
  settle,                // n = reserved, x = used
  limit_requests,        // n
  limit_tokens,          // n
  set_request_interval,  // x = the new interval; want = the one it replaced
  set_token_interval,    // x = the new interval; want = the one it replaced
  requests_available,    // want
  tokens_available,      // want
  predicted_wait,        // n = tokens; want
  queued,                // want = callers in the queue
  standing_by,           // want = callers standing by
  close,
};

struct Row {
  Nanos at;  // relative to kT0
  Op op;
  char ticket;
  std::int64_t n;
  Nanos x;
  Want status;
  Nanos want;
};

// Row makers, so that a table reads as what it does.
Row arrive(Nanos at, char t, std::int64_t tokens, Nanos deadline, Want s, Nanos planned = kAny) {
  return {at, Op::arrive, t, tokens, deadline, s, planned};
}
Row arrive_fail_fast(Nanos at, char t, std::int64_t tokens, Nanos deadline, Want s) {
  return {at, Op::arrive_fail_fast, t, tokens, deadline, s, kAny};
}
Row poll(Nanos at, char t, Want s, Nanos wake_at = kAny) { return {at, Op::poll, t, 0, 0, s, wake_at}; }
Row planned(char t, Nanos want) { return {0, Op::planned, t, 0, 0, Want::queued, want}; }
Row leave(char t) { return {0, Op::leave, t, 0, 0, Want::refused, kAny}; }
Row settle(Nanos at, std::int64_t reserved, std::int64_t used) {
  return {at, Op::settle, 0, reserved, used, Want::queued, kAny};
}
Row limit_requests(Nanos at, std::int64_t n) { return {at, Op::limit_requests, 0, n, 0, Want::queued, kAny}; }
Row limit_tokens(Nanos at, std::int64_t n) { return {at, Op::limit_tokens, 0, n, 0, Want::queued, kAny}; }
Row set_request_interval(Nanos at, Nanos interval, Nanos old) {
  return {at, Op::set_request_interval, 0, 0, interval, Want::queued, old};
}
Row set_token_interval(Nanos at, Nanos interval, Nanos old) {
  return {at, Op::set_token_interval, 0, 0, interval, Want::queued, old};
}
Row requests_available(Nanos at, std::int64_t want) {
  return {at, Op::requests_available, 0, 0, 0, Want::queued, want};
}
Row tokens_available(Nanos at, std::int64_t want) { return {at, Op::tokens_available, 0, 0, 0, Want::queued, want}; }
Row predicted_wait(Nanos at, std::int64_t tokens, Nanos want) {
  return {at, Op::predicted_wait, 0, tokens, 0, Want::queued, want};
}
Row queued(std::int64_t want) { return {0, Op::queued, 0, 0, 0, Want::queued, want}; }
Row standing_by(std::int64_t want) { return {0, Op::standing_by, 0, 0, 0, Want::queued, want}; }
Row close_bucket() { return {0, Op::close, 0, 0, 0, Want::closed, kAny}; }

Nanos abs_at(Nanos relative) { return relative == kForever ? kForever : kT0 + relative; }
Nanos rel_at(Nanos absolute) { return absolute == kForever ? kForever : absolute - kT0; }

// Runs `rows` in order against a fresh DualBucket(request T, B, token T, B).
void run_table(const char* table, Nanos request_interval, std::int64_t request_burst, Nanos token_interval,
               std::int64_t token_burst, const std::vector<Row>& rows) {
  DualBucket bucket(request_interval, request_burst, token_interval, token_burst);
  std::vector<std::unique_ptr<DualBucket::Ticket>> tickets(26);  // destroyed before the bucket
  auto ticket = [&](char name) -> DualBucket::Ticket& { return *tickets.at(static_cast<std::size_t>(name - 'a')); };
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    const Nanos now = abs_at(row.at);
    const std::size_t line = i + 1;
    switch (row.op) {
      case Op::arrive:
      case Op::arrive_fail_fast: {
        auto& slot = tickets.at(static_cast<std::size_t>(row.ticket - 'a'));
        slot = std::make_unique<DualBucket::Ticket>(bucket, row.n, abs_at(row.x), nullptr, row.op == Op::arrive);
        const std::int64_t standing_before = bucket.standing_by();
        const Status s = bucket.arrive(*slot, now);
        const Want got = s == Status::admitted  ? Want::admitted
                         : s == Status::refused ? Want::refused
                         : s == Status::closed  ? Want::closed
                         : bucket.standing_by() > standing_before ? Want::standing
                                                                  : Want::queued;
        CHECK_EQ(got, row.status, table, " row ", line, ": ", row.ticket, " arrives");
        if (row.want != kAny) CHECK_EQ(rel_at(slot->planned_ns()), row.want, table, " row ", line, ": planned");
        break;
      }
      case Op::poll: {
        DualBucket::Ticket& t = ticket(row.ticket);
        Nanos wake_at = 0;
        bool standing = false;
        const Status s = bucket.poll(t, now, &wake_at, &standing);
        const Want got = s == Status::admitted  ? Want::admitted
                         : s == Status::refused ? Want::refused
                         : s == Status::closed  ? Want::closed
                         : standing             ? Want::standing
                                                : Want::queued;
        CHECK_EQ(got, row.status, table, " row ", line, ": ", row.ticket, " looks");
        if (row.want == kAny) break;
        const Nanos instant = s == Status::admitted ? t.planned_ns() : wake_at;
        CHECK_EQ(rel_at(instant), row.want, table, " row ", line, s == Status::admitted ? ": booked" : ": wake_at");
        break;
      }
      case Op::planned: CHECK_EQ(rel_at(ticket(row.ticket).planned_ns()), row.want, table, " row ", line); break;
      case Op::leave: bucket.leave(ticket(row.ticket)); break;
      case Op::settle: bucket.settle(row.n, row.x, now); break;
      case Op::limit_requests: bucket.limit_available_requests(row.n, now); break;
      case Op::limit_tokens: bucket.limit_available_tokens(row.n, now); break;
      case Op::set_request_interval:
        CHECK_EQ(bucket.set_request_interval(row.x, now), row.want, table, " row ", line);
        break;
      case Op::set_token_interval:
        CHECK_EQ(bucket.set_token_interval(row.x, now), row.want, table, " row ", line);
        break;
      case Op::requests_available: CHECK_EQ(bucket.requests_available(now), row.want, table, " row ", line); break;
      case Op::tokens_available: CHECK_EQ(bucket.tokens_available(now), row.want, table, " row ", line); break;
      case Op::predicted_wait: CHECK_EQ(bucket.predicted_wait(row.n, now), row.want, table, " row ", line); break;
      case Op::queued: CHECK_EQ(bucket.queued(), row.want, table, " row ", line); break;
      case Op::standing_by: CHECK_EQ(bucket.standing_by(), row.want, table, " row ", line); break;
      case Op::close: bucket.close(); break;
    }
  }
}

constexpr Nanos kF = kForever;

// Requests 1000 ns / burst 2, tokens 10 ns / burst 100. A caller takes its request and its tokens
// at the same instant or waits for both; nothing is committed while it waits; a caller that needs
// no tokens still waits behind those ahead of it.
void dual_table_both_budgets() {
  run_table("both budgets together", 1000, 2, 10, 100, {
      arrive(0, 'a', 60, kF, Want::admitted, 0),
      requests_available(0, 1),
      tokens_available(0, 40),
      arrive(0, 'b', 60, kF, Want::queued, 200),  // 20 tokens short: 200 ns of refill
      requests_available(0, 1),                   // nothing taken for b yet
      queued(1),
      arrive(0, 'c', 0, kF, Want::queued, 1000),  // behind b, though a request is free
      predicted_wait(0, 10, 2000),                // behind b and c: the next request at 2000
      poll(100, 'b', Want::queued, 200),          // the head: wake at its instant
      poll(100, 'c', Want::queued, kF),           // not the head: no instant of its own
      poll(200, 'b', Want::admitted, 200),
      planned('c', 1000),
      requests_available(200, 0),
      tokens_available(200, 0),
      poll(999, 'c', Want::queued, 1000),
      poll(1000, 'c', Want::admitted, 1000),
      queued(0),
  });
}

// Requests 1000 ns / burst 1 (tokens plentiful). A turn past the deadline: refused at once
// (fail-fast, or a deadline that is now), else standing by until the deadline; a faster rate lets
// one standing by join the queue; a slower one sends the head back to standing by.
void dual_table_deadlines() {
  run_table("deadlines and standing by", 1000, 1, 10, 100, {
      arrive(0, 'a', 0, kF, Want::admitted, 0),
      arrive_fail_fast(0, 'b', 0, 500, Want::refused),  // its turn (1000) is past 500
      arrive(0, 'c', 0, 500, Want::standing),
      arrive(0, 'd', 0, 0, Want::refused),              // its deadline is now
      standing_by(1),
      poll(400, 'c', Want::standing, 500),              // looks again at its deadline
      poll(500, 'c', Want::refused),
      standing_by(0),
      arrive(600, 'e', 0, 1500, Want::queued, 1000),
      arrive(600, 'f', 0, 1500, Want::standing),        // behind e it would go at 2000
      set_request_interval(600, 400, 1000),             // 400 ns owed become 160: e at 760, f fits
      queued(2),
      planned('e', 760),
      planned('f', 1160),
      poll(760, 'e', Want::admitted, 760),
      poll(760, 'f', Want::queued, 1160),
      set_request_interval(760, 4000, 400),             // f's turn moves to 4760, past 1500
      poll(760, 'f', Want::standing, 1500),
      poll(1500, 'f', Want::refused),
      queued(0),
  });
}

// Requests 100 ns / burst 10, tokens 10 ns / burst 100. settle() re-plans the queue: tokens given
// back serve the callers already waiting; tokens charged make them wait; a cap at or above what
// the bucket holds changes nothing. A head found late (within the tolerance) is booked at its
// instant.
void dual_table_settle() {
  run_table("settle re-plans the queue", 100, 10, 10, 100, {
      arrive(0, 'a', 100, kF, Want::admitted, 0),
      arrive(0, 'b', 50, kF, Want::queued, 500),
      arrive(0, 'c', 50, kF, Want::queued, 1000),
      settle(100, 100, 40),                  // a used 40 of its 100: 60 back
      planned('b', 0),                       // b's instant has come
      planned('c', 400),
      poll(100, 'b', Want::admitted, 0),     // booked at its instant, not at its look
      poll(100, 'c', Want::queued, 400),
      settle(100, 0, 30),                    // a call used 30 it had not taken: c waits for them
      poll(100, 'c', Want::queued, 700),
      limit_tokens(100, 0),                  // already none available: nothing moves
      poll(100, 'c', Want::queued, 700),
      poll(700, 'c', Want::admitted, 700),
      tokens_available(700, 0),
      predicted_wait(700, 100, 1000),        // a full burst: 100 tokens of refill
  });
}

// Requests 1000 ns / burst 5, tokens 10 ns / burst 100. A call larger than the token burst goes
// into debt and waits (N - burst) intervals from a full bucket; the callers behind it wait for the
// debt; a faster token rate re-plans them all at the new pace. A cap on requests holds the next
// caller back.
void dual_table_debt() {
  run_table("debt beyond the token burst", 1000, 5, 10, 100, {
      arrive(0, 'a', 250, kF, Want::queued, 1500),  // 150 tokens over the burst: 150 intervals
      predicted_wait(0, 0, 1500),                   // a request alone still waits behind a
      poll(1499, 'a', Want::queued, 1500),
      poll(1500, 'a', Want::admitted, 1500),
      tokens_available(1500, 0),
      tokens_available(2500, 100),                  // the debt paid, the bucket full again
      arrive(2500, 'b', 100, kF, Want::admitted, 2500),
      arrive(2500, 'c', 1000, 12'500, Want::queued, 12'500),  // exactly at its deadline
      arrive(2500, 'd', 1, kF, Want::queued, 12'510),
      set_token_interval(2500, 5, 10),
      planned('c', 7500),
      planned('d', 7505),
      poll(7499, 'c', Want::queued, 7500),
      poll(7500, 'c', Want::admitted, 7500),
      poll(7500, 'd', Want::queued, 7505),
      poll(7505, 'd', Want::admitted, 7505),
      limit_requests(7505, 0),                      // a provider says no request is left
      requests_available(7505, 0),
      predicted_wait(7505, 0, 1000),                // one request interval from empty
  });
}

// Requests 1000 ns / burst 1. Callers go in arrival order; one that leaves from the middle frees
// its slot for those behind it; close() answers everyone queued and every later arrival.
void dual_table_order_leave_close() {
  run_table("arrival order, leave and close", 1000, 1, 10, 100, {
      arrive(0, 'a', 0, kF, Want::admitted, 0),
      arrive(0, 'b', 0, kF, Want::queued, 1000),
      arrive(0, 'c', 0, kF, Want::queued, 2000),
      arrive(0, 'd', 0, kF, Want::queued, 3000),
      leave('c'),
      queued(2),
      planned('d', 2000),                    // moved up into c's slot
      poll(0, 'c', Want::refused),
      arrive(0, 'e', 0, kF, Want::queued, 3000),
      poll(1000, 'd', Want::queued, kF),
      poll(1000, 'b', Want::admitted, 1000),
      poll(1000, 'd', Want::queued, 2000),   // now the head
      close_bucket(),
      poll(1000, 'd', Want::closed),
      poll(1000, 'e', Want::closed),
      arrive(1000, 'f', 0, kF, Want::closed),
      queued(0),
  });
}

// Requests 20 ms / burst 1. A head that looks late by up to max(request interval,
// kLateToleranceNs) is booked at its instant; one later than that is booked that much before it
// went (a stall costs capacity, never a burst).
void dual_table_late_heads() {
  run_table("late heads", 20 * kMs, 1, 10, 100, {
      arrive(0, 'a', 0, kF, Want::admitted, 0),
      arrive(0, 'b', 0, kF, Want::queued, 20 * kMs),
      poll(39 * kMs, 'b', Want::admitted, 20 * kMs),   // 19 ms late, within one interval (20 ms)
      requests_available(39 * kMs, 0),
      arrive(39 * kMs, 'c', 0, kF, Want::queued, 40 * kMs),
      poll(65 * kMs, 'c', Want::admitted, 45 * kMs),   // 25 ms late: booked 20 ms before it went
      requests_available(65 * kMs, 1),
      arrive(65 * kMs, 'd', 0, kF, Want::admitted, 65 * kMs),
      arrive(65 * kMs, 'e', 0, kF, Want::queued, 85 * kMs),
      set_request_interval(65 * kMs, kMs, 20 * kMs),   // e now at 66 ms; the tolerance is 5 ms
      poll(71 * kMs, 'e', Want::admitted, 66 * kMs),   // 5 ms late: at its instant
      arrive(71 * kMs, 'f', 0, kF, Want::admitted, 71 * kMs),
      arrive(71 * kMs, 'g', 0, kF, Want::queued, 72 * kMs),
      poll(78 * kMs, 'g', Want::admitted, 73 * kMs),   // 6 ms late: booked 5 ms before it went
  });
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"dual bucket table: both budgets together", dual_table_both_budgets},
      {"dual bucket table: deadlines and standing by", dual_table_deadlines},
      {"dual bucket table: settle re-plans the queue", dual_table_settle},
      {"dual bucket table: debt beyond the token burst", dual_table_debt},
      {"dual bucket table: arrival order, leave and close", dual_table_order_leave_close},
      {"dual bucket table: late heads", dual_table_late_heads},
  });
}
