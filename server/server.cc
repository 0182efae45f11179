#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "imageio/file_util.h"
#include "model/cpu_features.h"
#include "model/device.h"
#include "proto/api.h"
#include "server/config.h"
#include "server/config_reload.h"
#include "server/health_service.h"
#include "server/result_encoder.h"
#include "server/segment_call.h"
#include "server/service_state.h"
#include "server/system_memory.h"
#include "tracing/server_tracing.h"
#include "unetrpp/v1/segmentation.grpc.pb.h"

namespace upp::server {
namespace {

constexpr char kServiceName[] = "unetrpp.v1.Segmentation";

// A model's default version (architecture, plan, labels) and the state of
// each of its versions.
void FillModelInfo(const ModelDescription& d, unetrpp::v1::ModelInfo* info) {
  info->set_name(d.name);
  info->set_version(d.default_version);
  if (const ServedModel* m = d.serving.get()) {
    info->set_architecture_json(m->config().ToJson());
    info->set_plan_json(m->plan().ToJson());
    FillLabels(m->plan().labels, info->mutable_labels());
    info->set_input_channels(static_cast<uint32_t>(m->config().in_channels));
    info->set_modality(m->entry().modality());
    for (const auto& device : m->entry().devices()) info->add_devices(device);
  }
  info->set_ready(static_cast<bool>(d.serving));
  for (const VersionRecord& r : d.versions) {
    auto* v = info->add_versions();
    v->set_version(r.version);
    v->set_state(VersionStateName(r.state));
    v->set_is_default(r.version == d.default_version);
    v->set_load_seconds(r.load_seconds);
    v->set_state_since(absl::FormatTime(absl::RFC3339_sec, r.since, absl::UTCTimeZone()));
    v->set_error(r.error);
    v->set_weights_sha256(r.details.weights_sha256);
    v->set_model_card_json(r.details.card_json);
  }
}

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* field) {
  auto bytes = imageio::ReadWholeFile(path, int64_t{1} << 20);
  if (!bytes.ok()) return absl::NotFoundError(absl::StrCat("config: ", field, ": cannot read ", path));
  return bytes;
}

// Bounds what one connection may hold: streams, metadata, idle and age, and
// clients that ping too often (keepalive enforcement).
void ApplyTransportLimits(const unetrpp::v1::Transport& t, grpc::ServerBuilder& builder) {
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, static_cast<int>(t.max_concurrent_streams()));
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, static_cast<int>(t.max_metadata_bytes()));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(t.keepalive_seconds()) * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             static_cast<int>(t.min_client_ping_seconds()) * 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  // gRPC's default (120 s) lets a connection that never finishes its TLS
  // handshake or HTTP/2 preface hold a descriptor for two minutes.
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             static_cast<int>(std::min<uint32_t>(t.handshake_timeout_seconds(), 3600)) * 1000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             static_cast<int>(std::min<uint32_t>(t.max_connection_idle_seconds(), 2000000)) * 1000);
  if (t.max_connection_age_seconds() > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(std::min<uint32_t>(t.max_connection_age_seconds(), 2000000)) * 1000);
    // Streams in flight when the age is reached get time to finish.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, 3600 * 1000);
  }
}

// TLS from files that are watched: a rotated certificate, key or client CA
// (a Kubernetes secret update) takes effect within tls.reload_seconds,
// without a restart (gRPC's FileWatcherCertificateProvider). The files are
// read once here so that a missing one is a configuration error.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const unetrpp::v1::ServerConfig& config) {
  const auto& tls = config.tls();
  if (tls.cert_file().empty()) {
    if (!IsLoopback(config.listen_address()))
      spdlog::warn("serving plaintext on {}: anyone on the network can read the images (configure tls)",
                   config.listen_address());
    return grpc::InsecureServerCredentials();
  }
  for (const auto& [path, field] : {std::pair<std::string, const char*>{tls.cert_file(), "tls.cert_file"},
                                    {tls.key_file(), "tls.key_file"},
                                    {tls.client_ca_file(), "tls.client_ca_file"}})
    if (!path.empty())
      if (auto read = ReadFile(path, field); !read.ok()) return read.status();
  const unsigned reload = tls.reload_seconds() > 0 ? tls.reload_seconds() : 60;
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider =
      tls.client_ca_file().empty() ? std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
                                         tls.key_file(), tls.cert_file(), reload)
                                   : std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
                                         tls.key_file(), tls.cert_file(), tls.client_ca_file(), reload);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (tls.client_ca_file().empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

// What start-up says about who can reach the server and what they get
// without a credential (docs/server.md: the development start and
// production).
void WarnAboutExposure(const unetrpp::v1::ServerConfig& config) {
  if (config.auth().allow_anonymous())
    spdlog::warn(
        "auth: anonymous callers may segment and read models (auth.allow_anonymous): anyone who can reach {} can; "
        "configure credentials (auth.api_keys_file, auth.jwt, auth.certificate_identities) for anything but "
        "development",
        config.listen_address());
  if (config.metrics_address() != "off" && !IsLoopback(config.metrics_address()))
    spdlog::info(
        "metrics on {}: plain HTTP without credentials (counts, model names, no patient data); restrict "
        "who reaches it (a NetworkPolicy)",
        config.metrics_address());
}

}  // namespace

class SegmentationService final : public unetrpp::v1::Segmentation::CallbackService {
 public:
  explicit SegmentationService(ServiceState* state) : state_(state) {}

  grpc::ServerBidiReactor<unetrpp::v1::SegmentRequest, unetrpp::v1::SegmentResponse>* Segment(
      grpc::CallbackServerContext* context) override {
    return SegmentCall::Start(context, state_);
  }

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context, const unetrpp::v1::ListModelsRequest*,
                                       unetrpp::v1::ListModelsResponse* response) override {
    auto* reactor = context->DefaultReactor();
    const auto principal = AuthorizeModelsRead(*context);
    if (principal.ok()) {
      for (const std::string& name : state_->models().names())
        if (auto d = state_->models().Describe(name); d.ok()) FillModelInfo(*d, response->add_models());
      response->set_default_model(state_->config()->default_model());
    }
    Finish(*context, reactor, "ListModels", principal.ok() ? principal->name : "-", principal.status());
    return reactor;
  }

  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context, const unetrpp::v1::GetModelRequest* request,
                                     unetrpp::v1::ModelInfo* response) override {
    auto* reactor = context->DefaultReactor();
    const auto principal = AuthorizeModelsRead(*context);
    if (!principal.ok()) {
      Finish(*context, reactor, "GetModel", "-", principal.status());
      return reactor;
    }
    const std::string name = request->name().empty() ? state_->config()->default_model() : request->name();
    auto d = state_->models().Describe(name);
    if (d.ok()) FillModelInfo(*d, response);
    Finish(*context, reactor, "GetModel", principal->name, d.status());
    return reactor;
  }

  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context,
                                      const unetrpp::v1::LoadModelRequest* request,
                                      unetrpp::v1::ModelInfo* response) override {
    const LoadRequest load{request->name(), request->version(), request->keep_previous(), request->drain_then_load()};
    nlohmann::json audit{{"model", load.name},
                         {"version", load.version},
                         {"keep_previous", load.keep_previous},
                         {"drain_then_load", load.drain_then_load}};
    return Manage(context, "LoadModel", std::move(audit), response,
                  [this, load] { return state_->models().LoadVersion(load); });
  }

  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context,
                                        const unetrpp::v1::UnloadModelRequest* request,
                                        unetrpp::v1::ModelInfo* response) override {
    const std::string name = request->name(), version = request->version();
    nlohmann::json audit{{"model", name}, {"version", version}};
    return Manage(context, "UnloadModel", std::move(audit), response, [this, name, version] {
      if (version.empty()) return absl::InvalidArgumentError("UnloadModel: name the version to unload");
      return state_->models().UnloadVersion(name, version);
    });
  }

 private:
  absl::StatusOr<Principal> AuthorizeModelsRead(const grpc::CallbackServerContext& context) {
    auto principal = state_->auth().Authenticate(context);
    if (!principal.ok()) return principal.status();
    if (auto s = Authenticator::Authorize(*principal, kPermModelsRead); !s.ok()) return s;
    return principal;
  }
  // Model management: the caller must hold credentials with `admin` (an
  // anonymous caller is told to authenticate, whatever allow_anonymous says).
  static absl::Status AuthorizeAdmin(const Principal& principal) {
    if (!principal.authenticated)
      return absl::UnauthenticatedError("model management needs credentials with the admin role");
    return Authenticator::Authorize(principal, kPermAdmin);
  }
  // Runs a LoadModel / UnloadModel `work` on the registry's management
  // thread (loading takes seconds), then answers with the model's state and
  // audits the call with `audit`'s fields, the version it left serving and
  // the error.
  grpc::ServerUnaryReactor* Manage(grpc::CallbackServerContext* context, const char* method, nlohmann::json audit,
                                   unetrpp::v1::ModelInfo* response, std::function<absl::Status()> work) {
    auto* reactor = context->DefaultReactor();
    const auto principal = state_->auth().Authenticate(*context);
    const std::string who = principal.ok() ? principal->name : "-";
    if (const absl::Status s = principal.ok() ? AuthorizeAdmin(*principal) : principal.status(); !s.ok()) {
      Finish(*context, reactor, method, who, s, std::move(audit));
      return reactor;
    }
    state_->models().RunManagement([=, audit = std::move(audit)]() mutable {
      const absl::Status status = work();
      if (auto d = state_->models().Describe(audit["model"].get<std::string>()); d.ok()) {
        FillModelInfo(*d, response);
        audit["serving"] = d->default_version;
      }
      if (!status.ok()) audit["error"] = std::string(status.message());
      Finish(*context, reactor, method, who, status, std::move(audit));
    });
    return reactor;
  }
  // Audits the call (with `extra` fields) and ends it with `status`.
  void Finish(const grpc::CallbackServerContext& context, grpc::ServerUnaryReactor* reactor, const char* method,
              const std::string& principal, const absl::Status& status, nlohmann::json extra = nullptr) {
    nlohmann::json audit{{"time", absl::FormatTime(absl::RFC3339_full, absl::Now(), absl::UTCTimeZone())},
                         {"principal", principal},
                         {"peer", ClientAddress(context.peer())},
                         {"method", method}};
    if (extra.is_object()) audit.update(extra);
    audit["status"] = absl::StatusCodeToString(status.code());
    state_->Audit(audit.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    reactor->Finish(proto::ToGrpcStatus(status));
  }

  ServiceState* state_;
};

namespace {

// Checks each models[].job_device that is a GPU and sets the default of
// limits.max_device_bytes_in_flight from the device's memory.
// Installs the process's tracer when tracing.endpoint (or OpenTelemetry's
// endpoint variable, tracing/server_tracing.h) is set.
absl::Status StartTracing(const unetrpp::v1::Tracing& config) {
  auto options = tracing::OptionsFromConfig(config);
  if (!options.ok()) return options.status();
  if (options->endpoint.empty()) return absl::OkStatus();
  auto tracer = tracing::Tracer::Create(*options);
  if (!tracer.ok()) return tracer.status();
  tracing::InstallTracer(std::move(*tracer));
  spdlog::info("tracing: OTLP to {}, sampling ratio {}, queue {} spans", options->endpoint, options->sampling_ratio,
               options->queue_size);
  return absl::OkStatus();
}

absl::Status SetUpJobDevices(const Metrics& metrics, unetrpp::v1::ServerConfig& config) {
  std::set<std::string> job_devices;
  for (const auto& m : config.models()) {
    if (m.job_device() == "cpu") continue;
    // Refused at start, not at the first request: every job would fail there.
    if (!model::DeviceAvailable(*model::ParseDevice(m.job_device())))
      return absl::FailedPreconditionError(absl::StrCat("config: models \"", m.name(), "\": job_device \"",
                                                        m.job_device(),
                                                        "\": no such CUDA device in this build or machine"));
    job_devices.insert(m.job_device());
  }
  auto* limits = config.mutable_limits();
  for (const std::string& d : job_devices) {
    if (limits->max_device_bytes_in_flight() == 0) {
      const std::optional<int64_t> total = metrics.DeviceTotalBytes(d);
      if (!total)
        return absl::FailedPreconditionError(
            absl::StrCat("config: limits.max_device_bytes_in_flight is needed: the memory of job device ", d,
                         " cannot be read (NVML)"));
      limits->set_max_device_bytes_in_flight(static_cast<uint64_t>(*total / 2));
    }
    spdlog::info("jobs on {}: at most {} MiB of their estimated memory there at once", d,
                 limits->max_device_bytes_in_flight() >> 20);
  }
  return absl::OkStatus();
}

}  // namespace

std::string Server::ModelHealthName(const std::string& model) { return absl::StrCat(kServiceName, "/", model); }

absl::StatusOr<std::unique_ptr<Server>> Server::Create(unetrpp::v1::ServerConfig config) {
  ApplyDefaults(config);
  if (auto s = ValidateConfig(config); !s.ok()) return s;
  const unetrpp::v1::ServerConfig configured = config;
  auto metrics = std::make_unique<Metrics>();
  const model::CpuFeatures& cpu = model::DetectCpuFeatures();
  spdlog::info("{}", model::DescribeCpuFeatures(cpu));
  // Operators check this against the container's memory limit.
  spdlog::info("admission: at most {} MiB of request working memory at once (memory available: {} MiB)",
               config.limits().max_bytes_in_flight() >> 20, AvailableMemoryBytes() >> 20);
  metrics->CpuInfo(cpu.isa, cpu.bf16_convolutions, cpu.amx);
  std::vector<std::string> devices;
  for (const auto& m : config.models()) devices.insert(devices.end(), m.devices().begin(), m.devices().end());
  for (const auto& m : config.models())
    if (m.job_device() != "cpu") devices.push_back(m.job_device());
  if (metrics->WatchDevices(devices)) spdlog::info("device memory metrics from NVML");
  if (auto s = SetUpJobDevices(*metrics, config); !s.ok()) return s;
  if (config.metrics_address() != "off")
    if (auto s = metrics->Expose(config.metrics_address()); !s.ok()) return s;
  auto auth = Authenticator::Create(config.auth());
  if (!auth.ok()) return auth.status();
  std::shared_ptr<spdlog::logger> audit;
  if (!config.auth().audit_log_file().empty()) {
    try {
      // Not registered with spdlog: one per server, shipped on its own.
      audit = std::make_shared<spdlog::logger>(
          "audit", std::make_shared<spdlog::sinks::basic_file_sink_mt>(config.auth().audit_log_file()));
      audit->set_pattern("%v");
      audit->flush_on(spdlog::level::info);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("config: auth.audit_log_file: ", e.what()));
    }
  }
  auto cpu_pool = std::make_unique<ThreadPool>(static_cast<int>(config.cpu_threads()));
  auto models = ModelRegistry::Load(config, metrics.get(), cpu_pool.get());
  if (!models.ok()) return models.status();
  if (config.model_repository_poll_seconds() > 0)
    (*models)->StartPolling(absl::Seconds(config.model_repository_poll_seconds()));

  std::unique_ptr<Server> server(new Server());
  server->configured_ = configured;
  server->state_ = std::make_unique<ServiceState>(config, std::move(cpu_pool), std::move(*models), std::move(metrics),
                                                  std::move(*auth), std::move(audit));
  server->service_ = std::make_unique<SegmentationService>(server->state_.get());

  auto credentials = Credentials(config);
  if (!credentials.ok()) return credentials.status();

  server->health_ = std::make_unique<HealthService>(config.limits().max_health_watches_per_peer());
  WarnAboutExposure(config);
  // Reflection tells anyone who can connect what the server offers: off
  // unless configured (development).
  if (config.enable_reflection()) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  if (auto s = StartTracing(config.tracing()); !s.ok()) return s;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen_address(), *credentials, &server->port_);
  builder.RegisterService(server->service_.get());
  builder.RegisterService(server->health_.get());
  builder.SetMaxReceiveMessageSize(proto::kMaxMessageBytes);
  builder.SetMaxSendMessageSize(proto::kMaxMessageBytes);
  ApplyTransportLimits(config.transport(), builder);
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen_address()));
  server->SetServing(true);
  if (server->metrics_port() > 0)
    spdlog::info("unetrpp-serve listening on port {}, metrics on port {}", server->port_, server->metrics_port());
  else
    spdlog::info("unetrpp-serve listening on port {}, metrics off", server->port_);
  return server;
}

Server::~Server() {
  if (health_) health_->Shutdown();
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }
  server_.reset();
  state_.reset();
}

int Server::metrics_port() const { return state_->metrics().port(); }

Metrics::BatchTotals Server::Batches(const std::string& model) const { return state_->metrics().Batches(model); }

void Server::SetServing(bool serving) {
  state_->metrics().SetServing(serving);
  health_->SetServing("", serving);
  health_->SetServing(kServiceName, serving);
  for (const std::string& name : state_->models().names()) health_->SetServing(ModelHealthName(name), serving);
}

void Server::Drain(absl::Duration grace) {
  spdlog::info(
      "draining: {} request(s) in flight ({} of them ended for their client, work still running), grace "
      "{:.0f} s",
      state_->in_flight(), state_->orphaned(), absl::ToDoubleSeconds(grace));
  SetServing(false);
  state_->StartDraining();
  const bool idle = state_->WaitIdle(absl::Now() + grace);
  if (!idle) spdlog::warn("grace period over with {} request(s) in flight; cancelling them", state_->in_flight());
  health_->Shutdown();  // watches end now rather than hold the shutdown
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

void Server::Wait() { server_->Wait(); }

absl::StatusOr<std::vector<std::string>> Server::Reload(absl::StatusOr<unetrpp::v1::ServerConfig> read) {
  if (read.ok()) {
    ApplyDefaults(*read);
    if (auto s = ValidateConfig(*read); !s.ok()) read = absl::StatusOr<unetrpp::v1::ServerConfig>(s);
  }
  if (!read.ok()) {
    spdlog::error("configuration reload refused, the configuration in force is unchanged: {}",
                  std::string(read.status().message()));
    state_->metrics().ConfigReload(false, 0);
    return read.status();
  }
  ReloadPlan plan = PlanReload(configured_, *read);
  unetrpp::v1::ServerConfig running = LiveConfig(*state_->config(), *read);
  if (running.logging().level() != state_->config()->logging().level())
    spdlog::set_level(spdlog::level::from_str(running.logging().level()));
  state_->SetConfig(running);
  // The registry, not this: the task may run while the server is destroyed
  // (the registry's Shutdown runs what is queued).
  ModelRegistry* models = &state_->models();
  models->RunManagement([models, running] { models->Reconfigure(running); });
  configured_ = std::move(plan.configured);
  spdlog::info("configuration reloaded: {}", plan.live.empty() ? "no live change" : absl::StrJoin(plan.live, ", "));
  if (!plan.restart_only.empty())
    spdlog::warn("configuration reload: these changes take effect only after a restart: {}",
                 absl::StrJoin(plan.restart_only, ", "));
  state_->metrics().ConfigReload(true, static_cast<int64_t>(plan.restart_only.size()));
  return plan.restart_only;
}

void Server::WaitManagement() {
  absl::Notification done;
  state_->models().RunManagement([&done] { done.Notify(); });
  done.WaitForNotification();
}

}  // namespace upp::server
