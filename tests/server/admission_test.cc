// Admission without a server: slots, memory, windows and GPU memory taken by
// Reservations, refused past each limit with the message a client sees, and
// given back exactly once by whoever holds them, from many threads at once.
#include "server/admission.h"

#include <gtest/gtest.h>

#include <thread>
#include <utility>
#include <vector>

#include "proto/api.h"

namespace upp::server {
namespace {

AdmissionLimits SmallLimits() {
  AdmissionLimits l;
  l.max_concurrent_requests = 4;
  l.max_pending_streams = 3;
  l.max_requests_per_peer = 2;
  l.max_requests_per_principal = 3;
  l.max_bytes_in_flight = 1000;
  l.max_bytes_per_principal = 600;
  l.max_windows_per_principal = 50;
  l.max_queued_windows = 100;
  l.max_device_bytes_in_flight = 500;
  return l;
}

Reservation Begin(Admission& a, const Caller& c) {
  uint32_t position = 0;
  auto r = a.BeginRequest(c, &position);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : Reservation();
}

TEST(AdmissionTest, AReservationGivesBackEverythingOnceWhenDestroyed) {
  Admission a(SmallLimits(), nullptr);
  const Caller alice = Caller::Principal("alice");
  {
    Reservation r = Begin(a, alice);
    ASSERT_TRUE(r.AddBytes(300).ok());
    ASSERT_TRUE(r.AddWindows(20, 0).ok());
    EXPECT_TRUE(r.AddDeviceBytes("cuda:0", 400));
    EXPECT_EQ(a.in_flight(), 1);
    EXPECT_EQ(a.bytes_in_flight(), 300);
    EXPECT_EQ(r.windows(), 20);
    // Moving hands everything over; the moved-from value holds nothing.
    Reservation moved = std::move(r);
    EXPECT_FALSE(r.holds_slot());  // NOLINT(bugprone-use-after-move): documented state
    r.Release();                   // a no-op: nothing is given back twice
    EXPECT_EQ(a.bytes_in_flight(), 300);
    EXPECT_EQ(moved.bytes(), 300);
  }
  EXPECT_EQ(a.in_flight(), 0);
  EXPECT_EQ(a.bytes_in_flight(), 0);
  EXPECT_EQ(a.held_by(alice), 0);
  // The GPU memory came back too: a job of the whole budget fits again.
  Reservation again = Begin(a, alice);
  EXPECT_TRUE(again.AddDeviceBytes("cuda:0", 500));
}

TEST(AdmissionTest, GrowsShrinksAndReleasesInParts) {
  Admission a(SmallLimits(), nullptr);
  Reservation r = Begin(a, Caller::Address("10.0.0.1"));
  ASSERT_TRUE(r.AddBytes(400).ok());
  ASSERT_TRUE(r.AddBytes(100).ok());
  r.ShrinkBytesTo(50);  // a result waiting for its reader holds only itself
  EXPECT_EQ(r.bytes(), 50);
  EXPECT_EQ(a.bytes_in_flight(), 50);
  r.ShrinkBytesTo(80);  // shrinking never grows
  EXPECT_EQ(r.bytes(), 50);
  ASSERT_TRUE(r.AddWindows(30, 0).ok());
  r.ReleaseWindows();
  EXPECT_EQ(r.windows(), 0);
  r.Release();
  EXPECT_EQ(a.in_flight(), 0);
  EXPECT_EQ(a.bytes_in_flight(), 0);
}

TEST(AdmissionTest, EachLimitRefusesWithItsMessageAndHint) {
  Admission a(SmallLimits(), nullptr);
  const Caller peer = Caller::Address("10.0.0.2");
  Reservation r1 = Begin(a, peer), r2 = Begin(a, peer);
  uint32_t position = 0;
  auto third = a.BeginRequest(peer, &position);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("max_requests_per_peer"), std::string::npos);
  EXPECT_TRUE(proto::RetryAfter(third.status()).has_value());
  // A principal has its own, larger allowance.
  const Caller bob = Caller::Principal("bob");
  Reservation b1 = Begin(a, bob), b2 = Begin(a, bob);
  auto fifth = a.BeginRequest(bob, &position);  // the server's 4 are taken
  EXPECT_NE(fifth.status().message().find("too many concurrent requests"), std::string::npos);

  // Memory: over the whole limit (no hint: waiting cannot help), over what
  // is free (hint), over the caller's own limit, principal or address (hint).
  auto whole = b1.AddBytes(1001);
  EXPECT_EQ(whole.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(proto::RetryAfter(whole).has_value());
  ASSERT_TRUE(r1.AddBytes(550).ok());
  auto full = b1.AddBytes(500);
  EXPECT_NE(full.message().find("at its memory limit"), std::string::npos);
  EXPECT_TRUE(proto::RetryAfter(full).has_value());
  r1.ShrinkBytesTo(0);
  ASSERT_TRUE(b1.AddBytes(500).ok());
  auto own = b2.AddBytes(200);  // bob holds 500 of his 600
  EXPECT_NE(own.message().find("your limit"), std::string::npos);
  EXPECT_EQ(b1.bytes(), 500);
  EXPECT_EQ(b2.bytes(), 0);  // a refusal takes nothing

  // Windows: the queue, then the caller's own.
  EXPECT_NE(b1.AddWindows(10, 95).message().find("window queue is full"), std::string::npos);
  ASSERT_TRUE(b1.AddWindows(40, 0).ok());
  EXPECT_NE(b2.AddWindows(20, 40).message().find("your limit: 50"), std::string::npos);
  // GPU memory: refused by returning false, taking nothing.
  EXPECT_TRUE(r2.AddDeviceBytes("cuda:1", 300));
  EXPECT_FALSE(b2.AddDeviceBytes("cuda:1", 300));
  EXPECT_TRUE(b2.AddDeviceBytes("cuda:0", 300));
}

TEST(AdmissionTest, PendingStreamsAreCountedPerCallerAndInAll) {
  Admission a(SmallLimits(), nullptr);
  const Caller peer = Caller::Address("10.0.0.3");
  auto p1 = a.BeginPendingStream(peer);
  auto p2 = a.BeginPendingStream(peer);
  ASSERT_TRUE(p1.ok() && p2.ok());
  EXPECT_EQ(a.BeginPendingStream(peer).status().code(), absl::StatusCode::kResourceExhausted);  // its 2
  auto other = a.BeginPendingStream(Caller::Address("10.0.0.4"));
  ASSERT_TRUE(other.ok());
  EXPECT_NE(a.BeginPendingStream(Caller::Address("10.0.0.5")).status().message().find("too many streams"),
            std::string::npos);  // the server's 3
  p1->Release();
  EXPECT_TRUE(a.BeginPendingStream(peer).ok());
  // A pending stream is no request.
  EXPECT_EQ(a.in_flight(), 0);
}

TEST(AdmissionTest, DrainingRefusesNewRequestsAndWaitsForTheOthers) {
  Admission a(SmallLimits(), nullptr);
  auto r = std::make_unique<Reservation>(Begin(a, Caller::Address("10.0.0.6")));
  a.StartDraining();
  uint32_t position = 0;
  EXPECT_EQ(a.BeginRequest(Caller::Address("10.0.0.7"), &position).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(a.WaitIdle(absl::Now() + absl::Milliseconds(20)));
  std::thread release([&] {
    absl::SleepFor(absl::Milliseconds(20));
    r.reset();
  });
  EXPECT_TRUE(a.WaitIdle(absl::Now() + absl::Seconds(10)));
  release.join();
}

// Many callers at once, each taking and giving back in parts: every count
// is back at zero at the end, and no limit was passed on the way
// (run under deploy/tsan.sh too).
TEST(AdmissionTest, ManyThreadsAtOnceLeaveNothingBehind) {
  AdmissionLimits limits = SmallLimits();
  limits.max_concurrent_requests = 1000;
  limits.max_requests_per_peer = 1000;
  limits.max_bytes_in_flight = 64 * 1000;
  limits.max_bytes_per_principal = 0;
  limits.max_windows_per_principal = 0;
  limits.max_queued_windows = 1 << 30;
  Admission a(limits, nullptr);
  std::atomic<int64_t> peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      const Caller caller = Caller::Address("10.1.0." + std::to_string(t % 3));
      for (int i = 0; i < 300; ++i) {
        uint32_t position = 0;
        auto r = a.BeginRequest(caller, &position);
        ASSERT_TRUE(r.ok()) << r.status();
        if (r->AddBytes(1000).ok()) {
          int64_t now = a.bytes_in_flight();
          int64_t seen = peak.load();
          while (now > seen && !peak.compare_exchange_weak(seen, now)) {
          }
          r->ShrinkBytesTo(i % 500);
        }
        EXPECT_TRUE(r->AddWindows(3, 0).ok());
        if (i % 2) r->ReleaseWindows();
        if (i % 3) r->AddDeviceBytes("cuda:0", 10);
        if (i % 5 == 0) r->Release();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(peak.load(), limits.max_bytes_in_flight);
  EXPECT_EQ(a.in_flight(), 0);
  EXPECT_EQ(a.bytes_in_flight(), 0);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a.held_by(Caller::Address("10.1.0." + std::to_string(i))), 0);
  uint32_t position = 0;
  auto last = a.BeginRequest(Caller::Address("10.1.0.0"), &position);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(position, 0u);
  EXPECT_TRUE(last->AddDeviceBytes("cuda:0", 500));  // the device budget is whole again
}

}  // namespace
}  // namespace upp::server
