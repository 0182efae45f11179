#include "server/config.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "model/cpu_features.h"
#include "model/device.h"
#include "proto/text_config.h"
#include "server/model_repository.h"
#include "server/speed_mode.h"
#include "server/system_memory.h"

namespace upp::server {
namespace {

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("config: ", field, ": ", what));
}

bool ValidDevice(const std::string& d) { return model::ParseDevice(d).has_value(); }

}  // namespace

bool IsLoopback(const std::string& address) {
  return absl::StartsWith(address, "127.") || absl::StartsWith(address, "localhost:") ||
         absl::StartsWith(address, "[::1]:") || absl::StartsWith(address, "unix:");
}

bool HasCredentialSource(const unetrpp::v1::Auth& auth) {
  return !auth.api_keys_file().empty() || !auth.jwt().jwks_file().empty() || auth.certificate_identities_size() > 0;
}

std::optional<int> CudaIndex(const std::string& device) {
  const auto spec = model::ParseDevice(device);
  if (!spec || !spec->cuda) return std::nullopt;
  return spec->index;
}

absl::StatusOr<unetrpp::v1::ServerConfig> ParseConfig(const std::string& text) {
  unetrpp::v1::ServerConfig config;
  if (auto s = proto::ParseTextConfig(text, config); !s.ok()) return s;
  return config;
}

absl::StatusOr<unetrpp::v1::ServerConfig> LoadConfigFile(const std::string& path) {
  unetrpp::v1::ServerConfig config;
  if (auto s = proto::LoadTextConfigFile(path, config); !s.ok()) return s;
  const std::filesystem::path folder = std::filesystem::path(path).parent_path();
  const auto resolve = [&](std::string* file) {
    if (!file->empty() && std::filesystem::path(*file).is_relative()) *file = (folder / *file).lexically_normal();
  };
  for (auto& m : *config.mutable_models()) {
    resolve(m.mutable_weights());
    resolve(m.mutable_plan_file());
    resolve(m.mutable_repository());
    for (auto& v : *m.mutable_versions()) {
      resolve(v.mutable_weights());
      resolve(v.mutable_plan_file());
      resolve(v.mutable_card_file());
    }
  }
  if (config.has_tls()) {
    resolve(config.mutable_tls()->mutable_cert_file());
    resolve(config.mutable_tls()->mutable_key_file());
    resolve(config.mutable_tls()->mutable_client_ca_file());
  }
  if (config.has_auth()) {
    resolve(config.mutable_auth()->mutable_api_keys_file());
    resolve(config.mutable_auth()->mutable_audit_log_file());
    if (config.auth().has_jwt()) resolve(config.mutable_auth()->mutable_jwt()->mutable_jwks_file());
  }
  return config;
}

namespace {

// The renamed fields, old path to new path. Moved through reflection, so a
// rename is one row here and the deprecated accessors are never called.
constexpr std::pair<const char*, const char*> kRenamed[] = {
    {"timeouts.priority_aging_seconds", "batching.priority_aging_seconds"},
    {"limits.max_requests_per_peer", "limits.per_caller.max_requests_per_peer"},
    {"auth.max_requests_per_principal", "limits.per_caller.max_requests_per_principal"},
    {"auth.max_bytes_per_principal", "limits.per_caller.max_bytes"},
    {"auth.max_windows_per_principal", "limits.per_caller.max_windows"},
};

// The message holding the field `path` names, and the field; nullptr when a
// message on the way is absent and `create` is false.
std::pair<google::protobuf::Message*, const google::protobuf::FieldDescriptor*> FieldAt(google::protobuf::Message* m,
                                                                                        const std::string& path,
                                                                                        bool create) {
  const std::vector<std::string> parts = absl::StrSplit(path, '.');
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    const auto* f = m->GetDescriptor()->FindFieldByName(parts[i]);
    if (!create && !m->GetReflection()->HasField(*m, f)) return {nullptr, nullptr};
    m = m->GetReflection()->MutableMessage(m, f);
  }
  return {m, m->GetDescriptor()->FindFieldByName(parts.back())};
}

// Copies a scalar field's value (the renamed fields are numbers of one type).
void CopyScalar(const google::protobuf::Message& from, const google::protobuf::FieldDescriptor* from_field,
                google::protobuf::Message* to, const google::protobuf::FieldDescriptor* to_field) {
  const auto* r = from.GetReflection();
  const auto* w = to->GetReflection();
  switch (from_field->cpp_type()) {
    case google::protobuf::FieldDescriptor::CPPTYPE_DOUBLE:
      return w->SetDouble(to, to_field, r->GetDouble(from, from_field));
    case google::protobuf::FieldDescriptor::CPPTYPE_UINT32:
      return w->SetUInt32(to, to_field, r->GetUInt32(from, from_field));
    default: return w->SetUInt64(to, to_field, r->GetUInt64(from, from_field));
  }
}

}  // namespace

std::vector<std::string> MigrateDeprecatedFields(unetrpp::v1::ServerConfig& c) {
  std::vector<std::string> warnings;
  for (const auto& [old_name, new_name] : kRenamed) {
    const auto [from, from_field] = FieldAt(&c, old_name, false);
    if (!from || !from->GetReflection()->HasField(*from, from_field)) continue;  // 0: not set
    const auto [to, to_field] = FieldAt(&c, new_name, true);
    // The new name is the one an operator edits last: it wins.
    if (to->GetReflection()->HasField(*to, to_field)) {
      warnings.push_back(absl::StrCat("config: ", old_name, " is deprecated and ignored: ", new_name,
                                      " is set too and wins (remove ", old_name, ")"));
    } else {
      CopyScalar(*from, from_field, to, to_field);
      warnings.push_back(absl::StrCat("config: ", old_name, " is deprecated; write ", new_name, " instead"));
    }
    from->GetReflection()->ClearField(from, from_field);
  }
  return warnings;
}

void ApplyDefaults(unetrpp::v1::ServerConfig& c) {
  // Logged once: the fields are cleared, so a second ApplyDefaults (the
  // command line's, then the server's) finds nothing to move.
  for (const auto& w : MigrateDeprecatedFields(c)) spdlog::warn("{}", w);
  // Loopback only unless the configuration says where: a server reachable
  // from the network is a deliberate choice (with TLS and credentials).
  if (c.listen_address().empty()) c.set_listen_address("127.0.0.1:50051");
  if (c.metrics_address().empty()) c.set_metrics_address("127.0.0.1:9464");
  if (c.cpu_threads() == 0) c.set_cpu_threads(2);
  if (c.drain_grace_seconds() == 0) c.set_drain_grace_seconds(30);
  auto* l = c.mutable_limits();
  // Half of what the container may use: the rest holds the models, their
  // workspaces, gRPC buffers and the allocator's slack.
  if (l->max_bytes_in_flight() == 0) l->set_max_bytes_in_flight(static_cast<uint64_t>(AvailableMemoryBytes() / 2));
  if (l->max_input_bytes() == 0)
    l->set_max_input_bytes(std::min<uint64_t>(uint64_t{2} << 30, l->max_bytes_in_flight() / 4));
  if (l->max_voxels() == 0) l->set_max_voxels(uint64_t{1} << 30);
  if (l->max_queued_windows() == 0) l->set_max_queued_windows(100000);
  if (l->max_concurrent_requests() == 0) l->set_max_concurrent_requests(64);
  if (l->max_input_chunks() == 0) l->set_max_input_chunks(1000000);
  if (l->max_input_files() == 0) l->set_max_input_files(4096);
  if (l->max_windows_per_request() == 0) l->set_max_windows_per_request(50000);
  auto* pc = l->mutable_per_caller();
  if (pc->max_requests_per_peer() == 0) pc->set_max_requests_per_peer(16);
  // A fair share: one caller may hold at most half of the server's memory
  // and window queue (issue: three 64-byte requests locked everyone out).
  if (pc->max_bytes() == 0) pc->set_max_bytes(l->max_bytes_in_flight() / 2);
  if (pc->max_windows() == 0) pc->set_max_windows(l->max_queued_windows() / 2);
  if (l->max_spacing_mm() == 0) l->set_max_spacing_mm(50);
  if (l->max_resampling_factor() == 0) l->set_max_resampling_factor(64);
  if (l->max_pending_streams() == 0) l->set_max_pending_streams(64);
  if (l->max_health_watches_per_peer() == 0) l->set_max_health_watches_per_peer(16);
  if (l->decode_threads() == 0) l->set_decode_threads(1);
  auto* t = c.mutable_timeouts();
  if (t->header_seconds() == 0) t->set_header_seconds(10);
  if (t->upload_idle_seconds() == 0) t->set_upload_idle_seconds(30);
  if (t->send_stall_seconds() == 0) t->set_send_stall_seconds(60);
  if (t->max_request_seconds() == 0) t->set_max_request_seconds(3600);
  auto* tr = c.mutable_transport();
  if (tr->max_concurrent_streams() == 0) tr->set_max_concurrent_streams(16);
  if (tr->keepalive_seconds() == 0) tr->set_keepalive_seconds(60);
  if (tr->min_client_ping_seconds() == 0) tr->set_min_client_ping_seconds(10);
  if (tr->max_connection_idle_seconds() == 0) tr->set_max_connection_idle_seconds(600);
  if (tr->max_metadata_bytes() == 0) tr->set_max_metadata_bytes(16384);
  if (tr->handshake_timeout_seconds() == 0) tr->set_handshake_timeout_seconds(10);
  if (c.nonfinite_voxels().empty()) c.set_nonfinite_voxels("replace");
  auto* b = c.mutable_batching();
  if (b->max_batch_size() == 0) b->set_max_batch_size(4);
  if (b->max_queue_delay_us() == 0) b->set_max_queue_delay_us(2000);
  if (b->priority_aging_seconds() == 0) b->set_priority_aging_seconds(30);
  if (c.logging().level().empty()) c.mutable_logging()->set_level("info");
  // Tracing stays off without an endpoint; these are what it runs with.
  auto* tracing = c.mutable_tracing();
  if (!tracing->has_sampling_ratio()) tracing->set_sampling_ratio(1);
  if (tracing->queue_size() == 0) tracing->set_queue_size(2048);
  if (tracing->max_export_batch_size() == 0) tracing->set_max_export_batch_size(512);
  if (tracing->schedule_delay_seconds() == 0) tracing->set_schedule_delay_seconds(5);
  if (tracing->export_timeout_seconds() == 0) tracing->set_export_timeout_seconds(10);
  if (tracing->service_name().empty()) tracing->set_service_name("unetrpp-serve");
  // Reload periods and JWT checks: filled here so that this function is the
  // one place that says every default (tests/server/config_defaults_test.cc
  // holds deploy/server.textproto and docs/server.md to it). An empty tls or
  // auth block stays harmless: TLS needs cert_file, JWTs need jwks_file.
  if (c.tls().reload_seconds() == 0) c.mutable_tls()->set_reload_seconds(60);
  auto* a = c.mutable_auth();
  if (a->api_keys_reload_seconds() == 0) a->set_api_keys_reload_seconds(60);
  if (a->on_unreadable_key_file().empty()) a->set_on_unreadable_key_file("refuse");
  // Anonymous callers only where nobody else can reach the server and no
  // credential could be asked for (a development start); elsewhere the
  // configuration says so itself (docs/server.md).
  if (!a->has_allow_anonymous())
    a->set_allow_anonymous(!a->required() && !HasCredentialSource(*a) && IsLoopback(c.listen_address()));
  auto* j = a->mutable_jwt();
  if (j->reload_seconds() == 0) j->set_reload_seconds(60);
  if (j->clock_skew_seconds() == 0) j->set_clock_skew_seconds(60);
  if (j->roles_claim().empty()) j->set_roles_claim("roles");
  for (auto& m : *c.mutable_models()) {
    if (m.devices().empty()) m.add_devices("cpu");
    if (m.instances_per_device() == 0) m.set_instances_per_device(1);
    if (m.precision().empty())
      m.set_precision(model::DefaultPrecision({m.devices().begin(), m.devices().end()}, model::DetectCpuFeatures()));
    if (m.modality().empty()) m.set_modality("CT");
    if (m.version().empty()) m.set_version("1");
    if (m.job_device().empty()) m.set_job_device("cpu");
    if (m.job_device() == "cuda") m.set_job_device("cuda:0");  // one name per device for its memory budget
    auto* speed = m.mutable_speed();
    if (speed->default_mode().empty()) speed->set_default_mode("full");
    if (speed->fast_step() == 0) speed->set_fast_step(kDefaultFastStep);
    if (speed->subset_margin_mm() == 0) speed->set_subset_margin_mm(inference::kDefaultSubsetMarginMm);
  }
  if (c.default_model().empty() && c.models_size() > 0) c.set_default_model(c.models(0).name());
}

absl::Status ValidateConfig(const unetrpp::v1::ServerConfig& c) {
  if (c.models().empty()) return Bad("models", "at least one model is needed");
  std::set<std::string> names;
  for (int i = 0; i < c.models_size(); ++i) {
    const auto& m = c.models(i);
    const std::string f = absl::StrCat("models[", i, "]");
    if (m.name().empty() || m.name().size() > 64) return Bad(f + ".name", "needs 1 to 64 characters");
    for (char ch : m.name())
      if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.'))
        return Bad(f + ".name", "letters, digits, '-', '_' and '.' only");
    if (!names.insert(m.name()).second) return Bad(f + ".name", "\"" + m.name() + "\" is used twice");
    if (auto s = ValidateVersionSource(m, f); !s.ok()) return s;
    for (int d = 0; d < m.devices_size(); ++d)
      if (!ValidDevice(m.devices(d)))
        return Bad(absl::StrCat(f, ".devices[", d, "]"), "\"" + m.devices(d) + "\" is not cpu, cuda or cuda:N");
    if (m.instances_per_device() > 16) return Bad(f + ".instances_per_device", "at most 16");
    if (m.precision() != "fp32" && m.precision() != "bf16") return Bad(f + ".precision", "fp32 or bf16");
    // Refused rather than silently run in fp32: an operator who asked for bf16
    // is told at start, with the alternative, and the speed they get is the
    // speed they configured (docs/server.md).
    for (const auto& d : m.devices())
      if (auto s = model::CheckPrecisionSupported(d, m.precision()); !s.ok()) return Bad(f + ".precision", s.message());
    if (m.modality() != "CT" && m.modality() != "MR") return Bad(f + ".modality", "CT or MR");
    if (!ValidDevice(m.job_device()))
      return Bad(f + ".job_device", "\"" + m.job_device() + "\" is not cpu, cuda or cuda:N");
  }
  if (!names.count(c.default_model()))
    return Bad("default_model", "\"" + c.default_model() + "\" is not a configured model");
  const std::vector<std::string> served(names.begin(), names.end());
  for (const auto& m : c.models())
    if (auto s = ValidateSpeedModes(m, served); !s.ok()) return s;
  if (c.batching().max_batch_size() > 256) return Bad("batching.max_batch_size", "at most 256");
  if (c.batching().max_queue_delay_us() > 10'000'000) return Bad("batching.max_queue_delay_us", "at most 10 s");
  if (c.cpu_threads() > 256) return Bad("cpu_threads", "at most 256");
  if (c.limits().decode_threads() > 256) return Bad("limits.decode_threads", "at most 256");
  if (c.drain_grace_seconds() < 0 || c.drain_grace_seconds() > 3600) return Bad("drain_grace_seconds", "0 to 3600");
  if (!(c.model_repository_poll_seconds() >= 0 && c.model_repository_poll_seconds() <= 86400))
    return Bad("model_repository_poll_seconds", "0 to 86400");
  if (!(c.limits().max_spacing_mm() > 0)) return Bad("limits.max_spacing_mm", "above 0");
  if (!(c.limits().max_resampling_factor() >= 1)) return Bad("limits.max_resampling_factor", "at least 1");
  if (c.tls().cert_file().empty() != c.tls().key_file().empty())
    return Bad("tls", "cert_file and key_file go together");
  if (!c.tls().client_ca_file().empty() && c.tls().cert_file().empty())
    return Bad("tls.client_ca_file", "needs cert_file and key_file");
  if (c.auth().certificate_identities_size() > 0 && c.tls().client_ca_file().empty())
    return Bad("auth.certificate_identities", "needs tls.client_ca_file (client certificates)");
  if (c.auth().on_unreadable_key_file() != "refuse" && c.auth().on_unreadable_key_file() != "keep")
    return Bad("auth.on_unreadable_key_file", "refuse or keep");
  if (c.auth().required() && c.auth().allow_anonymous())
    return Bad("auth.allow_anonymous", "contradicts auth.required (leave one of them out)");
  // Refused rather than served to nobody, or silently to everybody.
  if (!c.auth().allow_anonymous() && !HasCredentialSource(c.auth()))
    return Bad("auth", absl::StrCat("no credential source (api_keys_file, jwt.jwks_file, certificate_identities) "
                                    "and anonymous callers are not allowed, so nobody could call: configure one, "
                                    "or set auth { allow_anonymous: true } (--allow-anonymous) to let anyone who "
                                    "reaches ",
                                    c.listen_address(), " segment"));
  if (c.auth().jwt().clock_skew_seconds() < 0 || c.auth().jwt().clock_skew_seconds() > 600)
    return Bad("auth.jwt.clock_skew_seconds", "0 to 600");
  static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "off"};
  if (!kLevels.count(c.logging().level())) return Bad("logging.level", "trace, debug, info, warn, error or off");
  if (!(c.tracing().sampling_ratio() >= 0 && c.tracing().sampling_ratio() <= 1))
    return Bad("tracing.sampling_ratio", "0 to 1");
  if (c.tracing().schedule_delay_seconds() < 0 || c.tracing().export_timeout_seconds() < 0)
    return Bad("tracing", "schedule_delay_seconds and export_timeout_seconds are not negative");
  if (c.limits().max_input_bytes() > (uint64_t{1} << 40)) return Bad("limits.max_input_bytes", "at most 1 TiB");
  if (c.nonfinite_voxels() != "replace" && c.nonfinite_voxels() != "refuse")
    return Bad("nonfinite_voxels", "replace or refuse");
  const auto& tr = c.transport();
  if (tr.max_concurrent_streams() > 1000) return Bad("transport.max_concurrent_streams", "at most 1000");
  if (tr.max_metadata_bytes() > (1u << 20)) return Bad("transport.max_metadata_bytes", "at most 1 MiB");
  const auto& t = c.timeouts();
  for (const auto& [name, v] : {std::pair<const char*, double>{"header_seconds", t.header_seconds()},
                                {"upload_idle_seconds", t.upload_idle_seconds()},
                                {"send_stall_seconds", t.send_stall_seconds()},
                                {"max_request_seconds", t.max_request_seconds()}})
    if (!(v > 0 && v <= 7 * 86400)) return Bad(absl::StrCat("timeouts.", name), "must be in (0, 604800]");
  const double aging = c.batching().priority_aging_seconds();
  if (!(aging > 0 && aging <= 7 * 86400)) return Bad("batching.priority_aging_seconds", "must be in (0, 604800]");
  return absl::OkStatus();
}

}  // namespace upp::server
