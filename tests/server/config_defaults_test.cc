// Every default is written once, in ApplyDefaults (server/config.cc). The
// example configuration (deploy/server.textproto) and the defaults named in
// docs/server.md repeat them for readers; these tests fail when either says
// something else, so that the copies cannot drift from the code.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/config.h"

namespace upp::server {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using google::protobuf::TextFormat;

// The fields the checks below skip, and why: defaults that depend on the
// machine (documented in words, never as a number), and what
// deploy/server.textproto sets on purpose to something else (an example).
enum class Skip { kMachineDependent, kExampleChoice };
const std::map<std::string, std::pair<Skip, std::string>>& Skipped() {
  static const auto* kFields = new std::map<std::string, std::pair<Skip, std::string>>{
      {"limits.max_bytes_in_flight",
       {Skip::kMachineDependent, "half the memory the process may use (cgroup limit, else physical)"}},
      {"limits.max_input_bytes", {Skip::kMachineDependent, "min(2 GiB, max_bytes_in_flight / 4)"}},
      {"limits.max_device_bytes_in_flight", {Skip::kMachineDependent, "half the GPU's memory, read through NVML"}},
      {"models.precision",
       {Skip::kMachineDependent, "model::DefaultPrecision: bf16 on a CPU with AMX or AMD Zen 5+, else fp32"}},
      {"limits.per_caller.max_bytes", {Skip::kMachineDependent, "half of max_bytes_in_flight"}},
      {"models.name", {Skip::kExampleChoice, "the model served: there is no default model"}},
      {"models.weights", {Skip::kExampleChoice, "the model served: there is no default model"}},
      {"models.speed.fastest_model", {Skip::kExampleChoice, "the example's coarse companion: there is no default"}},
      {"tls.cert_file", {Skip::kExampleChoice, "the example serves TLS; without a tls block, plaintext"}},
      {"listen_address", {Skip::kExampleChoice, "the example serves other machines (TLS); the default: loopback"}},
      {"metrics_address", {Skip::kExampleChoice, "the example is scraped from elsewhere; the default: loopback"}},
      {"tls.key_file", {Skip::kExampleChoice, "the example serves TLS; without a tls block, plaintext"}},
  };
  return *kFields;
}

bool MachineDependent(const std::string& path) {
  const auto it = Skipped().find(path);
  return it != Skipped().end() && it->second.first == Skip::kMachineDependent;
}

std::string ReadSource(const std::string& relative) {
  std::ifstream in(std::string(UPP_SOURCE_DIR) + "/" + relative);
  EXPECT_TRUE(in.good()) << relative;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// ApplyDefaults on a configuration with one model (model entries have
// defaults too) and nothing else.
unetrpp::v1::ServerConfig Defaults() {
  unetrpp::v1::ServerConfig c;
  auto* m = c.add_models();
  m->set_name("m");
  m->set_weights("w");
  ApplyDefaults(c);
  return c;
}

// Every scalar field of ServerConfig by its dotted path ("limits.per_caller.
// max_bytes"; a repeated message counts as one: "models.devices"), the
// deprecated ones left out (they have no defaults: they move).
void CollectPaths(const Descriptor* d, const std::string& prefix, std::map<std::string, const FieldDescriptor*>* out) {
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->options().deprecated()) continue;
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE)
      CollectPaths(f->message_type(), prefix + f->name() + ".", out);
    else
      (*out)[prefix + f->name()] = f;
  }
}

const std::map<std::string, const FieldDescriptor*>& AllPaths() {
  static const auto* paths = [] {
    auto* p = new std::map<std::string, const FieldDescriptor*>;
    CollectPaths(unetrpp::v1::ServerConfig::descriptor(), "", p);
    return p;
  }();
  return *paths;
}

// A name as the docs write it: a full path, or a field name that only one
// path ends with. Empty, with `why`, otherwise.
std::string Resolve(const std::string& name, std::string* why) {
  if (AllPaths().count(name)) return name;
  std::vector<std::string> matches;
  for (const auto& [path, field] : AllPaths())
    if (path == name || absl::EndsWith(path, "." + name)) matches.push_back(path);
  if (matches.size() == 1) return matches[0];
  *why = matches.empty() ? "no such field in ServerConfig"
                         : absl::StrCat("ambiguous (", absl::StrJoin(matches, ", "), "): write the full path");
  return "";
}

// The value ApplyDefaults gives the field at `path`, as text (strings
// unquoted; repeated fields joined with ",").
std::string DefaultOf(const std::string& path) {
  static const unetrpp::v1::ServerConfig defaults = Defaults();
  const Message* m = &defaults;
  const std::vector<std::string> parts = absl::StrSplit(path, '.');
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    const FieldDescriptor* f = m->GetDescriptor()->FindFieldByName(parts[i]);
    m = f->is_repeated() ? &m->GetReflection()->GetRepeatedMessage(*m, f, 0) : &m->GetReflection()->GetMessage(*m, f);
  }
  const FieldDescriptor* f = m->GetDescriptor()->FindFieldByName(parts.back());
  const auto text = [&](int index) {
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING)
      return index < 0 ? m->GetReflection()->GetString(*m, f) : m->GetReflection()->GetRepeatedString(*m, f, index);
    std::string out;
    TextFormat::PrintFieldValueToString(*m, f, index, &out);
    return out;
  };
  if (!f->is_repeated()) return text(-1);
  std::vector<std::string> values;
  for (int i = 0; i < m->GetReflection()->FieldSize(*m, f); ++i) values.push_back(text(i));
  return absl::StrJoin(values, ",");
}

// A number as the docs write it: 64, 0.25, 2^30, 10^6, "16 KiB", "60 s".
std::optional<double> DocumentedNumber(std::string text) {
  double scale = 1;
  for (const auto& [unit, factor] :
       {std::pair<const char*, double>{" s", 1}, {" KiB", 1024.0}, {" MiB", 1048576.0}, {" GiB", 1073741824.0}})
    if (absl::EndsWith(text, unit)) {
      text.resize(text.size() - std::string(unit).size());
      scale = factor;
    }
  double base = 0, exponent = 1;
  const std::vector<std::string> parts = absl::StrSplit(text, '^');
  if (parts.empty() || parts.size() > 2 || !absl::SimpleAtod(parts[0], &base)) return std::nullopt;
  if (parts.size() == 2 && !absl::SimpleAtod(parts[1], &exponent)) return std::nullopt;
  return std::pow(base, exponent) * scale;
}

// Whether `documented` (a number in the docs' forms, or a literal, quoted or
// not) says `actual`.
bool Same(const std::string& documented, const std::string& actual) {
  double want = 0;
  if (const auto number = DocumentedNumber(documented); number && absl::SimpleAtod(actual, &want))
    return *number == want;
  std::string literal = documented;
  if (literal.size() >= 2 && literal.front() == '"' && literal.back() == '"')
    literal = literal.substr(1, literal.size() - 2);
  return literal == actual;
}

// Compares every field that `tree`'s text writes (zeros too: proto3 keeps no
// presence, the parser's locations do) with the defaults.
void CompareWritten(const Message& written, const ::google::protobuf::TextFormat::ParseInfoTree& tree,
                    const std::string& prefix, int* compared) {
  const Descriptor* d = written.GetDescriptor();
  const Reflection* r = written.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    const std::string path = prefix + f->name();
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      const int n = f->is_repeated() ? r->FieldSize(written, f) : 1;
      for (int k = 0; k < n; ++k) {
        const auto* nested = tree.GetTreeForNested(f, f->is_repeated() ? k : -1);
        if (nested == nullptr) continue;  // not written
        CompareWritten(f->is_repeated() ? r->GetRepeatedMessage(written, f, k) : r->GetMessage(written, f), *nested,
                       path + ".", compared);
      }
      continue;
    }
    const int line = tree.GetLocation(f, f->is_repeated() ? 0 : -1).line;
    if (line < 0) continue;  // not written
    if (Skipped().count(path)) continue;
    ASSERT_FALSE(f->options().deprecated()) << path << ": the example must not use a deprecated field";
    std::vector<std::string> values;
    for (int k = 0; k < (f->is_repeated() ? r->FieldSize(written, f) : 1); ++k) {
      std::string v;
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING)
        v = f->is_repeated() ? r->GetRepeatedString(written, f, k) : r->GetString(written, f);
      else
        TextFormat::PrintFieldValueToString(written, f, f->is_repeated() ? k : -1, &v);
      values.push_back(v);
    }
    const std::string value = absl::StrJoin(values, ",");
    EXPECT_EQ(value, DefaultOf(path)) << "deploy/server.textproto line " << line + 1 << ": " << path
                                      << " differs from ApplyDefaults (server/config.cc)";
    ++*compared;
  }
}

TEST(ConfigDefaultsTest, ExampleConfigurationWritesTheDefaults) {
  const std::string text = ReadSource("deploy/server.textproto");
  unetrpp::v1::ServerConfig written;
  TextFormat::ParseInfoTree tree;
  TextFormat::Parser parser;
  parser.WriteLocationsTo(&tree);
  ASSERT_TRUE(parser.ParseFromString(text, &written));
  int compared = 0;
  CompareWritten(written, tree, "", &compared);
  EXPECT_GE(compared, 35) << "the example shows every field with its default";

  // Defaults its comments name: "# max_input_bytes: default min(...)".
  static const std::regex kCommented(R"(([a-z_][a-z0-9_.]*): default ([^\s,;)]+))");
  int commented = 0;
  for (const absl::string_view line : absl::StrSplit(text, '\n')) {
    const size_t hash = line.find('#');
    if (hash == absl::string_view::npos) continue;
    const std::string comment(line.substr(hash));
    for (std::sregex_iterator it(comment.begin(), comment.end(), kCommented), end; it != end; ++it, ++commented) {
      std::string why;
      const std::string path = Resolve((*it)[1], &why);
      ASSERT_FALSE(path.empty()) << "deploy/server.textproto: " << (*it)[0] << ": " << why;
      if (MachineDependent(path)) continue;
      EXPECT_TRUE(Same((*it)[2], DefaultOf(path)))
          << "deploy/server.textproto: " << (*it)[0] << ", but ApplyDefaults gives " << DefaultOf(path);
    }
  }
  EXPECT_GE(commented, 2);  // max_bytes_in_flight, max_input_bytes
}

TEST(ConfigDefaultsTest, DocumentedDefaultsAreApplyDefaults) {
  const std::string doc = ReadSource("docs/server.md");
  // Prose anywhere: "`tls.reload_seconds`, default 60", "`clock_skew_seconds`
  // (default 60)", "`roles_claim` (default `roles`".
  static const std::regex kProse(
      R"(`([a-z_][a-z0-9_.]*)`(?:, default |,? \(default )(`[^`]*`|[0-9]+(?:\.[0-9]+)?(?:\^[0-9]+)?(?: (?:s|KiB|MiB|GiB)\b)?))");
  // The limits table's rows: "`limits.max_voxels`, 2^30".
  static const std::regex kTable(
      R"(`([a-z_][a-z0-9_.]*)`, ([0-9]+(?:\.[0-9]+)?(?:\^[0-9]+)?(?: (?:s|KiB|MiB|GiB)\b)?))");
  std::set<std::string> documented;
  for (const absl::string_view line_view : absl::StrSplit(doc, '\n')) {
    const std::string line(line_view);
    std::vector<std::pair<std::string, std::string>> found;
    for (std::sregex_iterator it(line.begin(), line.end(), kProse), end; it != end; ++it)
      found.emplace_back((*it)[1], (*it)[2]);
    if (absl::StartsWith(line, "|"))
      for (std::sregex_iterator it(line.begin(), line.end(), kTable), end; it != end; ++it)
        found.emplace_back((*it)[1], (*it)[2]);
    for (auto [name, value] : found) {
      std::string why;
      const std::string path = Resolve(name, &why);
      ASSERT_FALSE(path.empty()) << "docs/server.md: `" << name << "`: " << why << "\n  in: " << line;
      if (value.size() >= 2 && value.front() == '`') value = value.substr(1, value.size() - 2);
      EXPECT_FALSE(MachineDependent(path)) << path << " depends on the machine: describe it, give no number";
      EXPECT_TRUE(Same(value, DefaultOf(path))) << "docs/server.md: `" << name << "` documented as " << value
                                                << ", ApplyDefaults gives " << DefaultOf(path) << "\n  in: " << line;
      documented.insert(path);
    }
  }
  // The limits table covers every limit, timeout and transport setting.
  for (const auto& [path, field] : AllPaths()) {
    if (!(absl::StartsWith(path, "limits.") || absl::StartsWith(path, "timeouts.") ||
          absl::StartsWith(path, "transport.")) ||
        MachineDependent(path))
      continue;
    EXPECT_TRUE(documented.count(path)) << "docs/server.md documents no default for " << path;
  }
  EXPECT_GE(documented.size(), 20u);
}

// The schema's comments (proto/unetrpp/v1/config.proto) name defaults too: a
// field's own line ("uint32 max_batch_size = 1;  // ...; default 4") or the
// last line of the comment above it.
TEST(ConfigDefaultsTest, SchemaCommentsSayTheDefaults) {
  // Each message type's path in ServerConfig ("unetrpp.v1.PerCaller" ->
  // "limits.per_caller.").
  std::map<std::string, std::string> prefixes;
  const std::function<void(const Descriptor*, const std::string&)> walk = [&](const Descriptor* d,
                                                                              const std::string& prefix) {
    if (!prefixes.emplace(d->name(), prefix).second) return;
    for (int i = 0; i < d->field_count(); ++i)
      if (d->field(i)->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE)
        walk(d->field(i)->message_type(), prefix + d->field(i)->name() + ".");
  };
  walk(unetrpp::v1::ServerConfig::descriptor(), "");
  static const std::regex kMessage(R"(^message (\w+) \{)");
  static const std::regex kField(R"(^\s*(?:repeated\s+)?[\w.]+\s+(\w+)\s*=\s*\d+[^;]*;\s*(?://(.*))?$)");
  static const std::regex kDefault(R"([Dd]efault:? ("[^"]*"|[0-9]+(?:\.[0-9]+)?(?:\^[0-9]+)?))");
  std::string prefix, last_comment;
  int checked = 0;
  for (const absl::string_view line_view : absl::StrSplit(ReadSource("proto/unetrpp/v1/config.proto"), '\n')) {
    const std::string line(line_view);
    std::smatch m;
    if (std::regex_search(line, m, kMessage)) {
      prefix = prefixes.count(m[1]) ? prefixes[m[1]] : "?";
    } else if (std::regex_match(line, m, kField)) {
      const std::string path = prefix + m[1].str();
      std::smatch d;
      const std::string trailing = m[2];
      if ((std::regex_search(trailing, d, kDefault) || std::regex_search(last_comment, d, kDefault)) &&
          AllPaths().count(path) && !MachineDependent(path)) {
        EXPECT_TRUE(Same(d[1], DefaultOf(path))) << "config.proto: " << path << " commented as default " << d[1]
                                                 << ", ApplyDefaults gives " << DefaultOf(path);
        ++checked;
      }
    }
    const size_t slashes = line.find("//");
    last_comment = slashes != std::string::npos && line.find_first_not_of(' ') == slashes ? line.substr(slashes) : "";
  }
  EXPECT_GE(checked, 25);
}

// Old field names are for configurations written before the move; what
// ships uses the new ones.
TEST(ConfigDefaultsTest, ShippedConfigurationsUseNoDeprecatedField) {
  for (const char* file :
       {"deploy/server.textproto", "deploy/docker/server.textproto", "deploy/k8s/base/server.textproto",
        "deploy/k8s/overlays/gpu/server.textproto", "deploy/k8s/overlays/models-volume/server.textproto"}) {
    auto c = ParseConfig(ReadSource(file));
    ASSERT_TRUE(c.ok()) << file << ": " << c.status();
    EXPECT_EQ(absl::StrJoin(MigrateDeprecatedFields(*c), "; "), "") << file;
  }
}

}  // namespace
}  // namespace upp::server
