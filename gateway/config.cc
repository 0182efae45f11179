#include "gateway/config.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gateway/peers.h"
#include "proto/api.h"
#include "proto/text_config.h"
#include "tracing/server_tracing.h"

namespace upp::gateway {
namespace {

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("config: ", field, ": ", what));
}

// DICOM AE titles: 1 to 16 characters of the default repertoire, no
// backslash or control characters (PS3.5 6.2, VR AE).
bool ValidAeTitle(const std::string& ae) {
  if (ae.empty() || ae.size() > 16) return false;
  return std::all_of(ae.begin(), ae.end(), [](char c) { return c >= 0x20 && c < 0x7f && c != '\\'; });
}

bool Positive(double seconds) { return std::isfinite(seconds) && seconds > 0 && seconds <= 7 * 24 * 3600; }

absl::Status ValidateTls(const unetrpp::v1::DicomTls& t, const std::string& f, bool ca_required) {
  if (t.cert_file().empty() && t.key_file().empty() && t.ca_file().empty()) return absl::OkStatus();
  if (t.cert_file().empty() || t.key_file().empty()) return Bad(f, "cert_file and key_file are both needed for TLS");
  if (ca_required && t.ca_file().empty()) return Bad(f + ".ca_file", "needed to verify the destination");
  return absl::OkStatus();
}

absl::Status ValidatePeers(const unetrpp::v1::DicomListener& l) {
  if (!l.allowed_peers().empty() && !l.allowed_calling_aes().empty())
    return Bad("listener.allowed_peers", "not with allowed_calling_aes (list each AE title here with its networks)");
  for (int i = 0; i < l.allowed_peers_size(); ++i) {
    const auto& peer = l.allowed_peers(i);
    const std::string f = absl::StrCat("listener.allowed_peers[", i, "]");
    if (!ValidAeTitle(peer.ae_title())) return Bad(f + ".ae_title", "not an AE title");
    if (peer.cidrs().empty()) return Bad(f + ".cidrs", "at least one network is needed");
    for (int j = 0; j < peer.cidrs_size(); ++j)
      if (!ParseCidr(peer.cidrs(j)))
        return Bad(absl::StrCat(f, ".cidrs[", j, "]"), "not an address or network (\"10.0.0.0/8\", host bits clear)");
  }
  return absl::OkStatus();
}

absl::Status ValidateListener(const unetrpp::v1::DicomListener& l) {
  if (!ValidAeTitle(l.ae_title())) return Bad("listener.ae_title", "1 to 16 printable characters, no backslash");
  if (l.port() > 65535) return Bad("listener.port", "must be at most 65535");
  for (int i = 0; i < l.allowed_calling_aes_size(); ++i)
    if (!ValidAeTitle(l.allowed_calling_aes(i)))
      return Bad(absl::StrCat("listener.allowed_calling_aes[", i, "]"), "not an AE title");
  if (auto s = ValidatePeers(l); !s.ok()) return s;
  if (l.max_associations() > 256) return Bad("listener.max_associations", "at most 256");
  if (l.max_pdu_bytes() < 4096 || l.max_pdu_bytes() > (1u << 24))
    return Bad("listener.max_pdu_bytes", "must be in [4096, 16777216]");
  if (!Positive(l.association_idle_seconds())) return Bad("listener.association_idle_seconds", "must be > 0");
  if (!Positive(l.max_association_seconds())) return Bad("listener.max_association_seconds", "must be > 0");
  // DCMTK counts a data set's bytes in 32 bits while it arrives.
  if (l.max_instance_bytes() > (uint64_t{1} << 31))
    return Bad("listener.max_instance_bytes", "at most 2147483648 (2 GiB)");
  if (l.min_free_spool_bytes() > (uint64_t{1} << 50))
    return Bad("listener.min_free_spool_bytes", "at most 2^50 (1 PiB)");
  return ValidateTls(l.tls(), "listener.tls", false);
}

// http:// only to this machine: a token or patient data in clear text
// elsewhere is a configuration mistake.
absl::Status ValidateDicomWebDestination(const unetrpp::v1::DicomWebDestination& d, const std::string& f) {
  const std::string& url = d.url();
  const bool https = url.rfind("https://", 0) == 0;
  const bool http = url.rfind("http://", 0) == 0;
  if (!https && !http) return Bad(f + ".url", "must start with https:// (or http:// to loopback)");
  if (http) {
    const std::string rest = url.substr(7);
    bool loopback = false;
    for (const char* host : {"127.0.0.1", "localhost", "[::1]"}) {
      const std::string h(host);
      if (rest.compare(0, h.size(), h) == 0 &&
          (rest.size() == h.size() || rest[h.size()] == ':' || rest[h.size()] == '/'))
        loopback = true;
    }
    if (!loopback) return Bad(f + ".url", "http:// only to 127.0.0.1, localhost or [::1]; use https://");
  }
  if (url.find_first_of(" \t\r\n") != std::string::npos) return Bad(f + ".url", "has white space");
  if (!d.token_file().empty() && !d.basic_auth_file().empty()) return Bad(f, "token_file or basic_auth_file, not both");
  if (!Positive(d.timeout_seconds())) return Bad(f + ".timeout_seconds", "must be > 0");
  return absl::OkStatus();
}

absl::Status ValidateDicomWeb(const unetrpp::v1::DicomWebListener& w) {
  if (w.port() == 0) {  // off
    for (int i = 0; i < w.sources_size(); ++i)
      if (w.sources(i).poll().interval_seconds() != 0)
        return Bad(absl::StrCat("dicomweb.sources[", i, "].poll"), "needs dicomweb.port (pulls run in the receiver)");
    return absl::OkStatus();
  }
  if (w.port() > 65535) return Bad("dicomweb.port", "must be at most 65535");
  if (w.max_connections() > 256) return Bad("dicomweb.max_connections", "at most 256");
  if (w.max_request_bytes() > (uint64_t{1} << 40)) return Bad("dicomweb.max_request_bytes", "at most 2^40 (1 TiB)");
  if (!Positive(w.max_request_seconds())) return Bad("dicomweb.max_request_seconds", "must be > 0");
  if (!Positive(w.idle_seconds())) return Bad("dicomweb.idle_seconds", "must be > 0");
  if (w.max_queued_connections() > 1024) return Bad("dicomweb.max_queued_connections", "at most 1024");
  std::set<std::string> names;
  for (int i = 0; i < w.sources_size(); ++i) {
    const auto& source = w.sources(i);
    const std::string f = absl::StrCat("dicomweb.sources[", i, "]");
    const std::string& name = source.name();
    if (name.empty() || name.size() > 64 ||
        name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
            std::string::npos)
      return Bad(f + ".name", "1 to 64 of A-Z a-z 0-9 . _ -");
    // The name is also a file's under <spool_dir>/polled/: "." or ".."
    // would be the directory itself or the spool (and dots only, unreadable).
    if (name.find_first_not_of('.') == std::string::npos) return Bad(f + ".name", "not only dots");
    if (!names.insert(name).second) return Bad(f + ".name", "names another source too");
    if (auto s = ValidateDicomWebDestination(source.service(), f + ".service"); !s.ok()) return s;
    const auto& poll = source.poll();
    if (poll.interval_seconds() == 0) continue;
    if (!(poll.interval_seconds() >= 1)) return Bad(f + ".poll.interval_seconds", "0 (no poll) or at least 1");
    if (poll.max_series() > 10000) return Bad(f + ".poll.max_series", "at most 10000");
    if (!(poll.settle_seconds() > 0 && poll.settle_seconds() <= 86400))
      return Bad(f + ".poll.settle_seconds", "> 0 and at most 86400");
    if (poll.max_attempts() < 1 || poll.max_attempts() > 100) return Bad(f + ".poll.max_attempts", "1 to 100");
    // Matching keys only, in the characters a URL query carries as they are
    // (a value with others is written %-encoded); the gateway owns the
    // keys that shape the answer.
    if (poll.query().size() > 2048 ||
        poll.query().find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789=&*?._-,%+:") !=
            std::string::npos)
      return Bad(f + ".poll.query", "at most 2048 of A-Z a-z 0-9 = & * ? . _ - , % + :");
    for (absl::string_view key : absl::StrSplit(poll.query(), '&', absl::SkipEmpty())) {
      key = key.substr(0, key.find('='));
      if (absl::EqualsIgnoreCase(key, "includefield") || absl::EqualsIgnoreCase(key, "limit") ||
          absl::EqualsIgnoreCase(key, "offset") || absl::EqualsIgnoreCase(key, "fuzzymatching"))
        return Bad(f + ".poll.query", absl::StrCat(key, " is set by the gateway"));
    }
  }
  const auto& a = w.auth();
  if (a.api_keys_file().empty() && a.jwt().jwks_file().empty() && !a.allow_anonymous())
    return Bad("dicomweb.auth",
               "needs api_keys_file or jwt.jwks_file (callers send \"Authorization: Bearer <token>\"), or "
               "allow_anonymous: true");
  if (!a.certificate_identities().empty())
    return Bad("dicomweb.auth.certificate_identities", "not supported here (use tls.ca_file for client certificates)");
  return ValidateTls(w.tls(), "dicomweb.tls", false);
}

absl::Status ValidateRule(const unetrpp::v1::RoutingRule& r, const std::string& f) {
  if (r.name().empty() || r.name().size() > 64) return Bad(f + ".name", "needs 1 to 64 characters");
  for (int i = 0; i < r.orientations_size(); ++i) {
    const std::string& o = r.orientations(i);
    if (o != "axial" && o != "coronal" && o != "sagittal" && o != "oblique")
      return Bad(absl::StrCat(f, ".orientations[", i, "]"), "must be axial, coronal, sagittal or oblique");
  }
  // The labels are the model's to check (the service names unknown ones).
  if (!r.mode().empty() && !proto::SpeedModeFromName(r.mode())) return Bad(f + ".mode", "full, fast or fastest");
  for (int i = 0; i < r.labels_size(); ++i)
    if (r.labels(i).empty()) return Bad(absl::StrCat(f, ".labels[", i, "]"), "a label's name, not empty");
  return absl::OkStatus();
}

}  // namespace

void ApplyDefaults(unetrpp::v1::GatewayConfig& c) {
  auto* l = c.mutable_listener();
  if (l->ae_title().empty()) l->set_ae_title("UNETRPP");
  if (l->port() == 0) l->set_port(11112);
  if (l->max_associations() == 0) l->set_max_associations(8);
  if (l->max_pdu_bytes() == 0) l->set_max_pdu_bytes(65536);
  if (l->association_idle_seconds() == 0) l->set_association_idle_seconds(60);
  if (l->max_instance_bytes() == 0) l->set_max_instance_bytes(uint64_t{1} << 30);
  if (l->min_free_spool_bytes() == 0) l->set_min_free_spool_bytes(uint64_t{1} << 30);
  if (l->max_association_seconds() == 0) l->set_max_association_seconds(3600);
  if (c.quiet_period_seconds() == 0) c.set_quiet_period_seconds(10);
  if (c.service().deadline_seconds() == 0) c.mutable_service()->set_deadline_seconds(1800);
  auto* d = c.mutable_destination();
  if (d->calling_ae_title().empty()) d->set_calling_ae_title(l->ae_title());
  if (d->timeout_seconds() == 0) d->set_timeout_seconds(60);
  if (c.unmatched().empty()) c.set_unmatched("drop");
  if (c.max_attempts() == 0) c.set_max_attempts(5);
  if (c.retry_backoff_seconds() == 0) c.set_retry_backoff_seconds(10);
  if (c.metrics_address().empty()) c.set_metrics_address("0.0.0.0:9465");
  if (c.drain_grace_seconds() == 0) c.set_drain_grace_seconds(120);
  if (c.max_series_bytes() == 0) c.set_max_series_bytes(uint64_t{2} << 30);
  if (c.max_series_instances() == 0) c.set_max_series_instances(4096);  // the service's max_input_files
  auto* kept = c.mutable_retention();
  if (kept->max_age_seconds() == 0) kept->set_max_age_seconds(7 * 24 * 3600);
  if (kept->max_bytes() == 0) kept->set_max_bytes(uint64_t{10} << 30);
  if (c.max_interrupted_attempts() == 0) c.set_max_interrupted_attempts(2);
  if (c.tracing().service_name().empty()) c.mutable_tracing()->set_service_name("unetrpp-dicom-gateway");
  auto* w = c.mutable_dicomweb();
  if (w->address().empty()) w->set_address("0.0.0.0");
  if (w->max_request_bytes() == 0) w->set_max_request_bytes(uint64_t{2} << 30);
  if (w->max_request_seconds() == 0) w->set_max_request_seconds(3600);
  if (w->idle_seconds() == 0) w->set_idle_seconds(60);
  if (w->max_connections() == 0) w->set_max_connections(8);
  if (w->max_queued_connections() == 0) w->set_max_queued_connections(16);
  for (auto& source : *w->mutable_sources()) {
    if (source.service().timeout_seconds() == 0) source.mutable_service()->set_timeout_seconds(60);
    if (source.poll().max_series() == 0) source.mutable_poll()->set_max_series(100);
    if (source.poll().settle_seconds() == 0)
      source.mutable_poll()->set_settle_seconds(std::min(c.quiet_period_seconds(), 86400.0));
    if (source.poll().max_attempts() == 0) source.mutable_poll()->set_max_attempts(5);
  }
  if (d->dicomweb().timeout_seconds() == 0) d->mutable_dicomweb()->set_timeout_seconds(d->timeout_seconds());
  auto* r = c.mutable_report();
  if (r->manufacturer().empty()) r->set_manufacturer("unetrpp-serve");
  if (r->series_description().empty()) r->set_series_description("UNETR++ segmentation");
  for (auto& rule : *c.mutable_rules()) {
    if (rule.min_instances() == 0) rule.set_min_instances(1);
    if (!rule.send_seg() && !rule.send_report()) {
      rule.set_send_seg(true);
      rule.set_send_report(true);
    }
  }
}

absl::Status Validate(const unetrpp::v1::GatewayConfig& c) {
  if (auto s = ValidateListener(c.listener()); !s.ok()) return s;
  if (c.spool_dir().empty()) return Bad("spool_dir", "required");
  if (!Positive(c.quiet_period_seconds())) return Bad("quiet_period_seconds", "must be > 0");
  if (c.service().target().empty()) return Bad("service.target", "required");
  if (!Positive(c.service().deadline_seconds())) return Bad("service.deadline_seconds", "must be > 0");
  if (!c.service().tls_cert_file().empty() && c.service().tls_ca_file().empty())
    return Bad("service.tls_cert_file", "needs tls_ca_file (mTLS is TLS)");
  if (auto s = ValidateDicomWeb(c.dicomweb()); !s.ok()) return s;
  const auto& d = c.destination();
  if (!Positive(d.timeout_seconds())) return Bad("destination.timeout_seconds", "must be > 0");
  if (!d.dicomweb().url().empty()) {
    if (auto s = ValidateDicomWebDestination(d.dicomweb(), "destination.dicomweb"); !s.ok()) return s;
  } else {
    if (d.host().empty()) return Bad("destination.host", "required (or destination.dicomweb.url)");
    if (d.port() == 0 || d.port() > 65535) return Bad("destination.port", "must be in [1, 65535]");
    if (!ValidAeTitle(d.ae_title())) return Bad("destination.ae_title", "1 to 16 printable characters, no backslash");
    if (!ValidAeTitle(d.calling_ae_title())) return Bad("destination.calling_ae_title", "not an AE title");
    if (auto s = ValidateTls(d.tls(), "destination.tls", true); !s.ok()) return s;
  }
  if (c.unmatched() != "drop" && c.unmatched() != "keep") return Bad("unmatched", "must be drop or keep");
  if (c.max_attempts() > 100) return Bad("max_attempts", "at most 100");
  if (!Positive(c.retry_backoff_seconds())) return Bad("retry_backoff_seconds", "must be > 0");
  if (!Positive(c.drain_grace_seconds())) return Bad("drain_grace_seconds", "must be > 0");
  if (!(std::isfinite(c.retention().max_age_seconds()) && c.retention().max_age_seconds() > 0))
    return Bad("retention.max_age_seconds", "must be > 0");
  if (c.max_interrupted_attempts() > 100) return Bad("max_interrupted_attempts", "at most 100");
  // The server's rules for the same block (one place for them).
  if (auto o = tracing::OptionsFromConfig(c.tracing()); !o.ok())
    return Bad("tracing", std::string(o.status().message()));
  if (c.rules().empty()) return Bad("rules", "at least one rule is needed (a gateway that routes nothing)");
  for (int i = 0; i < c.rules_size(); ++i)
    if (auto s = ValidateRule(c.rules(i), absl::StrCat("rules[", i, "]")); !s.ok()) return s;
  return absl::OkStatus();
}

absl::Status CheckFilesReadable(const unetrpp::v1::GatewayConfig& c) {
  const std::vector<std::pair<std::string, std::string>> files = {
      {"listener.tls.cert_file", c.listener().tls().cert_file()},
      {"listener.tls.key_file", c.listener().tls().key_file()},
      {"listener.tls.ca_file", c.listener().tls().ca_file()},
      {"service.tls_ca_file", c.service().tls_ca_file()},
      {"service.tls_cert_file", c.service().tls_cert_file()},
      {"service.tls_key_file", c.service().tls_key_file()},
      {"service.token_file", c.service().token_file()},
      {"destination.tls.cert_file", c.destination().tls().cert_file()},
      {"destination.tls.key_file", c.destination().tls().key_file()},
      {"destination.tls.ca_file", c.destination().tls().ca_file()},
      {"dicomweb.tls.cert_file", c.dicomweb().tls().cert_file()},
      {"dicomweb.tls.key_file", c.dicomweb().tls().key_file()},
      {"dicomweb.tls.ca_file", c.dicomweb().tls().ca_file()},
      {"dicomweb.auth.api_keys_file", c.dicomweb().auth().api_keys_file()},
      {"dicomweb.auth.jwt.jwks_file", c.dicomweb().auth().jwt().jwks_file()},
      {"destination.dicomweb.ca_file", c.destination().dicomweb().ca_file()},
      {"destination.dicomweb.token_file", c.destination().dicomweb().token_file()},
      {"destination.dicomweb.basic_auth_file", c.destination().dicomweb().basic_auth_file()}};
  std::vector<std::pair<std::string, std::string>> all = files;
  for (int i = 0; i < c.dicomweb().sources_size(); ++i) {
    const auto& service = c.dicomweb().sources(i).service();
    const std::string f = absl::StrCat("dicomweb.sources[", i, "].service.");
    all.push_back({f + "ca_file", service.ca_file()});
    all.push_back({f + "token_file", service.token_file()});
    all.push_back({f + "basic_auth_file", service.basic_auth_file()});
  }
  std::vector<std::string> unreadable;
  for (const auto& [field, path] : all)
    if (!path.empty() && access(path.c_str(), R_OK) != 0) unreadable.push_back(absl::StrCat(field, " \"", path, "\""));
  if (unreadable.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("cannot read ", absl::StrJoin(unreadable, ", ")));
}

absl::StatusOr<unetrpp::v1::GatewayConfig> LoadConfig(const std::string& path) {
  unetrpp::v1::GatewayConfig config;
  if (auto s = proto::LoadTextConfigFile(path, config); !s.ok()) return s;
  ApplyDefaults(config);
  if (auto s = Validate(config); !s.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  return config;
}

}  // namespace upp::gateway
