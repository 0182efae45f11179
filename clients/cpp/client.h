// upp::client::Client: the C++ client library of unetrpp-serve, used by
// upp-client and the integration tests.
//
// Segment() streams the inputs in chunks (never a message over 4 MiB),
// reports progress through a callback, and collects the result. It uses
// gRPC's synchronous client API on the calling thread: a client has no
// reactor threads to protect, and the stream's reads and writes are
// sequential (the server sends only small messages before EndOfInput).
//
// Threading: a Client may be shared by threads; each call is independent.
#ifndef UPP_CLIENTS_CPP_CLIENT_H_
#define UPP_CLIENTS_CPP_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/api.h"
#include "unetrpp/v1/segmentation.grpc.pb.h"

namespace upp::client {

struct SegmentOptions {
  std::string model;          // empty: the server's default
  std::string model_version;  // empty: the model's default version
  unetrpp::v1::InputFormat format = unetrpp::v1::INPUT_FORMAT_NIFTI;
  std::vector<unetrpp::v1::OutputKind> outputs{unetrpp::v1::OUTPUT_KIND_NIFTI_LABELS};
  bool mirror = false;
  double step = 0;  // 0: the model's plan
  int priority = 0;
  std::string client_request_id;
  std::string series_instance_uid;  // DICOM: the series to segment when the instances hold several
  // Speed mode (full, fast, fastest; unspecified: the model's default) and
  // the labels to segment by name (empty: all); docs/server.md.
  unetrpp::v1::SpeedMode mode = unetrpp::v1::SPEED_MODE_UNSPECIFIED;
  std::vector<std::string> labels;
  std::optional<absl::Duration> deadline;  // for all attempts together
  // W3C trace context sent as gRPC metadata: the server's spans continue
  // this trace (docs/server.md Tracing). Empty: none (the server may start
  // a trace of its own). A malformed traceparent fails the call before it
  // is sent (CheckTraceParent).
  std::string traceparent, tracestate;
  size_t chunk_bytes = proto::kChunkBytes;
  // Attempts on UNAVAILABLE (a replica draining or gone, no replica ready):
  // the whole request is sent again after 200 ms, 400 ms, ... (at most 2 s,
  // within the deadline). Safe because a segmentation has no side effects.
  // While the server cannot be reached, each wait is spent reconnecting
  // (gRPC's own reconnect backoff reset), so a server that comes back is
  // used at once rather than after up to two minutes of that backoff.
  int max_attempts = 1;
};

struct SegmentResult {
  std::string server_request_id;
  unetrpp::v1::ResultHeader header;
  std::map<unetrpp::v1::OutputKind, std::string> outputs;
  unetrpp::v1::Summary summary;
  int attempts = 1;  // calls made, retries included
};

using ProgressCallback = std::function<void(const unetrpp::v1::Progress&)>;

// How to reach a server: TLS (with a CA, optionally a client certificate for
// mTLS, and the name the server's certificate carries) and a bearer token.
struct ConnectOptions {
  std::string tls_ca_file;                  // PEM; set: TLS
  std::string tls_cert_file, tls_key_file;  // PEM; mTLS
  std::string server_name;                  // overrides the name checked in the server's certificate
  std::string token;                        // sent as "authorization: Bearer <token>"
  // "round_robin": spread calls over every address the target resolves to
  // (a headless Kubernetes service, "dns:///name:port", or a list
  // "ipv4:a:port,b:port"), skipping servers whose health is not SERVING, so
  // a draining replica gets no new calls. Empty: gRPC's default (pick_first).
  std::string load_balancing;
  // How long a call waits for the server to accept connections before its
  // first attempt (a server just started, a pod restarting); zero: it fails
  // at once when the server cannot be reached. Bounded by the deadline.
  absl::Duration wait_for_server = absl::ZeroDuration();
};

// True when `status` says that client and server disagree on TLS (the
// client library found out by asking the server, transport_probe.h): a
// configuration mistake, not an outage; retrying cannot help. Such a status
// is FAILED_PRECONDITION and its message says which setting is wrong.
bool IsTransportMismatch(const absl::Status& status);

// OK when `traceparent` is a W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>",
// lowercase, ids not all zero, version not ff); else INVALID_ARGUMENT.
absl::Status CheckTraceParent(std::string_view traceparent);

class InputSource;  // client.cc: inputs in memory or in files

class Client {
 public:
  explicit Client(std::shared_ptr<grpc::Channel> channel, std::string token = "");
  // An insecure channel to "host:port" with 4 MiB messages.
  static std::unique_ptr<Client> Connect(const std::string& target);
  // Per `options`; INVALID_ARGUMENT when a certificate file cannot be read.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& target, const ConnectOptions& options);

  // `inputs`: NIfTI files (one, or one per channel) or DICOM instances, as
  // bytes. The gRPC status of a failed call comes back as an absl::Status
  // with the same code and message.
  absl::StatusOr<SegmentResult> Segment(const std::vector<std::string>& inputs, const SegmentOptions& options,
                                        const ProgressCallback& progress = {});
  // The same with the inputs read from files as they are sent, a chunk at a
  // time (a series of thousands of instances is never in memory at once).
  // NOT_FOUND when a file cannot be read.
  absl::StatusOr<SegmentResult> SegmentFiles(const std::vector<std::string>& paths, const SegmentOptions& options,
                                             const ProgressCallback& progress = {});
  absl::StatusOr<unetrpp::v1::ListModelsResponse> ListModels();
  absl::StatusOr<unetrpp::v1::ModelInfo> GetModel(const std::string& name);
  // Model management (the admin role): a version loaded and made the
  // default, or unloaded; the model's state after it.
  absl::StatusOr<unetrpp::v1::ModelInfo> LoadModel(const unetrpp::v1::LoadModelRequest& request);
  absl::StatusOr<unetrpp::v1::ModelInfo> UnloadModel(const std::string& name, const std::string& version);
  // grpc.health.v1 Check: true when SERVING. `service`: "" for the server.
  absl::StatusOr<bool> Healthy(const std::string& service = "");

 private:
  void Prepare(grpc::ClientContext& context) const;
  // Until the channel is connected (OK) or `until` (UNAVAILABLE); at once
  // the TLS mismatch (IsTransportMismatch) when the server speaks the other
  // protocol, which no wait can mend.
  absl::Status WaitForServer(absl::Time until);
  // Before a call: WaitForServer for at most wait_for_server_ (and not past
  // `deadline`); only a TLS mismatch fails it.
  absl::Status AwaitServer(absl::Time deadline);
  // `status` of a failed call, or the TLS mismatch that explains it.
  absl::Status Explain(absl::Status status) const;
  absl::StatusOr<SegmentResult> SegmentWithRetries(const InputSource& inputs, const SegmentOptions& options,
                                                   const ProgressCallback& progress);
  absl::StatusOr<SegmentResult> SegmentOnce(const InputSource& inputs, const SegmentOptions& options,
                                            absl::Time deadline, const ProgressCallback& progress);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<unetrpp::v1::Segmentation::Stub> stub_;
  const std::string token_;
  // Set by Connect(target, options): what WaitForServer and Explain need.
  std::string target_;
  bool tls_ = false;
  absl::Duration wait_for_server_ = absl::ZeroDuration();
};

}  // namespace upp::client

#endif  // UPP_CLIENTS_CPP_CLIENT_H_
