// Hostile clients against the in-process server with small limits: each
// class of attack gets its status code and message, costs the server little
// memory, and a well-behaved client on another connection is served during
// and after it.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <future>
#include <limits>
#include <thread>
#include <utility>
#include <vector>

#include "clients/cpp/client.h"
#include "imageio/nifti.h"
#include "model/cpu_threads.h"
#include "preprocessing/plan.h"
#include "proto/api.h"
#include "server/config.h"
#include "server/server.h"
#include "server/system_memory.h"
#include "tests/server/test_volumes.h"
#include "tests/testing/deflated_dicom.h"
#include "tests/testing/hostile_dicom.h"
#include "tests/testing/rss.h"
#include "unetrpp/v1/segmentation.grpc.pb.h"

namespace upp::server {
namespace {

using unetrpp::v1::SegmentRequest;
using unetrpp::v1::SegmentResponse;

std::string PlanFile() { return testing::SmallPlanFile("hostile_test_plan.json"); }

constexpr char kLimits[] =
    "max_input_bytes: 33554432 max_bytes_in_flight: 1073741824 max_pending_streams: 3 "
    "per_caller { max_requests_per_peer: 3 } max_input_files: 8 max_windows_per_request: 400";
constexpr char kTimeouts[] = "header_seconds: 1 upload_idle_seconds: 1";

std::unique_ptr<Server> StartServer(const std::string& extra, const std::string& limits = kLimits,
                                    const std::string& timeouts = kTimeouts, const std::string& metrics = "off",
                                    int cpu_threads = 2) {
  auto config = ParseConfig(
      "listen_address: '127.0.0.1:0'\n"
      "metrics_address: '" +
      metrics +
      "'\n"
      "cpu_threads: " +
      std::to_string(cpu_threads) +
      "\n"
      "limits { " +
      limits +
      " }\n"
      "timeouts { " +
      timeouts +
      " }\n"
      "models { name: 'small' weights: '" UPP_FIXTURES_DIR "/synapse_small_weights.safetensors' plan_file: '" +
      PlanFile() + "' }\n" + extra);
  EXPECT_TRUE(config.ok()) << config.status();
  auto server = Server::Create(*config);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

class HostileTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::ConfigureCpuThreads(0);
    server_ = StartServer("").release();
  }
  static void TearDownTestSuite() { delete server_; }

  std::string Address() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  // A fresh connection (its own channel), as another client would have.
  std::unique_ptr<unetrpp::v1::Segmentation::Stub> NewStub() const {
    grpc::ChannelArguments args;
    args.SetInt("grpc.use_local_subchannel_pool", 1);  // not shared with other stubs
    return unetrpp::v1::Segmentation::NewStub(
        grpc::CreateCustomChannel(Address(), grpc::InsecureChannelCredentials(), args));
  }
  // Sends `messages`, then (optionally) half-closes; the final status.
  // `retry_after`: the server's retry hint (proto::RetryAfter), if any.
  grpc::Status Run(const std::vector<SegmentRequest>& messages, bool writes_done = true,
                   SegmentResponse* summary = nullptr, std::optional<absl::Duration>* retry_after = nullptr) {
    auto stub = NewStub();
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    const grpc::Status status = upp::testing::SegmentRaw(*stub, context, messages, writes_done, summary);
    if (retry_after) *retry_after = proto::RetryAfter(proto::FromGrpcCall(status, context));
    return status;
  }
  static SegmentRequest Header(int priority = 0) {
    SegmentRequest h;
    h.mutable_header()->set_model("small");
    h.mutable_header()->set_format(unetrpp::v1::INPUT_FORMAT_NIFTI);
    h.mutable_header()->set_priority(priority);
    return h;
  }
  static SegmentRequest Chunk(const std::string& data, uint32_t index = 0) {
    SegmentRequest c;
    c.mutable_chunk()->set_data(data);
    c.mutable_chunk()->set_input_index(index);
    return c;
  }
  static SegmentRequest End() {
    SegmentRequest e;
    e.mutable_end();
    return e;
  }
  // A well-behaved request on its own connection.
  bool GoodRequestSucceeds() {
    auto c = client::Client::Connect(Address());
    auto r = c->Segment({testing::FloatNifti(testing::Phantom({40, 40, 20}, {2.0, 2.0, 2.0}))}, {});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok();
  }

  static Server* server_;
};
Server* HostileTest::server_ = nullptr;

// Streams that never send their header are counted and timed out.
TEST_F(HostileTest, StreamsWithoutAHeaderAreCappedAndTimedOut) {
  auto stub = NewStub();
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<SegmentRequest, SegmentResponse>>> streams;
  for (int i = 0; i < 4; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(stub->Segment(contexts.back().get()));
  }
  const auto start = std::chrono::steady_clock::now();
  std::vector<grpc::Status> statuses;
  for (auto& s : streams) {
    SegmentResponse r;
    while (s->Read(&r)) {
    }
    statuses.push_back(s->Finish());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int exhausted = 0, timed_out = 0;
  for (const auto& st : statuses) {
    if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++exhausted;
      EXPECT_NE(st.error_message().find("without a RequestHeader"), std::string::npos) << st.error_message();
    }
    if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      ++timed_out;
      EXPECT_NE(st.error_message().find("no RequestHeader within 1 s"), std::string::npos) << st.error_message();
    }
  }
  EXPECT_EQ(exhausted, 1);  // max_pending_streams: 3
  EXPECT_EQ(timed_out, 3);
  EXPECT_LT(seconds, 5.0);
  EXPECT_TRUE(GoodRequestSucceeds());
}

// Header-less streams are counted per caller as well: one address cannot
// hold every slot (max_pending_streams) and lock everyone else out. The
// second caller is the same machine over IPv6.
TEST(HostilePendingTest, OneAddressCannotHoldEveryHeaderlessSlot) {
  auto config = ParseConfig(
      "listen_address: '[::]:0' metrics_address: 'off' cpu_threads: 1 auth { allow_anonymous: true } "
      "limits { max_pending_streams: 4 per_caller { max_requests_per_peer: 2 } } timeouts { header_seconds: 5 } "
      "models { name: 'small' weights: '" UPP_FIXTURES_DIR "/synapse_small_weights.safetensors' plan_file: '" +
      PlanFile() + "' }");
  ASSERT_TRUE(config.ok()) << config.status();
  auto server = Server::Create(*config);
  if (!server.ok()) GTEST_SKIP() << "no IPv6 listener here: " << server.status();
  const int port = (*server)->port();
  // Each stream waits for its end on its own thread; the first status read wins.
  auto open_stream = [](const std::string& address) {
    auto stub = unetrpp::v1::Segmentation::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto stream = stub->Segment(&context);
    SegmentResponse r;
    while (stream->Read(&r)) {
    }
    return stream->Finish();
  };
  const std::string v4 = "ipv4:127.0.0.1:" + std::to_string(port), v6 = "ipv6:[::1]:" + std::to_string(port);
  std::vector<std::future<grpc::Status>> from_v4;
  for (int i = 0; i < 3; ++i) from_v4.push_back(std::async(std::launch::async, open_stream, v4));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto from_v6 = std::async(std::launch::async, open_stream, v6);
  int exhausted = 0;
  for (auto& f : from_v4) {
    const grpc::Status st = f.get();
    if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++exhausted;
      EXPECT_NE(st.error_message().find("this caller already has 2 streams"), std::string::npos) << st.error_message();
    } else {
      EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();
    }
  }
  EXPECT_EQ(exhausted, 1);  // the third from 127.0.0.1
  const grpc::Status v6_status = from_v6.get();
  if (v6_status.error_code() == grpc::StatusCode::UNAVAILABLE) GTEST_SKIP() << "no IPv6 loopback here";
  // Another caller got a slot (and was timed out for sending no header).
  EXPECT_EQ(v6_status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << v6_status.error_message();
}

TEST_F(HostileTest, AnIdleUploadIsTimedOut) {
  std::atomic<bool> good{false};
  std::thread other([&] { good = GoodRequestSucceeds(); });
  const auto start = std::chrono::steady_clock::now();
  const auto s = Run({Header(), Chunk("partial")}, /*writes_done=*/false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  other.join();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_NE(s.error_message().find("no input for 1 s"), std::string::npos) << s.error_message();
  EXPECT_LT(seconds, 5.0);
  EXPECT_TRUE(good);
}

TEST_F(HostileTest, CallerChosenCountsHaveLimits) {
  const std::string good = testing::FloatNifti(testing::Phantom({40, 40, 20}, {2.0, 2.0, 2.0}));
  // The same output kind twice.
  SegmentRequest h = Header();
  h.mutable_header()->add_outputs(unetrpp::v1::OUTPUT_KIND_RAW_LABELS);
  h.mutable_header()->add_outputs(unetrpp::v1::OUTPUT_KIND_RAW_LABELS);
  auto s = Run({h, Chunk(good), End()});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("listed twice"), std::string::npos) << s.error_message();
  // A step below the plan's floor (1e-4 would ask for ~10^12 windows).
  h = Header();
  h.mutable_header()->set_step(1e-4);
  s = Run({h, Chunk(good), End()});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("floor of 0.25"), std::string::npos) << s.error_message();
  // Mirror axes repeated.
  h = Header();
  for (int i = 0; i < 4; ++i) h.mutable_header()->add_mirror_axes(1);
  s = Run({h, Chunk(good), End()});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // More input files than limits.max_input_files (8), DICOM-style.
  h = Header();
  h.mutable_header()->set_format(unetrpp::v1::INPUT_FORMAT_DICOM);
  std::vector<SegmentRequest> many{h};
  for (uint32_t i = 0; i < 20; ++i) many.push_back(Chunk("x", i));
  many.push_back(End());
  std::optional<absl::Duration> retry_after;
  s = Run(many, true, nullptr, &retry_after);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(s.error_message().find("limits.max_input_files"), std::string::npos) << s.error_message();
  EXPECT_FALSE(retry_after.has_value());  // the request itself is over the limit: no retry hint
  EXPECT_TRUE(GoodRequestSucceeds());
}

TEST_F(HostileTest, PriorityAboveZeroNeedsTheConfiguration) {
  const std::string good = testing::FloatNifti(testing::Phantom({40, 40, 20}, {2.0, 2.0, 2.0}));
  auto s = Run({Header(2), Chunk(good), End()});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("allow_client_priority"), std::string::npos) << s.error_message();
  auto allowing = StartServer("allow_client_priority: true");
  ASSERT_TRUE(allowing);
  auto c = client::Client::Connect("127.0.0.1:" + std::to_string(allowing->port()));
  client::SegmentOptions o;
  o.priority = 2;
  EXPECT_TRUE(c->Segment({good}, o).ok());
}

// A volume whose window count is over the per-request limit is refused from
// its header, before inflating or decoding: a gzip NIfTI of 32 M voxels in
// ~100 KB (RSS does not grow by its size).
TEST_F(HostileTest, TooManyWindowsIsRefusedBeforeDecoding) {
  imageio::Geometry g;
  g.size = {400, 400, 200};
  g.spacing = {2.0, 2.0, 2.0};
  std::string gz;
  {
    const std::vector<int16_t> zeros(400 * 400 * 200, 0);
    auto bytes = imageio::WriteNiftiInt16(g, zeros, {});
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    gz = std::move(*bytes);
  }
  ASSERT_LT(gz.size(), 4u << 20);
  const int64_t rss = testing::ResetPeakRss();
  std::optional<absl::Duration> retry_after;
  const auto s = Run({Header(), Chunk(gz), End()}, true, nullptr, &retry_after);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_NE(s.error_message().find("limits.max_windows_per_request"), std::string::npos) << s.error_message();
  EXPECT_FALSE(retry_after.has_value());
  EXPECT_LT(testing::PeakRssBytes() - rss, testing::RssBound(int64_t{64} << 20));
  EXPECT_TRUE(GoodRequestSucceeds());
}

// A NIfTI header that promises 2^30 float voxels (4 GiB) in a few hundred
// bytes: refused before anything of that size exists.
TEST_F(HostileTest, AHeaderPromisingGigabytesCostsNothing) {
  std::string nifti = testing::FloatNifti(testing::Phantom({8, 8, 8}, {2.0, 2.0, 2.0}));
  const int16_t dims[4] = {3, 1024, 1024, 1024};
  std::memcpy(&nifti[40], dims, sizeof(dims));
  const int64_t rss = testing::ResetPeakRss();
  const auto s = Run({Header(), Chunk(nifti), End()});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("truncated"), std::string::npos) << s.error_message();
  EXPECT_LT(testing::PeakRssBytes() - rss, testing::RssBound(int64_t{64} << 20));
  EXPECT_TRUE(GoodRequestSucceeds());
}

TEST_F(HostileTest, OneClientAddressCannotFillTheServer) {
  // Three uploads held open from 127.0.0.1 (max_requests_per_peer: 3)...
  std::vector<std::thread> holders;
  for (int i = 0; i < 3; ++i) holders.emplace_back([&] { Run({Header(), Chunk("partial")}, /*writes_done=*/false); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // ... so a fourth from the same address is refused with a retry hint.
  std::optional<absl::Duration> retry_after;
  const auto s = Run({Header(), Chunk("x"), End()}, true, nullptr, &retry_after);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(s.error_message().find("max_requests_per_peer"), std::string::npos) << s.error_message();
  ASSERT_TRUE(retry_after.has_value());  // in the trailers, for clients that retry
  EXPECT_EQ(*retry_after, absl::Seconds(10));
  for (auto& t : holders) t.join();  // the idle timeout ends them
  // Their slots go back when the server lets go of the calls (a Reservation
  // lives as long as anything works for its call), an instant after their
  // clients have the status: the address is free again within a second.
  const absl::Time until = absl::Now() + absl::Seconds(5);
  auto c = client::Client::Connect(Address());
  const std::string nifti = testing::FloatNifti(testing::Phantom({40, 40, 20}, {2.0, 2.0, 2.0}));
  absl::StatusOr<client::SegmentResult> r = absl::UnknownError("not run");
  do {
    r = c->Segment({nifti}, {});
    if (!absl::IsResourceExhausted(r.status())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } while (absl::Now() < until);
  EXPECT_TRUE(r.ok()) << r.status();
}

std::string NiftiWithNonFinite() {
  imageio::Volume v = testing::Phantom({40, 40, 20}, {2.0, 2.0, 2.0});
  v.voxels[5] = std::numeric_limits<float>::quiet_NaN();
  v.voxels[77] = std::numeric_limits<float>::infinity();
  v.voxels[900] = -std::numeric_limits<float>::infinity();
  return testing::FloatNifti(v);
}

TEST_F(HostileTest, NonFiniteVoxelsAreReplacedAndCounted) {
  SegmentResponse summary;
  const auto s = Run({Header(), Chunk(NiftiWithNonFinite()), End()}, true, &summary);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(summary.summary().nonfinite_voxels_replaced(), 3u);
}

TEST(HostileConfigTest, NonFiniteVoxelsCanBeRefused) {
  auto server = StartServer("nonfinite_voxels: 'refuse'");
  ASSERT_TRUE(server);
  auto c = client::Client::Connect("127.0.0.1:" + std::to_string(server->port()));
  auto r = c->Segment({NiftiWithNonFinite()}, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("3 NaN or infinite voxels"), std::string::npos) << r.status();
}

// Issue 28: DCMTK's parse cost far more than a file's bytes, before anything
// was admitted: 8 million empty elements in 64 MB held 1.4 GiB, and 80,000
// elements in descending tag order (640 KB) kept a CPU thread busy for 42 s
// after the client had gone. The structure walk refuses both at once, with
// little memory, and a well-behaved request is served after them.
TEST_F(HostileTest, DicomThatDcmtkWouldChokeOnIsRefusedAtOnce) {
  const std::string descending = testing::Part10(testing::EmptyElements(80000, /*descending=*/true));
  const std::string tiny_elements = testing::Part10(testing::EmptyElements(1000000, false));  // 8 MB
  auto c = client::Client::Connect(Address());
  client::SegmentOptions options;
  options.format = unetrpp::v1::INPUT_FORMAT_DICOM;
  const int64_t rss = testing::ResetPeakRss();
  for (const auto& [file, named] :
       {std::pair{&descending, "tags must ascend"}, {&tiny_elements, "limit per data set"}}) {
    const auto start = std::chrono::steady_clock::now();
    auto r = c->Segment({*file}, options);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 2.0);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(r.status().message().find(named), std::string::npos) << r.status();
  }
  EXPECT_LT(testing::PeakRssBytes() - rss, testing::RssBound(int64_t{64} << 20));
  EXPECT_TRUE(GoodRequestSucceeds());
}

// Issue 28: decoding ran on the CPU pool, whose threads also stitch every
// request's windows and finish it, so one caller's slow input held them all.
// Here the pool has one thread; a request is in inference when eight DICOM
// instances of 520,000 elements each (within every cap, about a second of
// DCMTK each, none an image) arrive. Decoded on a pool of its own
// (limits.decode_threads), they no longer keep the first request's windows
// from being stitched: it finishes while they are still being parsed.
TEST(HostileConfigTest, ASlowDecodeDoesNotHoldUpAnotherRequestsStitching) {
  auto server = StartServer("",
                            "max_input_bytes: 67108864 max_bytes_in_flight: 4294967296 max_input_files: 8 "
                            "max_windows_per_request: 4000 decode_threads: 1",
                            kTimeouts, "off", /*cpu_threads=*/1);
  ASSERT_TRUE(server);
  const std::string address = "127.0.0.1:" + std::to_string(server->port());
  const std::vector<std::string> items(8, testing::EmptyElements(65000, false));
  const std::vector<std::string> slow(8, testing::Part10(testing::SequenceOf(0x0009, 0x1000, items)));

  std::promise<void> in_inference;
  std::atomic<bool> told{false};
  using Clock = std::chrono::steady_clock;
  auto first = std::async(std::launch::async, [&] {
    auto c = client::Client::Connect(address);
    auto r = c->Segment({testing::FloatNifti(testing::Phantom({96, 96, 48}, {2.0, 2.0, 2.0}))}, {},
                        [&](const unetrpp::v1::Progress& p) {
                          if (p.stage() == unetrpp::v1::STAGE_INFERENCE && !told.exchange(true))
                            in_inference.set_value();
                        });
    return std::make_pair(r.status(), Clock::now());
  });
  ASSERT_EQ(in_inference.get_future().wait_for(std::chrono::seconds(120)), std::future_status::ready);
  auto slow_call = std::async(std::launch::async, [&] {
    auto c = client::Client::Connect(address);
    client::SegmentOptions options;
    options.format = unetrpp::v1::INPUT_FORMAT_DICOM;
    auto r = c->Segment(slow, options);
    return std::make_pair(r.status(), Clock::now());
  });
  const auto [first_status, first_done] = first.get();
  const auto [slow_status, slow_done] = slow_call.get();
  EXPECT_TRUE(first_status.ok()) << first_status;
  EXPECT_EQ(slow_status.code(), absl::StatusCode::kInvalidArgument) << slow_status;
  const double after = std::chrono::duration<double>(first_done - slow_done).count();
  EXPECT_LT(after, 0.0) << "the first request finished " << after << " s after the slow input's decode ended";
}

// A client that sends its volume and never reads the result: its writes
// stall, and after send_stall_seconds the call is cancelled and its slot
// (here the only one for its address) is free again.
// A deflated DICOM instance is read whole: 160 KB on the wire that inflate
// to 160 MiB (twice that while its lengths are checked) are reserved against
// limits.max_bytes_in_flight before anything inflates them, not found out by
// the kernel's OOM killer.
TEST(HostileDicomTest, ADeflatedInstanceIsReservedBeforeItInflates) {
  auto series = testing::CtSeries(1);
  if (series.empty()) GTEST_SKIP() << "python3-pydicom test data not installed";
  const std::string deflated = testing::DeflatedWithZeros(series[0], size_t{160} << 20);
  ASSERT_FALSE(deflated.empty());
  ASSERT_LT(deflated.size(), 1u << 20);
  auto server = StartServer("", "max_input_bytes: 33554432 max_bytes_in_flight: 268435456");
  ASSERT_TRUE(server);
  auto c = client::Client::Connect("127.0.0.1:" + std::to_string(server->port()));
  client::SegmentOptions options;
  options.format = unetrpp::v1::INPUT_FORMAT_DICOM;
  const int64_t rss = testing::ResetPeakRss();
  auto r = c->Segment({deflated}, options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_LT(testing::PeakRssBytes() - rss, testing::RssBound(int64_t{64} << 20));
  r = c->Segment(series, options);  // the same instance, not deflated
  EXPECT_TRUE(r.ok()) << r.status();
}

// A client that has sent a whole NIfTI upload asking for raw labels (3 MB
// for this phantom, beyond the 64 KiB flow-control window of a channel
// without BDP probing) and then reads nothing after the acceptance.
struct StalledClient {
  std::unique_ptr<unetrpp::v1::Segmentation::Stub> stub;
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<SegmentRequest, SegmentResponse>> stream;
  int64_t upload_bytes = 0;
};

std::unique_ptr<StalledClient> StartStalledClient(const std::string& address) {
  auto c = std::make_unique<StalledClient>();
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  c->stub =
      unetrpp::v1::Segmentation::NewStub(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  c->stream = c->stub->Segment(&c->context);
  SegmentRequest header, chunk, end;
  header.mutable_header()->set_format(unetrpp::v1::INPUT_FORMAT_NIFTI);
  header.mutable_header()->add_outputs(unetrpp::v1::OUTPUT_KIND_RAW_LABELS);
  end.mutable_end();
  const std::string nifti = testing::FloatNifti(testing::Phantom({160, 160, 60}, {2.0, 2.0, 2.0}));
  c->upload_bytes = static_cast<int64_t>(nifti.size());
  bool sent = c->stream->Write(header);
  for (size_t at = 0; at < nifti.size() && sent; at += 1 << 20) {
    chunk.mutable_chunk()->set_data(nifti.substr(at, 1 << 20));
    sent = c->stream->Write(chunk);
  }
  sent = sent && c->stream->Write(end) && c->stream->WritesDone();
  SegmentResponse accepted;
  EXPECT_TRUE(sent && c->stream->Read(&accepted) && accepted.has_accepted());
  return c;
}

TEST(HostileStallTest, AClientThatNeverReadsIsCutOff) {
  auto server =
      StartServer("", "per_caller { max_requests_per_peer: 1 } max_input_bytes: 33554432", "send_stall_seconds: 1");
  ASSERT_TRUE(server);
  const std::string address = "127.0.0.1:" + std::to_string(server->port());
  auto stalled = StartStalledClient(address);
  // Never read. Another request from this address is refused while the
  // stalled one holds the slot, and accepted once the stall timeout freed it.
  auto other = client::Client::Connect(address);
  const std::string small = testing::FloatNifti(testing::Phantom({30, 30, 10}, {2.0, 2.0, 2.0}));
  EXPECT_EQ(other->Segment({small}, {}).status().code(), absl::StatusCode::kResourceExhausted);
  // The slot frees once the results are ready and then stall for 1 s: a few
  // seconds here, much longer under ThreadSanitizer (the loop ends when freed).
  bool freed = false;
  for (int i = 0; i < 360 && !freed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    freed = other->Segment({small}, {}).ok();
  }
  EXPECT_TRUE(freed);
  stalled->context.TryCancel();
}

// A client that stops reading its results holds the results (3 MB of raw
// labels here), not the job's working memory and its upload: the
// reservation shrinks once they are encoded.
TEST(HostileStallTest, AStalledClientHoldsOnlyItsResults) {
  const int metrics_port = testing::FreePort();
  auto server = StartServer("", "max_input_bytes: 33554432", "send_stall_seconds: 120",
                            "127.0.0.1:" + std::to_string(metrics_port));
  ASSERT_TRUE(server);
  auto stalled = StartStalledClient("127.0.0.1:" + std::to_string(server->port()));
  const double results = 160.0 * 160 * 60 * 2;
  double admitted = -1;
  bool seen_upload = false;
  for (int i = 0; i < 600; ++i) {  // until it settles on the results (minutes under ThreadSanitizer)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    admitted = testing::MetricValue(testing::HttpGet(metrics_port, "/metrics"), "upp_admitted_memory_bytes");
    // Past the upload: it was seen held, or 5 s have gone (a fast machine
    // can encode before the first sample).
    seen_upload = seen_upload || admitted > static_cast<double>(stalled->upload_bytes);
    if (admitted > 0 && admitted <= results && (seen_upload || i >= 25)) break;
  }
  // Without the shrink the upload (6 MB) and the job's estimate stay.
  EXPECT_LE(admitted, results);
  EXPECT_GT(admitted, 0.0);
  stalled->context.TryCancel();
}

TEST(SystemMemoryTest, CgroupLimitsParse) {
  EXPECT_EQ(ParseCgroupLimit("max\n"), -1);
  EXPECT_EQ(ParseCgroupLimit("12884901888\n"), int64_t{12} << 30);
  EXPECT_EQ(ParseCgroupLimit("9223372036854771712\n"), -1);  // cgroup v1 "unlimited"
  EXPECT_EQ(ParseCgroupLimit(""), -1);
  const int64_t available = AvailableMemoryBytes();
  EXPECT_GT(available, int64_t{256} << 20);
  unetrpp::v1::ServerConfig c;
  ApplyDefaults(c);
  EXPECT_EQ(static_cast<int64_t>(c.limits().max_bytes_in_flight()), available / 2);
  EXPECT_LE(c.limits().max_input_bytes(), c.limits().max_bytes_in_flight() / 4);
}

}  // namespace
}  // namespace upp::server
