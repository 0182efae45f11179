// The multipart/related layer of the STOW-RS receiver: Content-Type
// parameters, parts found whatever the pieces the body arrives in, and
// malformed bodies refused.
#include "gateway/multipart.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace upp::gateway {
namespace {

struct Recorded {
  std::string content_type, data;
  bool ended = false;
};

class RecordingSink : public MultipartReader::Sink {
 public:
  absl::Status BeginPart(absl::string_view content_type) override {
    parts.push_back({std::string(content_type), "", false});
    return absl::OkStatus();
  }
  absl::Status PartData(absl::string_view data) override {
    parts.back().data.append(data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Status EndPart() override {
    parts.back().ended = true;
    return absl::OkStatus();
  }
  std::vector<Recorded> parts;
};

// Feeds `body` in pieces of `piece` bytes, then finishes.
absl::Status Read(const std::string& boundary, const std::string& body, size_t piece, RecordingSink& sink) {
  MultipartReader reader(boundary, &sink);
  for (size_t i = 0; i < body.size(); i += piece)
    if (auto s = reader.Feed(absl::string_view(body).substr(i, piece)); !s.ok()) return s;
  return reader.Finish();
}

const std::string kBody =
    "preamble to ignore\r\n"
    "--b0und\r\n"
    "Content-Type: application/dicom\r\n"
    "X-Other: 1\r\n"
    "\r\n"
    "first\r\n--b0un not a delimiter\r\n"
    "--b0und   \r\n"  // transport padding
    "\r\n"            // a part without headers
    "second"
    "\r\n--b0und--\r\n"
    "epilogue to ignore";

TEST(MultipartTest, ContentTypeParametersAreParsed) {
  auto t = ParseMultipartRelated("Multipart/Related; type=\"application/dicom\"; boundary=\"a b:c\"");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->boundary, "a b:c");
  EXPECT_EQ(t->type, "application/dicom");
  t = ParseMultipartRelated("multipart/related;boundary=xyz");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->boundary, "xyz");
  EXPECT_EQ(t->type, "");
  t = ParseMultipartRelated("multipart/related; boundary=xyz; type=application/dicom;");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(MediaType(" Application/DICOM ; transfer-syntax=1.2.840.10008.1.2.1"), "application/dicom");
}

TEST(MultipartTest, UnsupportedMediaTypesAreFailedPreconditionMalformedOnesInvalid) {
  EXPECT_EQ(ParseMultipartRelated("application/dicom").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ParseMultipartRelated("multipart/form-data; boundary=x").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ParseMultipartRelated("multipart/related; type=\"application/dicom+json\"; boundary=x").status().code(),
            absl::StatusCode::kFailedPrecondition);
  for (const char* bad :
       {"multipart/related", "multipart/related; type=\"application/dicom\"",
        "multipart/related; boundary=", "multipart/related; boundary=\"unterminated",
        "multipart/related; boundary=\"bad;char\"", "multipart/related; boundary=a; boundary=b",
        "multipart/related; boundary=\"trailing \"", "multipart/related; =x", "multipart/related; boundary=x y"}) {
    EXPECT_EQ(ParseMultipartRelated(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ParseMultipartRelated("multipart/related; boundary=" + std::string(201, 'a')).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Over RFC 2046's 70, as Orthanc's DICOMweb client writes them.
  EXPECT_TRUE(ParseMultipartRelated("multipart/related; type=\"application/dicom\"; boundary=c9c70dc7-731d-4e1e-81e2-"
                                    "f8a7d2787152-c9c70dc7-731d-4e1e-81e2-f8a7d2787152")
                  .ok());
}

TEST(MultipartTest, PartsAreTheSameWhateverPiecesTheBodyArrivesIn) {
  for (size_t piece : {size_t{1}, size_t{2}, size_t{3}, size_t{7}, size_t{64}, kBody.size()}) {
    RecordingSink sink;
    ASSERT_TRUE(Read("b0und", kBody, piece, sink).ok()) << piece;
    ASSERT_EQ(sink.parts.size(), 2u) << piece;
    EXPECT_EQ(sink.parts[0].content_type, "application/dicom");
    EXPECT_EQ(sink.parts[0].data, "first\r\n--b0un not a delimiter");
    EXPECT_EQ(sink.parts[1].content_type, "");
    EXPECT_EQ(sink.parts[1].data, "second");
    EXPECT_TRUE(sink.parts[0].ended && sink.parts[1].ended);
  }
}

TEST(MultipartTest, ABodyThatBeginsWithItsDelimiterAndAnEmptyPart) {
  RecordingSink sink;
  ASSERT_TRUE(Read("x", "--x\r\nContent-Type: application/dicom\r\n\r\n\r\n--x--", 1, sink).ok());
  ASSERT_EQ(sink.parts.size(), 1u);
  EXPECT_EQ(sink.parts[0].data, "");
}

TEST(MultipartTest, MalformedBodiesAreRefused) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"no closing delimiter", "--x\r\n\r\ndata"},
      {"ends after a delimiter", "--x\r\n\r\ndata\r\n--x"},
      {"no delimiter at all", "just some bytes"},
      {"another boundary", "--y\r\n\r\ndata\r\n--y--"},
      {"text after a delimiter", "--x\r\n\r\ndata\r\n--xyz\r\n\r\n--x--"},
      {"a header line without a colon", "--x\r\nContent-Type application/dicom\r\n\r\ndata\r\n--x--"},
      {"a header name with a space", "--x\r\nContent Type: a\r\n\r\ndata\r\n--x--"},
      {"two content types", "--x\r\nContent-Type: a\r\ncontent-type: b\r\n\r\ndata\r\n--x--"},
      {"headers that never end", "--x\r\nA: " + std::string(20000, 'a')},
      {"a preamble without end", std::string(100000, 'p')},
      {"endless padding", "--x" + std::string(1000, ' ') + "\r\n\r\n--x--"},
  };
  for (const auto& [what, body] : bad) {
    for (size_t piece : {size_t{1}, body.size()}) {
      RecordingSink sink;
      EXPECT_EQ(Read("x", body, piece, sink).code(), absl::StatusCode::kInvalidArgument) << what << " " << piece;
    }
  }
}

TEST(MultipartTest, ASinkErrorStopsTheReader) {
  class Refusing : public RecordingSink {
    absl::Status PartData(absl::string_view) override { return absl::ResourceExhaustedError("full"); }
  } sink;
  MultipartReader reader("x", &sink);
  EXPECT_EQ(reader.Feed("--x\r\n\r\nsome data that is long enough\r\n--x--").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(reader.Feed("more").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(reader.Finish().code(), absl::StatusCode::kResourceExhausted);
}

TEST(MultipartTest, APartIsHandedOnAsItArrivesNotHeld) {
  RecordingSink sink;
  MultipartReader reader("x", &sink);
  ASSERT_TRUE(reader.Feed("--x\r\n\r\n").ok());
  const std::string piece(1 << 20, 'd');
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(reader.Feed(piece).ok());
  // All but what may begin a delimiter has reached the sink already.
  ASSERT_EQ(sink.parts.size(), 1u);
  EXPECT_GE(sink.parts[0].data.size(), 8 * piece.size() - 5);
  ASSERT_TRUE(reader.Feed("\r\n--x--").ok());
  ASSERT_TRUE(reader.Finish().ok());
  EXPECT_EQ(sink.parts[0].data.size(), 8 * piece.size());
}

}  // namespace
}  // namespace upp::gateway
