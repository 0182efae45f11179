// A small configuration file (API keys, a JWKS) parsed into a T and re-read
// while the server runs: every `period` the next caller reads the file again
// and, when its bytes changed and they parse, swaps in the new value. A file
// that changed but does not parse (half-written, broken) keeps the previous
// value, with a warning. This is how a rotated Kubernetes secret takes
// effect without a restart. A file that cannot be read any more (deleted,
// its permissions changed, a secret unmounted) is warned about at every
// check and, as `Unreadable` says, either keeps the value read last or
// leaves none (Get returns nullptr) until it can be read again: a key file
// removed to revoke every key must not go on granting them unnoticed.
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

// What a file that cannot be read any more leaves behind.
enum class Unreadable { kKeep, kRefuse };

template <typename T>
class ReloadingFile {
 public:
  using Parser = std::function<absl::StatusOr<T>(const std::string& text)>;

  // Reads and parses the file once: NOT_FOUND when it cannot be read, else
  // the parser's error; `what` names the file in messages (a config field).
  static absl::StatusOr<std::unique_ptr<ReloadingFile>> Create(std::string path, int64_t max_bytes,
                                                               absl::Duration period, Parser parse, std::string what,
                                                               Unreadable unreadable = Unreadable::kKeep) {
    auto text = imageio::ReadWholeFile(path, max_bytes);
    if (!text.ok()) return absl::NotFoundError(absl::StrCat("config: ", what, " cannot be read"));
    auto value = parse(*text);
    if (!value.ok()) return value.status();
    std::unique_ptr<ReloadingFile> f(
        new ReloadingFile(std::move(path), max_bytes, period, std::move(parse), std::move(what), unreadable));
    absl::MutexLock lock(&f->mu_);
    f->value_ = std::make_shared<const T>(*std::move(value));
    f->text_ = *std::move(text);
    f->next_check_ = absl::Now() + period;
    return f;
  }

  // The current value, re-read from the file first when `now` is past the
  // next check; nullptr while an unreadable file refuses.
  std::shared_ptr<const T> Get(absl::Time now) const {
    absl::MutexLock lock(&mu_);
    if (now < next_check_) return value_;
    next_check_ = now + period_;
    auto text = imageio::ReadWholeFile(path_, max_bytes_);
    if (!text.ok()) return UnreadableLocked();
    if (*text == text_) return value_;
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
  ReloadingFile(std::string path, int64_t max_bytes, absl::Duration period, Parser parse, std::string what,
                Unreadable unreadable)
      : path_(std::move(path)),
        max_bytes_(max_bytes),
        period_(period),
        parse_(std::move(parse)),
        what_(std::move(what)),
        unreadable_(unreadable) {}

  std::shared_ptr<const T> UnreadableLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (unreadable_ == Unreadable::kKeep) {
      spdlog::warn("auth: {} cannot be read any more; keeping what it held when last read (restore it, or restart)",
                   what_);
      return value_;
    }
    spdlog::warn("auth: {} cannot be read any more; refusing every credential it held until it can be read again",
                 what_);
    value_ = nullptr;
    text_.clear();  // the same bytes, readable again, are taken again
    return value_;
  }

  const std::string path_;
  const int64_t max_bytes_;
  const absl::Duration period_;
  const Parser parse_;
  const std::string what_;
  const Unreadable unreadable_;
  mutable absl::Mutex mu_;
  mutable std::shared_ptr<const T> value_ ABSL_GUARDED_BY(mu_);
  mutable std::string text_ ABSL_GUARDED_BY(mu_);
  mutable absl::Time next_check_ ABSL_GUARDED_BY(mu_);
};

}  // namespace upp::server

#endif  // UPP_SERVER_RELOADING_FILE_H_
