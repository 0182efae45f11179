#include "clients/cpp/client.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "clients/cpp/transport_probe.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "imageio/file_util.h"

namespace upp::client {
namespace {

// Client-side health checking makes round_robin skip servers that answer
// NOT_SERVING (draining), not only those whose connection fails.
std::string ServiceConfig(const std::string& load_balancing) {
  return absl::StrCat(R"({"loadBalancingConfig": [{")", load_balancing,
                      R"(": {}}], "healthCheckConfig": {"serviceName": ""}})");
}

constexpr char kTransportMismatch[] = "type.unetrpp/transport-mismatch";
// A probe is one TCP connection and a TLS handshake: a server that does not
// answer within this is treated as unknown, never as a mismatch.
constexpr absl::Duration kProbeTimeout = absl::Seconds(2);

// The mismatch between `tls` (the client's setting) and what the server at
// `target` speaks, as a status; OK when they agree or the server is unknown.
absl::Status TransportMismatch(const std::string& target, bool tls) {
  if (target.empty()) return absl::OkStatus();
  const auto server = ProbeTransport(target, kProbeTimeout);
  absl::Status s;
  if (server == Transport::kTls && !tls) {
    s = absl::FailedPreconditionError(absl::StrCat("the server at ", target,
                                                   " speaks TLS and this client connects without it: give the "
                                                   "client the server's CA certificate (upp-client --tls-ca FILE)"));
  } else if (server == Transport::kNotTls && tls) {
    s = absl::FailedPreconditionError(absl::StrCat("the server at ", target,
                                                   " does not speak TLS (plaintext): connect without TLS "
                                                   "(leave out upp-client --tls-ca)"));
  }
  if (!s.ok()) s.SetPayload(kTransportMismatch, absl::Cord("1"));
  return s;
}

}  // namespace

// Where a call's inputs come from; Send() streams input `i` in chunks
// through `write` and stops when it returns false.
class InputSource {
 public:
  virtual ~InputSource() = default;
  virtual size_t count() const = 0;
  virtual absl::StatusOr<uint64_t> bytes(size_t i) const = 0;
  virtual absl::Status Send(size_t i, size_t chunk, const std::function<bool(std::string_view)>& write) const = 0;
};

namespace {

class MemoryInputs : public InputSource {
 public:
  explicit MemoryInputs(const std::vector<std::string>& inputs) : inputs_(inputs) {}
  size_t count() const override { return inputs_.size(); }
  absl::StatusOr<uint64_t> bytes(size_t i) const override { return inputs_[i].size(); }
  absl::Status Send(size_t i, size_t chunk, const std::function<bool(std::string_view)>& write) const override {
    const std::string& in = inputs_[i];
    for (size_t off = 0; off < in.size(); off += chunk)
      if (!write(std::string_view(in).substr(off, chunk))) break;
    return absl::OkStatus();
  }

 private:
  const std::vector<std::string>& inputs_;
};

class FileInputs : public InputSource {
 public:
  explicit FileInputs(const std::vector<std::string>& paths) : paths_(paths) {}
  size_t count() const override { return paths_.size(); }
  absl::StatusOr<uint64_t> bytes(size_t i) const override {
    std::error_code ec;
    const auto n = std::filesystem::file_size(paths_[i], ec);
    if (ec) return absl::NotFoundError(absl::StrCat("cannot read input ", i + 1));
    return n;
  }
  absl::Status Send(size_t i, size_t chunk, const std::function<bool(std::string_view)>& write) const override {
    std::ifstream in(paths_[i], std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read input ", i + 1));
    std::string buffer(chunk, '\0');
    while (in) {
      in.read(buffer.data(), static_cast<std::streamsize>(chunk));
      if (in.gcount() > 0 && !write(std::string_view(buffer.data(), static_cast<size_t>(in.gcount())))) break;
    }
    if (in.bad()) return absl::DataLossError(absl::StrCat("reading input ", i + 1, " failed"));
    return absl::OkStatus();
  }

 private:
  const std::vector<std::string>& paths_;
};

}  // namespace

Client::Client(std::shared_ptr<grpc::Channel> channel, std::string token)
    : channel_(std::move(channel)), stub_(unetrpp::v1::Segmentation::NewStub(channel_)), token_(std::move(token)) {}

void Client::Prepare(grpc::ClientContext& context) const {
  if (!token_.empty()) context.AddMetadata("authorization", "Bearer " + token_);
}

bool IsTransportMismatch(const absl::Status& status) { return status.GetPayload(kTransportMismatch).has_value(); }

absl::Status Client::WaitForServer(absl::Time until) {
  absl::Time next_probe = absl::InfinitePast();
  for (;;) {
    const grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
    if (state == GRPC_CHANNEL_READY) return absl::OkStatus();
    if (absl::Now() >= until) return absl::UnavailableError("the server did not accept a connection in time");
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE) {
      // A server that answers in the wrong protocol will never connect: no
      // point waiting for it. Asked at most once a second (a server that is
      // not up yet answers nothing, and may come up on either protocol).
      if (absl::Now() >= next_probe) {
        if (auto mismatch = TransportMismatch(target_, tls_); !mismatch.ok()) return mismatch;
        next_probe = absl::Now() + absl::Seconds(1);
      }
      // gRPC waits 1 s, 1.6 s, 2.6 s, ... between connection attempts (up
      // to 2 min); a server that has just come up should not wait for that.
      grpc::experimental::ChannelResetConnectionBackoff(channel_.get());
    }
    channel_->WaitForStateChange(state, absl::ToChronoTime(std::min(until, absl::Now() + absl::Milliseconds(250))));
  }
}

absl::Status Client::AwaitServer(absl::Time deadline) {
  if (wait_for_server_ <= absl::ZeroDuration()) return absl::OkStatus();
  const absl::Status s = WaitForServer(std::min(deadline, absl::Now() + wait_for_server_));
  // Not connected in time: the call itself then fails with gRPC's reason.
  return IsTransportMismatch(s) ? s : absl::OkStatus();
}

absl::Status Client::Explain(absl::Status status) const {
  if (status.code() != absl::StatusCode::kUnavailable) return status;
  if (auto mismatch = TransportMismatch(target_, tls_); !mismatch.ok()) return mismatch;
  return status;
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& target, const ConnectOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(proto::kMaxMessageBytes);
  args.SetMaxSendMessageSize(proto::kMaxMessageBytes);
  if (!options.server_name.empty()) args.SetSslTargetNameOverride(options.server_name);
  if (!options.load_balancing.empty()) args.SetServiceConfigJSON(ServiceConfig(options.load_balancing));
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca_file.empty()) {
    grpc::SslCredentialsOptions tls;
    auto ca = imageio::ReadWholeFile(options.tls_ca_file, 1 << 20);
    if (!ca.ok()) return absl::InvalidArgumentError("cannot read the CA file " + options.tls_ca_file);
    tls.pem_root_certs = *ca;
    if (!options.tls_cert_file.empty()) {
      auto cert = imageio::ReadWholeFile(options.tls_cert_file, 1 << 20);
      auto key = imageio::ReadWholeFile(options.tls_key_file, 1 << 20);
      if (!cert.ok() || !key.ok()) return absl::InvalidArgumentError("cannot read the client certificate or key");
      tls.pem_cert_chain = *cert;
      tls.pem_private_key = *key;
    }
    credentials = grpc::SslCredentials(tls);
  }
  auto client = std::make_unique<Client>(grpc::CreateCustomChannel(target, credentials, args), options.token);
  client->target_ = target;
  client->tls_ = !options.tls_ca_file.empty();
  client->wait_for_server_ = options.wait_for_server;
  return client;
}

std::unique_ptr<Client> Client::Connect(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(proto::kMaxMessageBytes);
  args.SetMaxSendMessageSize(proto::kMaxMessageBytes);
  return std::make_unique<Client>(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
}

absl::Status CheckTraceParent(std::string_view traceparent) {
  const auto hex = [&](size_t begin, size_t n, bool nonzero) {
    bool any = false;
    for (size_t i = begin; i < begin + n; ++i) {
      const char c = traceparent[i];
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
      any = any || c != '0';
    }
    return any || !nonzero;
  };
  const bool ok = traceparent.size() == 55 && traceparent[2] == '-' && traceparent[35] == '-' &&
                  traceparent[52] == '-' && hex(0, 2, false) && traceparent.substr(0, 2) != "ff" && hex(3, 32, true) &&
                  hex(36, 16, true) && hex(53, 2, false);
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("traceparent must be W3C's 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, not \"",
                   std::string(traceparent.substr(0, 64)), "\""));
}

absl::StatusOr<SegmentResult> Client::Segment(const std::vector<std::string>& inputs, const SegmentOptions& options,
                                              const ProgressCallback& progress) {
  return SegmentWithRetries(MemoryInputs(inputs), options, progress);
}

absl::StatusOr<SegmentResult> Client::SegmentFiles(const std::vector<std::string>& paths, const SegmentOptions& options,
                                                   const ProgressCallback& progress) {
  return SegmentWithRetries(FileInputs(paths), options, progress);
}

absl::StatusOr<SegmentResult> Client::SegmentWithRetries(const InputSource& inputs, const SegmentOptions& options,
                                                         const ProgressCallback& progress) {
  if (!options.traceparent.empty())
    if (auto s = CheckTraceParent(options.traceparent); !s.ok()) return s;
  const absl::Time deadline = options.deadline ? absl::Now() + *options.deadline : absl::InfiniteFuture();
  absl::Duration backoff = absl::Milliseconds(200);
  if (auto s = AwaitServer(deadline); !s.ok()) return s;
  for (int attempt = 1;; ++attempt) {
    auto result = SegmentOnce(inputs, options, deadline, progress);
    if (result.ok()) result->attempts = attempt;
    if (result.ok() || result.status().code() != absl::StatusCode::kUnavailable) return result;
    if (attempt >= options.max_attempts || absl::Now() + backoff >= deadline) return Explain(result.status());
    // A server that answered (draining) gets its pause; one that cannot be
    // reached is reconnected to throughout it, and tried as soon as it is.
    if (channel_->GetState(false) == GRPC_CHANNEL_READY) {
      absl::SleepFor(backoff);
    } else if (auto s = WaitForServer(absl::Now() + backoff); IsTransportMismatch(s)) {
      return s;
    }
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

absl::StatusOr<SegmentResult> Client::SegmentOnce(const InputSource& inputs, const SegmentOptions& options,
                                                  absl::Time deadline, const ProgressCallback& progress) {
  grpc::ClientContext context;
  Prepare(context);
  if (!options.traceparent.empty()) {
    context.AddMetadata("traceparent", options.traceparent);
    if (!options.tracestate.empty()) context.AddMetadata("tracestate", options.tracestate);
  }
  if (deadline != absl::InfiniteFuture()) context.set_deadline(absl::ToChronoTime(deadline));
  auto stream = stub_->Segment(&context);

  unetrpp::v1::SegmentRequest request;
  auto* h = request.mutable_header();
  h->set_model(options.model);
  h->set_model_version(options.model_version);
  h->set_format(options.format);
  for (auto o : options.outputs) h->add_outputs(o);
  h->set_mirror(options.mirror);
  h->set_step(options.step);
  h->set_priority(options.priority);
  h->set_client_request_id(options.client_request_id);
  h->set_series_instance_uid(options.series_instance_uid);
  h->set_mode(options.mode);
  for (const auto& l : options.labels) h->add_labels(l);
  uint64_t total = 0;
  for (size_t i = 0; i < inputs.count(); ++i) {
    auto n = inputs.bytes(i);
    if (!n.ok()) return n.status();
    total += *n;
  }
  h->set_expected_input_bytes(total);
  bool open = stream->Write(request);
  const size_t chunk = std::clamp<size_t>(options.chunk_bytes, 1, 3 << 20);
  for (size_t i = 0; i < inputs.count() && open; ++i) {
    auto s = inputs.Send(i, chunk, [&](std::string_view data) {
      unetrpp::v1::SegmentRequest c;
      c.mutable_chunk()->set_input_index(static_cast<uint32_t>(i));
      c.mutable_chunk()->set_data(data.data(), data.size());
      return open = stream->Write(c);
    });
    if (!s.ok()) {
      context.TryCancel();
      stream->Finish();
      return s;
    }
  }
  if (open) {
    unetrpp::v1::SegmentRequest end;
    end.mutable_end();
    open = stream->Write(end);
  }
  stream->WritesDone();

  SegmentResult result;
  unetrpp::v1::SegmentResponse response;
  while (stream->Read(&response)) {
    switch (response.kind_case()) {
      case unetrpp::v1::SegmentResponse::kAccepted:
        result.server_request_id = response.accepted().server_request_id();
        break;
      case unetrpp::v1::SegmentResponse::kProgress:
        if (progress) progress(response.progress());
        break;
      case unetrpp::v1::SegmentResponse::kResultHeader:
        result.header = response.result_header();
        for (size_t i = 0; i < static_cast<size_t>(result.header.outputs_size()); ++i)
          result.outputs[result.header.outputs(i)].reserve(result.header.output_bytes(i));
        break;
      case unetrpp::v1::SegmentResponse::kResultChunk:
        result.outputs[response.result_chunk().output()].append(response.result_chunk().data());
        break;
      case unetrpp::v1::SegmentResponse::kSummary: result.summary = response.summary(); break;
      default: break;
    }
  }
  if (auto s = proto::FromGrpcCall(stream->Finish(), context); !s.ok()) return s;
  for (int i = 0; i < result.header.outputs_size(); ++i)
    if (result.outputs[result.header.outputs(i)].size() != result.header.output_bytes(i))
      return absl::DataLossError("a result output arrived incomplete");
  return result;
}

absl::StatusOr<unetrpp::v1::ListModelsResponse> Client::ListModels() {
  grpc::ClientContext context;
  Prepare(context);
  unetrpp::v1::ListModelsResponse response;
  if (auto s = AwaitServer(absl::InfiniteFuture()); !s.ok()) return s;
  if (auto s = proto::FromGrpcStatus(stub_->ListModels(&context, {}, &response)); !s.ok()) return Explain(s);
  return response;
}

absl::StatusOr<unetrpp::v1::ModelInfo> Client::GetModel(const std::string& name) {
  grpc::ClientContext context;
  Prepare(context);
  unetrpp::v1::GetModelRequest request;
  request.set_name(name);
  unetrpp::v1::ModelInfo response;
  if (auto s = AwaitServer(absl::InfiniteFuture()); !s.ok()) return s;
  if (auto s = proto::FromGrpcStatus(stub_->GetModel(&context, request, &response)); !s.ok()) return Explain(s);
  return response;
}

absl::StatusOr<unetrpp::v1::ModelInfo> Client::LoadModel(const unetrpp::v1::LoadModelRequest& request) {
  grpc::ClientContext context;
  Prepare(context);
  unetrpp::v1::ModelInfo response;
  if (auto s = AwaitServer(absl::InfiniteFuture()); !s.ok()) return s;
  if (auto s = proto::FromGrpcStatus(stub_->LoadModel(&context, request, &response)); !s.ok()) return Explain(s);
  return response;
}

absl::StatusOr<unetrpp::v1::ModelInfo> Client::UnloadModel(const std::string& name, const std::string& version) {
  grpc::ClientContext context;
  Prepare(context);
  unetrpp::v1::UnloadModelRequest request;
  request.set_name(name);
  request.set_version(version);
  unetrpp::v1::ModelInfo response;
  if (auto s = AwaitServer(absl::InfiniteFuture()); !s.ok()) return s;
  if (auto s = proto::FromGrpcStatus(stub_->UnloadModel(&context, request, &response)); !s.ok()) return Explain(s);
  return response;
}

absl::StatusOr<bool> Client::Healthy(const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  Prepare(context);
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  if (auto s = AwaitServer(absl::InfiniteFuture()); !s.ok()) return s;
  if (auto s = proto::FromGrpcStatus(stub->Check(&context, request, &response)); !s.ok()) return Explain(s);
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

}  // namespace upp::client
