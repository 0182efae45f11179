// Hostile-input helpers for the DICOM tests: files whose cost to DCMTK lies
// in their structure, not their lengths (many tiny elements, tags out of
// order), written byte by byte in Explicit VR Little Endian. No DCMTK: the
// gateway's and imageio's tests share them.
#ifndef UPP_TESTS_TESTING_HOSTILE_DICOM_H_
#define UPP_TESTS_TESTING_HOSTILE_DICOM_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace upp::testing {

inline void PutLe(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

// Preamble, "DICM" and a file meta group naming Explicit VR Little Endian,
// then `data_set`.
inline std::string Part10(std::string_view data_set) {
  std::string out(128, '\0');
  out += "DICM";
  const std::string ts("1.2.840.10008.1.2.1\0", 20);
  PutLe(out, 0x0002, 2);
  PutLe(out, 0x0010, 2);
  out += "UI";
  PutLe(out, ts.size(), 2);
  out += ts;
  out.append(data_set);
  return out;
}

// `count` empty US elements (8 bytes each) in the odd groups from
// `first_group` on, 65,536 per group, in ascending tag order or, with
// `descending`, in the reverse of that order.
inline std::string EmptyElements(int64_t count, bool descending, uint16_t first_group = 0x1001) {
  std::string out;
  out.reserve(static_cast<size_t>(count) * 8);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t k = descending ? count - 1 - i : i;
    PutLe(out, static_cast<uint64_t>(first_group + 2 * (k >> 16)), 2);
    PutLe(out, static_cast<uint64_t>(k & 0xFFFF), 2);
    out += "US";
    PutLe(out, 0, 2);
  }
  return out;
}

// `count` OB elements of `value_bytes` zero bytes each (12 + value_bytes
// bytes each) in ascending tag order in the odd groups from `first_group`
// on: an instance whose values DCMTK loads while it parses.
inline std::string SmallValues(int64_t count, uint32_t value_bytes, uint16_t first_group = 0x1001) {
  std::string out;
  out.reserve(static_cast<size_t>(count) * (12 + value_bytes));
  for (int64_t k = 0; k < count; ++k) {
    PutLe(out, static_cast<uint64_t>(first_group + 2 * (k >> 16)), 2);
    PutLe(out, static_cast<uint64_t>(k & 0xFFFF), 2);
    out += "OB";
    PutLe(out, 0, 2);
    PutLe(out, value_bytes, 4);
    out.append(value_bytes, '\0');
  }
  return out;
}

// A sequence (tag `group`,`element`) of undefined length holding one item of
// undefined length per entry of `items` (each an item's data set).
template <typename Items>
std::string SequenceOf(uint16_t group, uint16_t element, const Items& items) {
  std::string out;
  PutLe(out, group, 2);
  PutLe(out, element, 2);
  out += "SQ";
  PutLe(out, 0, 2);
  PutLe(out, 0xFFFFFFFFu, 4);
  for (const auto& item : items) {
    PutLe(out, 0xE000FFFEu, 4);  // (FFFE,E000) item, little endian: group first
    PutLe(out, 0xFFFFFFFFu, 4);
    out += item;
    PutLe(out, 0xE00DFFFEu, 4);  // item delimiter
    PutLe(out, 0, 4);
  }
  PutLe(out, 0xE0DDFFFEu, 4);  // sequence delimiter
  PutLe(out, 0, 4);
  return out;
}

}  // namespace upp::testing

#endif  // UPP_TESTS_TESTING_HOSTILE_DICOM_H_
