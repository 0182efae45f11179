// The write side of a Segment call without gRPC: a fake stream records what
// the writer starts and finishes, and the test completes writes the way
// gRPC's OnWriteDone would. Order, one write in flight, the progress slot,
// results in chunks then the summary then OK, the first end winning, and
// many threads sending at once (run under deploy/tsan.sh).
#include "server/response_writer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "proto/api.h"

namespace upp::server {
namespace {

using unetrpp::v1::SegmentResponse;

// What the writer did to the stream. Its functions run under the writer's
// lock, so this needs a lock of its own only for the reading test thread.
struct FakeStream {
  absl::Mutex mu;
  std::vector<SegmentResponse> written ABSL_GUARDED_BY(mu);
  int in_flight ABSL_GUARDED_BY(mu) = 0;
  int most_in_flight ABSL_GUARDED_BY(mu) = 0;
  std::vector<grpc::Status> finishes ABSL_GUARDED_BY(mu);
  std::optional<absl::Duration> retry_after ABSL_GUARDED_BY(mu);

  ResponseWriter::Stream Stream() {
    ResponseWriter::Stream s;
    s.start_write = [this](const SegmentResponse* m) {
      absl::MutexLock lock(&mu);
      written.push_back(*m);
      most_in_flight = std::max(most_in_flight, ++in_flight);
    };
    s.finish = [this](const grpc::Status& status, std::optional<absl::Duration> after) {
      absl::MutexLock lock(&mu);
      finishes.push_back(status);
      retry_after = after;
    };
    return s;
  }
  // What gRPC does when the client has taken the write in flight.
  void Complete(ResponseWriter& writer, bool ok = true) {
    {
      absl::MutexLock lock(&mu);
      if (in_flight == 0) return;
      --in_flight;
    }
    writer.OnWriteDone(ok);
  }
  size_t Written() {
    absl::MutexLock lock(&mu);
    return written.size();
  }
  SegmentResponse At(size_t i) {
    absl::MutexLock lock(&mu);
    return written.at(i);
  }
  std::vector<grpc::Status> Finishes() {
    absl::MutexLock lock(&mu);
    return finishes;
  }
};

SegmentResponse Accepted(const std::string& id) {
  SegmentResponse m;
  m.mutable_accepted()->set_server_request_id(id);
  return m;
}

SegmentResponse Progress(double fraction) {
  SegmentResponse m;
  m.mutable_progress()->set_fraction(fraction);
  return m;
}

SegmentResponse SummaryWith(const std::string& id) {
  SegmentResponse m;
  m.mutable_summary()->set_server_request_id(id);
  return m;
}

TEST(ResponseWriterTest, OneWriteInFlightAndMessagesInOrder) {
  FakeStream fake;
  ResponseWriter writer(fake.Stream());
  for (const char* id : {"a", "b", "c"}) EXPECT_TRUE(writer.Send(Accepted(id)));
  EXPECT_EQ(fake.Written(), 1u);  // b and c wait for a's write
  EXPECT_TRUE(writer.Writing());
  EXPECT_GT(writer.write_started_ns(), 0);
  fake.Complete(writer);
  fake.Complete(writer);
  fake.Complete(writer);
  ASSERT_EQ(fake.Written(), 3u);
  EXPECT_EQ(fake.At(0).accepted().server_request_id(), "a");
  EXPECT_EQ(fake.At(2).accepted().server_request_id(), "c");
  EXPECT_FALSE(writer.Writing());
  EXPECT_EQ(writer.write_started_ns(), 0);
  EXPECT_FALSE(writer.Decided());
  EXPECT_TRUE(fake.Finishes().empty());
}

TEST(ResponseWriterTest, AWaitingProgressIsReplacedByANewerOne) {
  FakeStream fake;
  ResponseWriter writer(fake.Stream());
  writer.SendProgress(Progress(0.1));  // written at once
  writer.SendProgress(Progress(0.2));
  writer.SendProgress(Progress(0.3));  // replaces 0.2, which never went out
  fake.Complete(writer);
  fake.Complete(writer);
  ASSERT_EQ(fake.Written(), 2u);
  EXPECT_DOUBLE_EQ(fake.At(1).progress().fraction(), 0.3);
}

TEST(ResponseWriterTest, ResultsStreamInChunksThenTheSummaryThenOk) {
  FakeStream fake;
  ResponseWriter writer(fake.Stream());
  const std::string nifti(2 * proto::kChunkBytes + 5, 'n');
  EncodedOutputs outputs{{unetrpp::v1::OUTPUT_KIND_NIFTI_LABELS, nifti}, {unetrpp::v1::OUTPUT_KIND_RAW_LABELS, "rr"}};
  SegmentResponse header;
  header.mutable_result_header()->set_dtype("uint16");
  ASSERT_TRUE(writer.SendResults(header, outputs, SummaryWith("s")));
  writer.SendProgress(Progress(0.5));  // too late: results are streaming
  for (int i = 0; i < 20 && fake.Finishes().empty(); ++i) fake.Complete(writer);

  ASSERT_EQ(fake.Written(), 6u);  // header, 3 + 1 chunks, summary
  EXPECT_TRUE(fake.At(0).has_result_header());
  std::string rebuilt;
  for (size_t i = 1; i <= 3; ++i) {
    EXPECT_EQ(fake.At(i).result_chunk().output(), unetrpp::v1::OUTPUT_KIND_NIFTI_LABELS);
    EXPECT_LE(fake.At(i).result_chunk().data().size(), proto::kChunkBytes);
    rebuilt += fake.At(i).result_chunk().data();
  }
  EXPECT_EQ(rebuilt, nifti);
  EXPECT_EQ(fake.At(4).result_chunk().output(), unetrpp::v1::OUTPUT_KIND_RAW_LABELS);
  EXPECT_EQ(fake.At(4).result_chunk().data(), "rr");
  const SegmentResponse last = fake.At(5);
  const auto& summary = last.summary();
  EXPECT_EQ(summary.server_request_id(), "s");
  ASSERT_EQ(summary.timings_size(), 1);
  EXPECT_EQ(summary.timings(0).stage(), unetrpp::v1::STAGE_SENDING);
  EXPECT_GE(writer.send_seconds(), 0);
  ASSERT_EQ(fake.Finishes().size(), 1u);
  EXPECT_TRUE(fake.Finishes()[0].ok());
  EXPECT_TRUE(writer.Closed());
  EXPECT_FALSE(writer.Send(Accepted("late")));
  EXPECT_TRUE(writer.Done().ok());
}

TEST(ResponseWriterTest, OkWaitsForTheSummaryToBeTaken) {
  FakeStream fake;
  ResponseWriter writer(fake.Stream());
  ASSERT_TRUE(writer.SendResults(SegmentResponse(), {}, SummaryWith("s")));
  fake.Complete(writer);  // the header; the summary goes out
  ASSERT_EQ(fake.Written(), 2u);
  EXPECT_TRUE(writer.Decided());
  EXPECT_FALSE(writer.Closed());  // the summary's write is in flight
  EXPECT_TRUE(fake.Finishes().empty());
  fake.Complete(writer);
  EXPECT_EQ(fake.Finishes().size(), 1u);
}

TEST(ResponseWriterTest, AFailureWaitsForTheWriteInFlightAndDropsTheRest) {
  FakeStream fake;
  ResponseWriter writer(fake.Stream());
  writer.Send(Accepted("a"));
  writer.Send(Accepted("b"));
  const absl::Status busy = proto::WithRetryAfter(absl::ResourceExhaustedError("busy"), absl::Seconds(7));
  EXPECT_TRUE(writer.Fail(busy));
  EXPECT_TRUE(writer.Decided());
  EXPECT_TRUE(fake.Finishes().empty());                      // a's write is in flight
  EXPECT_FALSE(writer.Fail(absl::InternalError("second")));  // the first end wins
  EXPECT_FALSE(writer.Send(Accepted("c")));
  fake.Complete(writer);
  EXPECT_EQ(fake.Written(), 1u);  // b was dropped
  const auto finishes = fake.Finishes();
  ASSERT_EQ(finishes.size(), 1u);
  EXPECT_EQ(finishes[0].error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  {
    absl::MutexLock lock(&fake.mu);
    ASSERT_TRUE(fake.retry_after.has_value());
    EXPECT_EQ(*fake.retry_after, absl::Seconds(7));
  }
  EXPECT_EQ(writer.Done().code(), absl::StatusCode::kResourceExhausted);
}

TEST(ResponseWriterTest, AFailureWithNothingInFlightFinishesAtOnce) {
  FakeStream fake;
  ResponseWriter writer(fake.Stream());
  EXPECT_TRUE(writer.Fail(absl::InvalidArgumentError("bad header")));
  ASSERT_EQ(fake.Finishes().size(), 1u);
  EXPECT_EQ(fake.Finishes()[0].error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(fake.Written(), 0u);
}

TEST(ResponseWriterTest, ABrokenStreamEndsTheCallCancelledOnce) {
  FakeStream fake;
  ResponseWriter writer(fake.Stream());
  writer.Send(Accepted("a"));
  writer.Send(Accepted("b"));
  fake.Complete(writer, /*ok=*/false);
  ASSERT_EQ(fake.Finishes().size(), 1u);
  EXPECT_EQ(fake.Finishes()[0].error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(fake.Written(), 1u);
  writer.OnWriteDone(false);  // a late one changes nothing
  EXPECT_EQ(fake.Finishes().size(), 1u);
}

TEST(ResponseWriterTest, NothingIsWrittenAfterDone) {
  FakeStream fake;
  ResponseWriter writer(fake.Stream());
  writer.Done();
  EXPECT_FALSE(writer.Send(Accepted("a")));
  writer.SendProgress(Progress(0.5));
  EXPECT_FALSE(writer.SendResults(SegmentResponse(), {}, SummaryWith("s")));
  EXPECT_FALSE(writer.Fail(absl::CancelledError("late")));
  EXPECT_EQ(fake.Written(), 0u);
  EXPECT_TRUE(fake.Finishes().empty());
}

TEST(ResponseWriterTest, ManyThreadsSendingKeepOneWriteInFlightAndEachThreadsOrder) {
  FakeStream fake;
  ResponseWriter writer(fake.Stream());
  constexpr int kThreads = 4, kPerThread = 200;
  std::atomic<int> senders{kThreads};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        writer.Send(Accepted(std::to_string(t) + ":" + std::to_string(i)));
        writer.SendProgress(Progress(i));
      }
      --senders;
    });
  // The client: takes writes until every sender is done and nothing waits.
  while (senders > 0 || writer.Writing()) fake.Complete(writer);
  for (auto& t : threads) t.join();
  writer.Fail(absl::CancelledError("end"));

  absl::MutexLock lock(&fake.mu);
  EXPECT_EQ(fake.most_in_flight, 1);
  std::map<int, int> next;  // per sending thread: the next index it must show
  int accepted = 0;
  for (const auto& m : fake.written) {
    if (!m.has_accepted()) continue;
    ++accepted;
    const std::string& id = m.accepted().server_request_id();
    const int t = std::stoi(id.substr(0, id.find(':')));
    const int i = std::stoi(id.substr(id.find(':') + 1));
    EXPECT_EQ(i, next[t]) << id;
    next[t] = i + 1;
  }
  EXPECT_EQ(accepted, kThreads * kPerThread);  // no message lost
}

}  // namespace
}  // namespace upp::server
