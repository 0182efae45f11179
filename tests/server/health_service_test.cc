// grpc.health.v1 as the server serves it (server/health_service.h): Check
// and Watch per the protocol, and Watch streams bounded per client address.
#include "server/health_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace upp::server {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

constexpr uint32_t kMaxWatches = 4;

class HealthServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    health_ = std::make_unique<HealthService>(kMaxWatches);
    grpc::ServerBuilder builder;
    // Every address: 127.0.0.1 and [::1] are two client addresses.
    builder.AddListeningPort("[::]:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(health_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    health_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_->Wait();
  }
  std::unique_ptr<Health::Stub> Stub(const std::string& host) {
    return Health::NewStub(grpc::CreateChannel(host + ":" + std::to_string(port_), grpc::InsecureChannelCredentials()));
  }

  // One Watch stream and its first answer.
  struct Watch {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> reader;
    HealthCheckResponse first;
    bool answered = false;
  };
  std::unique_ptr<Watch> StartWatch(Health::Stub& stub, const std::string& service) {
    auto w = std::make_unique<Watch>();
    w->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    HealthCheckRequest request;
    request.set_service(service);
    w->reader = stub.Watch(&w->context, request);
    w->answered = w->reader->Read(&w->first);
    return w;
  }

  std::unique_ptr<HealthService> health_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(HealthServiceTest, CheckAnswersRegisteredNamesAndNotFoundOthers) {
  auto stub = Stub("127.0.0.1");
  const auto check = [&](const std::string& service, HealthCheckResponse* response) {
    grpc::ClientContext context;
    HealthCheckRequest request;
    request.set_service(service);
    return stub->Check(&context, request, response).error_code();
  };
  HealthCheckResponse response;
  EXPECT_EQ(check("", &response), grpc::StatusCode::OK);
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);  // until the server says so
  health_->SetServing("", true);
  health_->SetServing("unetrpp.v1.Segmentation/m", true);
  EXPECT_EQ(check("", &response), grpc::StatusCode::OK);
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  EXPECT_EQ(check("unetrpp.v1.Segmentation/m", &response), grpc::StatusCode::OK);
  EXPECT_EQ(check("unetrpp.v1.Segmentation/other", &response), grpc::StatusCode::NOT_FOUND);
}

TEST_F(HealthServiceTest, WatchSendsEveryChangeAndEndsWhenTheServerStops) {
  health_->SetServing("", true);
  auto stub = Stub("127.0.0.1");
  auto w = StartWatch(*stub, "");
  ASSERT_TRUE(w->answered);
  EXPECT_EQ(w->first.status(), HealthCheckResponse::SERVING);
  health_->SetServing("", false);
  HealthCheckResponse next;
  ASSERT_TRUE(w->reader->Read(&next));
  EXPECT_EQ(next.status(), HealthCheckResponse::NOT_SERVING);
  auto unknown = StartWatch(*stub, "no-such-service");
  ASSERT_TRUE(unknown->answered);
  EXPECT_EQ(unknown->first.status(), HealthCheckResponse::SERVICE_UNKNOWN);
  health_->Shutdown();
  EXPECT_FALSE(w->reader->Read(&next));
  EXPECT_EQ(w->reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

// A Watch never ends by itself and keeps its connection from going idle:
// one address may hold kMaxWatches at once, another address its own.
TEST_F(HealthServiceTest, WatchStreamsAreBoundedPerClientAddress) {
  health_->SetServing("", true);
  auto v4 = Stub("127.0.0.1");
  std::vector<std::unique_ptr<Watch>> held;
  for (uint32_t i = 0; i < kMaxWatches; ++i) {
    held.push_back(StartWatch(*v4, ""));
    ASSERT_TRUE(held.back()->answered) << "watch " << i;
  }
  auto refused = StartWatch(*v4, "");
  EXPECT_FALSE(refused->answered);
  const grpc::Status status = refused->reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(status.error_message().find("limits.max_health_watches_per_peer"), std::string::npos)
      << status.error_message();

  auto v6 = Stub("[::1]");
  auto other = StartWatch(*v6, "");  // another address: its own count
  EXPECT_TRUE(other->answered);

  // One ended: its place is free again.
  held.back()->context.TryCancel();
  held.back()->reader->Finish();
  held.pop_back();
  std::unique_ptr<Watch> again;
  for (int i = 0; i < 50 && !(again && again->answered); ++i) {
    if (again) {
      again->reader->Finish();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    again = StartWatch(*v4, "");
  }
  EXPECT_TRUE(again->answered);
  for (auto* w : {again.get(), other.get()}) w->context.TryCancel();
  for (auto& w : held) w->context.TryCancel();
}

}  // namespace
}  // namespace upp::server
