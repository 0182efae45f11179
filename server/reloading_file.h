// A small configuration file (API keys, a JWKS) parsed into a T and re-read
// while the server runs: every `period` the next caller reads the file again
// and, when its bytes changed and they parse, swaps in the new value. A file
// that changed but does not parse (half-written, broken) keeps the previous
// value, with a warning. This is how a rotated Kubernetes secret takes
// effect without a restart.
//
// Threading: Get() from any thread; the value is an immutable snapshot
// swapped under mu_, so a caller keeps what it got for as long as it needs.
#ifndef UPP_SERVER_RELOADING_FILE_H_
#define UPP_SERVER_RELOADING_FILE_H_

#include <spdlog/spdlog.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "imageio/file_util.h"

namespace upp::server {

template <typename T>
class ReloadingFile {
 public:
  using Parser = std::function<absl::StatusOr<T>(const std::string& text)>;

  // Reads and parses the file once: NOT_FOUND when it cannot be read, else
  // the parser's error; `what` names the file in messages (a config field).
  static absl::StatusOr<std::unique_ptr<ReloadingFile>> Create(std::string path, int64_t max_bytes,
                                                               absl::Duration period, Parser parse, std::string what) {
    auto text = imageio::ReadWholeFile(path, max_bytes);
    if (!text.ok()) return absl::NotFoundError(absl::StrCat("config: ", what, " cannot be read"));
    auto value = parse(*text);
    if (!value.ok()) return value.status();
    std::unique_ptr<ReloadingFile> f(
        new ReloadingFile(std::move(path), max_bytes, period, std::move(parse), std::move(what)));
    absl::MutexLock lock(&f->mu_);
    f->value_ = std::make_shared<const T>(*std::move(value));
    f->text_ = *std::move(text);
    f->next_check_ = absl::Now() + period;
    return f;
  }

  // The current value, re-read from the file first when `now` is past the
  // next check.
  std::shared_ptr<const T> Get(absl::Time now) const {
    absl::MutexLock lock(&mu_);
    if (now < next_check_) return value_;
    next_check_ = now + period_;
    auto text = imageio::ReadWholeFile(path_, max_bytes_);
    if (!text.ok() || *text == text_) return value_;
    auto value = parse_(*text);
    if (!value.ok()) {
      spdlog::warn("auth: {} changed but cannot be used ({}); keeping the previous one", what_,
                   std::string(value.status().message()));
      return value_;
    }
    text_ = *std::move(text);
    value_ = std::make_shared<const T>(*std::move(value));
    spdlog::info("auth: {} reloaded", what_);
    return value_;
  }

 private:
  ReloadingFile(std::string path, int64_t max_bytes, absl::Duration period, Parser parse, std::string what)
      : path_(std::move(path)),
        max_bytes_(max_bytes),
        period_(period),
        parse_(std::move(parse)),
        what_(std::move(what)) {}

  const std::string path_;
  const int64_t max_bytes_;
  const absl::Duration period_;
  const Parser parse_;
  const std::string what_;
  mutable absl::Mutex mu_;
  mutable std::shared_ptr<const T> value_ ABSL_GUARDED_BY(mu_);
  mutable std::string text_ ABSL_GUARDED_BY(mu_);
  mutable absl::Time next_check_ ABSL_GUARDED_BY(mu_);
};

}  // namespace upp::server

#endif  // UPP_SERVER_RELOADING_FILE_H_
