#include "imageio/dicom_lengths.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "imageio/checked_math.h"

namespace upp::imageio {
namespace {

constexpr uint32_t kUndefined = 0xFFFFFFFFu;
constexpr int kMaxDepth = 64;
constexpr uint32_t kItem = 0xFFFEE000u, kItemEnd = 0xFFFEE00Du, kSequenceEnd = 0xFFFEE0DDu;
constexpr uint32_t kPixelData = 0x7FE00010u;

struct Syntax {
  bool explicit_vr = true;
  bool little = true;
};

// Raw deflate (PS3.5 A.5) of at most kMaxInflated bytes: into `out`, or,
// without one, only counted (through a small scratch buffer).
constexpr size_t kMaxInflated = size_t{1} << 30;
absl::StatusOr<size_t> Inflate(std::string_view in, std::string* out) {
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return absl::InternalError("zlib inflateInit2 failed");
  std::string scratch;
  std::string& buffer = out != nullptr ? *out : scratch;
  size_t total = 0;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(std::min<size_t>(in.size(), UINT32_MAX));
  int rc = Z_OK;
  while (rc == Z_OK) {
    if (total >= kMaxInflated) {
      inflateEnd(&z);
      return absl::InvalidArgumentError("DICOM: the deflated data set inflates beyond 1 GiB");
    }
    const size_t old = out != nullptr ? buffer.size() : 0;
    const size_t grow = std::min(kMaxInflated - total, out != nullptr ? std::max<size_t>(old, 1 << 16) : 1 << 18);
    buffer.resize(old + grow);
    z.next_out = reinterpret_cast<Bytef*>(buffer.data() + old);
    z.avail_out = static_cast<uInt>(grow);
    rc = inflate(&z, Z_NO_FLUSH);
    buffer.resize(buffer.size() - z.avail_out);
    total += grow - z.avail_out;
    if (rc == Z_BUF_ERROR && z.avail_in == 0) break;  // truncated stream: walk what there is
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END && rc != Z_OK && rc != Z_BUF_ERROR)
    return absl::InvalidArgumentError("DICOM: the deflated data set is corrupt");
  return total;
}

constexpr std::string_view kDeflated = "1.2.840.10008.1.2.1.99";

std::string TagName(uint32_t tag) { return absl::StrFormat("(%04X,%04X)", tag >> 16, tag & 0xFFFF); }

// The tags of one data set, which must ascend (PS3.5 7.1) and be at most
// kMaxDicomElementsPerDataSet. DCMTK inserts each element it reads into a
// sorted list, searching from the end: ascending tags cost one comparison
// each, descending ones the whole list each (quadratic: 80 k elements in
// 640 KB took dcmdump 42 s), and it does not refuse them.
class Order {
 public:
  absl::Status Next(uint32_t tag) {
    if (count_ > 0 && tag <= previous_)
      return absl::InvalidArgumentError(
          absl::StrCat("DICOM: element ", TagName(tag), tag == previous_ ? " repeats " : " follows ",
                       TagName(previous_), " in one data set; tags must ascend (PS3.5 7.1): corrupt or hostile file"));
    if (++count_ > kMaxDicomElementsPerDataSet)
      return absl::InvalidArgumentError(absl::StrCat("DICOM: a data set holds more than ", kMaxDicomElementsPerDataSet,
                                                     " elements (the limit per data set; a CT slice has a few "
                                                     "hundred)"));
    previous_ = tag;
    return absl::OkStatus();
  }

 private:
  uint32_t previous_ = 0;
  int64_t count_ = 0;
};

class Walker {
 public:
  // The work budget: a walk visits each element once per reading, but
  // containers whose defined lengths overlap their parents' make it walk the
  // same bytes again at every level, which grows exponentially with the
  // nesting (a fuzzed 25 KB file took 6 s). Far more visits than a file of
  // this size can hold elements for, across the three encodings tried
  // without a meta header, means such a file.
  Walker(std::string_view b, uint32_t lazy_value_bytes)
      : b_(b), lazy_value_bytes_(lazy_value_bytes), visits_left_(64 * (b.size() / 8 + 64)) {}

  // Elements of a data set in [pos, end); with `until_item_end`, stops after
  // an item delimiter (undefined-length item).
  absl::Status DataSet(size_t& pos, size_t end, Syntax syntax, int depth, bool until_item_end) {
    if (depth > kMaxDepth) return absl::InvalidArgumentError("DICOM sequences nested too deeply");
    Order order;
    while (pos < end) {
      if (end - pos < 8) {
        if (depth == 0 && !until_item_end) return absl::OkStatus();  // padding at the end of the file
        return Short(pos, end);
      }
      if (auto s = Visit(); !s.ok()) return s;
      const uint32_t tag = Tag(pos, syntax);
      if (tag == kItemEnd) {
        pos += 8;
        if (until_item_end) return absl::OkStatus();
        continue;  // tolerated stray delimiter, as DCMTK does
      }
      if (tag == kSequenceEnd)
        return absl::InvalidArgumentError(
            absl::StrFormat("DICOM: a sequence delimiter outside a sequence at byte %d", pos));
      if (auto s = order.Next(tag); !s.ok()) return s;
      if (auto s = CountElement(); !s.ok()) return s;
      std::string vr;
      uint32_t length = 0;
      size_t header = 8;
      // Items and delimiters never have a VR; elements of explicit syntaxes do.
      if (syntax.explicit_vr) {
        vr.assign(b_.data() + pos + 4, 2);
        if (UsesLongLengthField(vr[0], vr[1])) {
          if (end - pos < 12) return Short(pos, end);
          length = U32(pos + 8, syntax.little);
          header = 12;
        } else {
          length = U16(pos + 6, syntax.little);
        }
      } else {
        length = U32(pos + 4, syntax.little);
      }
      pos += header;
      if (length != kUndefined) {
        if (vr == "SQ") {
          // A container: DCMTK allocates its elements, not its length, and
          // tolerates one that overruns the file; walk what is there.
          const size_t sq_end = std::min<size_t>(b_.size(), pos + length);
          size_t p = pos;
          if (auto s = Sequence(p, sq_end, syntax, depth + 1); !s.ok()) return s;
          pos = sq_end;
          continue;
        }
        if (length > b_.size() - pos) return TooLong(tag, length, b_.size() - pos);
        if (!(depth == 0 && tag == kPixelData))
          if (auto s = CountValue(length); !s.ok()) return s;
        pos += length;
        continue;
      }
      // Undefined length: encapsulated pixel data, or a sequence (SQ, UN, or
      // any VR in an implicit syntax).
      if (tag == kPixelData && vr != "SQ") {
        if (auto s = Fragments(pos, end, syntax); !s.ok()) return s;
        continue;
      }
      Syntax inner = syntax;
      if (vr == "UN") inner = {false, true};  // PS3.5 6.2.2: implicit VR little endian inside
      if (auto s = Sequence(pos, end, inner, depth + 1, /*undefined=*/true); !s.ok()) return s;
    }
    if (until_item_end) return absl::InvalidArgumentError("DICOM: an item has no end");
    return absl::OkStatus();
  }

  // The file meta group (explicit VR little endian) after the preamble, if
  // there is one: `pos` moves past it, `ts` receives its transfer syntax
  // (empty without one).
  absl::Status Meta(size_t& pos, std::string& ts) {
    ts.clear();
    if (b_.size() < 132 || std::memcmp(b_.data() + 128, "DICM", 4) != 0) return absl::OkStatus();
    pos = 132;
    Order order;  // the file meta group is a data set of its own
    while (pos + 8 <= b_.size() && U16(pos, true) == 0x0002) {
      const size_t element_start = pos;
      if (auto s = order.Next(Tag(pos, {true, true})); !s.ok()) return s;
      if (auto s = CountElement(); !s.ok()) return s;
      size_t p = pos;
      size_t end_meta = b_.size();
      if (auto s = OneElement(p, end_meta, {true, true}); !s.ok()) return s;
      if (U16(element_start + 2, true) == 0x0010) {
        const size_t header = 8;
        ts.assign(b_.data() + element_start + header, p - element_start - header);
        while (!ts.empty() && (ts.back() == '\0' || ts.back() == ' ')) ts.pop_back();
      }
      pos = p;
    }
    return absl::OkStatus();
  }

  // The elements, items and fragments of the whole file.
  absl::StatusOr<DicomParseCost> File() {
    size_t pos = 0;
    std::string ts;
    if (auto s = Meta(pos, ts); !s.ok()) return s;
    if (ts == kDeflated) {
      // Deflated: the lengths refer to the inflated bytes, so inflate (raw
      // deflate, bounded) and walk those, explicit VR little endian.
      std::string inflated;
      if (auto n = Inflate(b_.substr(pos), &inflated); !n.ok()) return n.status();
      Walker inner(inflated, lazy_value_bytes_);
      inner.cost_ = cost_;  // the meta group's count towards the file's
      size_t p = 0;
      if (auto s = inner.DataSet(p, inflated.size(), {true, true}, 0, false); !s.ok()) return s;
      return inner.cost_;
    }
    Syntax syntax;
    if (ts == "1.2.840.10008.1.2") syntax = {false, true};
    if (ts == "1.2.840.10008.1.2.2") syntax = {true, false};
    if (!ts.empty()) {
      if (auto s = DataSet(pos, b_.size(), syntax, 0, false); !s.ok()) return s;
      return cost_;
    }
    // No meta, or no transfer syntax in it: DCMTK guesses the encoding from
    // the data; refused only if no encoding fits.
    absl::Status first;
    const DicomParseCost meta_cost = cost_;
    for (Syntax candidate : {Syntax{true, true}, Syntax{false, true}, Syntax{true, false}}) {
      size_t p = pos;
      cost_ = meta_cost;
      absl::Status s = DataSet(p, b_.size(), candidate, 0, false);
      if (s.ok()) return cost_;
      if (first.ok()) first = s;
    }
    return first;
  }

 private:
  absl::Status OneElement(size_t& pos, size_t end, Syntax syntax) {
    // A single element (used for the file meta group, whose length is given
    // by (0002,0000) but walked element by element).
    const size_t saved_end = end;
    size_t p = pos;
    if (end - p < 8) return Short(p, end);
    std::string vr(b_.data() + p + 4, 2);
    uint32_t length;
    size_t header = 8;
    if (UsesLongLengthField(vr[0], vr[1])) {
      if (end - p < 12) return Short(p, end);
      length = U32(p + 8, true);
      header = 12;
    } else {
      length = U16(p + 6, true);
    }
    if (length == kUndefined || length > saved_end - p - header)
      return TooLong(Tag(p, syntax), length, end - p - header);
    pos = p + header + length;
    return CountValue(length);
  }

  // Items until the sequence's end (defined: `end`; undefined: a sequence
  // delimiter).
  absl::Status Sequence(size_t& pos, size_t end, Syntax syntax, int depth, bool undefined = false) {
    if (depth > kMaxDepth) return absl::InvalidArgumentError("DICOM sequences nested too deeply");
    while (pos < end) {
      auto item = NextItemHeader(pos, end, syntax);
      if (!item.ok()) return item.status();
      const auto [tag, length] = *item;
      if (tag == kSequenceEnd) {
        if (undefined) return absl::OkStatus();
        continue;
      }
      if (tag != kItem)
        return absl::InvalidArgumentError(
            absl::StrFormat("DICOM: a sequence holds (%04X,%04X) where an item belongs", tag >> 16, tag & 0xFFFF));
      if (auto s = CountElement(); !s.ok()) return s;
      if (length == kUndefined) {
        if (auto s = DataSet(pos, end, syntax, depth + 1, /*until_item_end=*/true); !s.ok()) return s;
      } else {
        const size_t item_end = std::min<size_t>(b_.size(), pos + length);  // a container, as above
        size_t p = pos;
        if (auto s = DataSet(p, item_end, syntax, depth + 1, false); !s.ok()) return s;
        pos = item_end;
      }
    }
    if (undefined) return absl::InvalidArgumentError("DICOM: a sequence has no end");
    return absl::OkStatus();
  }

  // Encapsulated pixel data: items of defined length until a sequence delimiter.
  absl::Status Fragments(size_t& pos, size_t end, Syntax syntax) {
    while (pos < end) {
      auto item = NextItemHeader(pos, end, syntax);
      if (!item.ok()) return item.status();
      const auto [tag, length] = *item;
      if (tag == kSequenceEnd) return absl::OkStatus();
      if (tag != kItem || length == kUndefined)
        return absl::InvalidArgumentError("DICOM: encapsulated pixel data holds something other than fragments");
      if (auto s = CountElement(); !s.ok()) return s;
      if (length > b_.size() - pos) return TooLong(tag, length, b_.size() - pos);
      pos += length;
    }
    return absl::InvalidArgumentError("DICOM: encapsulated pixel data has no end");
  }

  // The tag and length of the item or delimiter at `pos` (8 bytes, in
  // sequences and encapsulated pixel data alike), stepping past them.
  absl::StatusOr<std::pair<uint32_t, uint32_t>> NextItemHeader(size_t& pos, size_t end, Syntax syntax) {
    if (end - pos < 8) return Short(pos, end);
    if (auto s = Visit(); !s.ok()) return s;
    const uint32_t tag = Tag(pos, syntax);
    const uint32_t length = U32(pos + 4, syntax.little);
    pos += 8;
    return std::make_pair(tag, length);
  }

  uint32_t Tag(size_t p, Syntax s) const { return (uint32_t{U16(p, s.little)} << 16) | U16(p + 2, s.little); }
  uint16_t U16(size_t p, bool little) const {
    const auto* u = reinterpret_cast<const uint8_t*>(b_.data() + p);
    return little ? static_cast<uint16_t>(u[0] | (u[1] << 8)) : static_cast<uint16_t>((u[0] << 8) | u[1]);
  }
  uint32_t U32(size_t p, bool little) const {
    const auto* u = reinterpret_cast<const uint8_t*>(b_.data() + p);
    return little ? (uint32_t{u[0]} | (uint32_t{u[1]} << 8) | (uint32_t{u[2]} << 16) | (uint32_t{u[3]} << 24))
                  : ((uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | uint32_t{u[3]});
  }
  static absl::Status TooLong(uint32_t tag, uint64_t claimed, uint64_t left) {
    return absl::InvalidArgumentError(
        absl::StrFormat("DICOM element (%04X,%04X) claims %d bytes but only %d remain: truncated or corrupt file",
                        tag >> 16, tag & 0xFFFF, claimed, left));
  }
  static absl::Status Short(size_t pos, size_t end) {
    return absl::InvalidArgumentError(
        absl::StrFormat("DICOM: %d stray bytes at byte %d: truncated or corrupt file", end - pos, pos));
  }

  // One more element, item or fragment: an object DCMTK will allocate.
  absl::Status CountElement() {
    if (++cost_.elements <= kMaxDicomElements) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("DICOM: the file holds more than ", kMaxDicomElements,
                                                   " elements, items and fragments (the limit per instance; a CT "
                                                   "slice has a few hundred)"));
  }

  // A value of `length` bytes, which DCMTK loads while it parses if it is no
  // longer than the reader's lazy-load length.
  absl::Status CountValue(uint32_t length) {
    if (length > lazy_value_bytes_) return absl::OkStatus();
    cost_.loaded_value_bytes += length;  // at most the file's size: no overflow
    if (cost_.loaded_value_bytes <= kMaxDicomLoadedValueBytes) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "DICOM: the file holds more than ", kMaxDicomLoadedValueBytes,
        " bytes of values short enough to be loaded as it is parsed (the limit per instance; a CT slice's header "
        "holds a few KB)"));
  }

  absl::Status Visit() {
    if (visits_left_-- > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(
        "DICOM: the file's sequences and items overlap so that checking it would take too long: corrupt file");
  }

  std::string_view b_;
  uint32_t lazy_value_bytes_;
  int64_t visits_left_;
  DicomParseCost cost_;
};

}  // namespace

bool UsesLongLengthField(char first, char second) {
  const auto upper = [](char c) { return c >= 'A' && c <= 'Z'; };
  const char chars[2] = {first, second};
  const std::string_view vr(chars, 2);
  static constexpr std::string_view kShort[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO",
                                                "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"};
  if (upper(first) && upper(second)) return std::find(std::begin(kShort), std::end(kShort), vr) == std::end(kShort);
  // DCMTK's internal VR names, which it also accepts from a stream.
  return vr == "lt" || vr == "ox" || vr == "px";
}

absl::StatusOr<DicomParseCost> CheckDicomStructure(std::string_view file, uint32_t lazy_value_bytes) {
  return Walker(file, lazy_value_bytes).File();
}

int64_t DcmtkParseBytes(const DicomParseCost& cost) {
  const auto objects = CheckedMul(cost.elements, kDcmtkBytesPerElement);
  return objects ? OrMax(CheckedAdd(*objects, cost.loaded_value_bytes)) : OrMax(objects);
}

absl::StatusOr<int64_t> DicomBytesHeldWhole(std::string_view file) {
  Walker walker(file, kDcmtkLoadsEveryValue);
  size_t pos = 0;
  std::string ts;
  if (auto s = walker.Meta(pos, ts); !s.ok()) return s;
  if (ts != kDeflated) return 0;
  auto n = Inflate(file.substr(pos), nullptr);
  if (!n.ok()) return n.status();
  return static_cast<int64_t>(*n);
}

}  // namespace upp::imageio
