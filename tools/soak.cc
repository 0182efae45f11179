// upp-soak: the server under a long mixed load with abusive clients among the
// well-behaved ones, on loopback, bounded in time. Checks that nothing is
// lost and that memory comes back:
//   - a reference run labels each input once;
//   - N well-behaved clients (own connections) send random inputs for the
//     duration; some cancel or set short deadlines at random. Every request
//     that completes must match the reference labels (>= 99.99 % of voxels,
//     batching may reorder float sums); every other one must end with the
//     code its client caused (CANCELLED, DEADLINE_EXCEEDED) or a retryable
//     refusal (RESOURCE_EXHAUSTED, retried) - anything else is "lost";
//   - abusive clients meanwhile: streams that never send a header, uploads
//     that stop, clients that never read their results, oversized metadata,
//     and the hostile inputs of issue 28 (DICOM with tags out of order, with
//     too many elements, with too many bytes of small values; a JPEG 2000
//     frame of 65,280 tiles; a tiny NIfTI of huge voxels; a DICOM series
//     that takes seconds to parse, abandoned by its client): each must be
//     refused with its code (or the server be busy), never served;
//   - RSS after warm-up (the reference run) against RSS at the end, after
//     the server has gone idle.
// Prints JSON on stdout; exit 1 if anything was lost or RSS grew by > 10 %.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dctk.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/client.h"
#include "imageio/dcmtk_io.h"
#include "imageio/labels.h"
#include "imageio/nifti.h"
#include "model/cpu_threads.h"
#include "server/config.h"
#include "server/server.h"
#include "tests/testing/hostile_dicom.h"
#include "tests/testing/hostile_jpeg2000.h"
#include "tests/testing/rss.h"
#include "tools/phantom.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Input {
  std::string nifti;
  std::vector<uint16_t> reference;
};

std::string MakeNifti(std::array<int64_t, 3> size, std::array<double, 3> spacing, uint64_t seed) {
  const auto geometry =
      upp::tools::GridFor(spacing, {size[0] * spacing[0], size[1] * spacing[1], size[2] * spacing[2]});
  const auto phantom = upp::tools::Rasterize(upp::tools::RandomAnatomy(seed), geometry, seed);
  upp::imageio::NiftiHeaderInfo header;
  header.qform_code = header.sform_code = 1;
  return upp::imageio::WriteNiftiInt16(geometry, upp::tools::ToInt16(phantom.hu), header).value();
}

struct Tally {
  std::mutex mu;
  std::map<std::string, int64_t> counts;
  std::map<std::string, std::string> first_message;  // per hostile input: what the server said
  void Add(const std::string& what) {
    std::lock_guard<std::mutex> l(mu);
    ++counts[what];
  }
  void Note(const std::string& what, absl::string_view message) {
    std::lock_guard<std::mutex> l(mu);
    first_message.emplace(what, std::string(message.substr(0, 200)));
  }
};

// A hostile input (issue 28), sent whole by a client of its own: refused
// with `expected`, or RESOURCE_EXHAUSTED while the server is busy.
struct HostileInput {
  std::string name;
  std::vector<std::string> files;
  unetrpp::v1::InputFormat format = unetrpp::v1::INPUT_FORMAT_DICOM;
  absl::StatusCode expected = absl::StatusCode::kInvalidArgument;
  std::optional<absl::Duration> deadline;  // a bomb its client abandons
};

// A CT slice of 256 x 255 pixels whose JPEG 2000 frame (82 bytes) declares
// 1 x 1 tiles: 65,280 of them, 633 MB inside OpenJPEG unless refused first.
std::string JpegTileBomb() {
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  char uid[100];
  ds->putAndInsertString(DCM_SOPClassUID, UID_CTImageStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT));
  ds->putAndInsertString(DCM_SeriesInstanceUID, "1.2.826.0.1.3680043.2.1143.28.1");
  ds->putAndInsertString(DCM_StudyInstanceUID, "1.2.826.0.1.3680043.2.1143.28");
  ds->putAndInsertString(DCM_Modality, "CT");
  ds->putAndInsertUint16(DCM_Rows, 255);
  ds->putAndInsertUint16(DCM_Columns, 256);
  ds->putAndInsertUint16(DCM_BitsAllocated, 8);
  ds->putAndInsertUint16(DCM_BitsStored, 8);
  ds->putAndInsertUint16(DCM_HighBit, 7);
  ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
  ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
  ds->putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
  ds->putAndInsertString(DCM_ImagePositionPatient, "0\\0\\0");
  ds->putAndInsertString(DCM_ImageOrientationPatient, "1\\0\\0\\0\\1\\0");
  ds->putAndInsertString(DCM_PixelSpacing, "1\\1");
  upp::testing::Layout layout;
  layout.width = 256;
  layout.height = 255;
  layout.tile_width = layout.tile_height = 1;
  std::string frame = upp::testing::Codestream(layout);
  if (frame.size() % 2 != 0) frame.push_back('\0');
  auto* sequence = new DcmPixelSequence(DcmTag(DCM_PixelSequenceTag));
  sequence->insert(new DcmPixelItem(DcmTag(DCM_PixelItemTag)));  // the empty offset table
  auto* fragment = new DcmPixelItem(DcmTag(DCM_PixelItemTag));
  fragment->putUint8Array(reinterpret_cast<const Uint8*>(frame.data()), static_cast<unsigned long>(frame.size()));
  sequence->insert(fragment);
  auto* pixels = new DcmPixelData(DCM_PixelData);
  pixels->putOriginalRepresentation(EXS_JPEG2000LosslessOnly, nullptr, sequence);
  ds->insert(pixels, true);
  return upp::imageio::SerializeDicom(file, EXS_JPEG2000LosslessOnly).value();
}

std::vector<HostileInput> MakeHostileInputs() {
  namespace t = upp::testing;
  std::vector<HostileInput> inputs;
  // 80,000 elements in descending tag order: DCMTK's insertion is quadratic (42 s).
  inputs.push_back({"descending_tags", {t::Part10(t::EmptyElements(80000, /*descending=*/true))}});
  // A million empty elements (8 MB): about 180 MB inside DCMTK.
  inputs.push_back({"many_elements", {t::Part10(t::EmptyElements(1000000, false))}});
  // 1,100 values of 64 KiB before the pixels: 72 MB DCMTK would load.
  inputs.push_back({"many_small_values", {t::Part10(t::SmallValues(1100, 64 * 1024))}});
  inputs.push_back({"jpeg2000_tiles", {JpegTileBomb()}});
  // 4 x 4 x 4 voxels of 450 x 450 x 300 mm: 64 bytes that claimed 2 GiB and 46,656 windows.
  upp::imageio::Geometry huge;
  huge.size = {4, 4, 4};
  huge.spacing = {450, 450, 300};
  upp::imageio::NiftiHeaderInfo header;
  header.qform_code = header.sform_code = 1;
  inputs.push_back({"huge_spacing_nifti",
                    {upp::imageio::WriteNiftiInt16(huge, std::vector<int16_t>(64, 100), header).value()},
                    unetrpp::v1::INPUT_FORMAT_NIFTI});
  // Eight instances of 520,000 elements (within every cap, about a second
  // of DCMTK each), abandoned 0.3 s after they are sent: the decode must stop.
  const std::vector<std::string> items(8, t::EmptyElements(65000, false));
  inputs.push_back({"abandoned_slow_dicom",
                    std::vector<std::string>(8, t::Part10(t::SequenceOf(0x0009, 0x1000, items))),
                    unetrpp::v1::INPUT_FORMAT_DICOM, absl::StatusCode::kDeadlineExceeded, absl::Milliseconds(300)});
  return inputs;
}

void SendHostile(const std::string& address, const HostileInput& input, Tally& tally) {
  auto client = upp::client::Client::Connect(address);
  upp::client::SegmentOptions options;
  options.format = input.format;
  options.deadline = input.deadline;
  const absl::Status status = client->Segment(input.files, options).status();
  if (status.code() == input.expected) {
    tally.Add("abuse_" + input.name);
  } else if (status.code() == absl::StatusCode::kResourceExhausted) {
    tally.Add("abuse_" + input.name + "_busy");
  } else {
    tally.Add("LOST_abuse_" + input.name + "_" + absl::StatusCodeToString(status.code()));
  }
  tally.Note(input.name, status.message());
}

// One well-behaved client until `end`.
void Client(const std::string& address, const std::vector<Input>& inputs, Clock::time_point end, uint64_t seed,
            Tally& tally) {
  auto client = upp::client::Client::Connect(address);
  std::mt19937_64 rng(seed);
  while (Clock::now() < end) {
    const Input& in = inputs[rng() % inputs.size()];
    upp::client::SegmentOptions options;
    options.outputs = {unetrpp::v1::OUTPUT_KIND_RAW_LABELS};
    const int behaviour = static_cast<int>(rng() % 10);
    if (behaviour == 0) options.deadline = absl::Milliseconds(200 + rng() % 2000);  // may expire
    auto result = client->Segment({in.nifti}, options);
    if (result.ok()) {
      const auto labels = upp::imageio::DecodeRawLabels(result->outputs[unetrpp::v1::OUTPUT_KIND_RAW_LABELS]);
      tally.Add(upp::tools::LabelAgreement(labels, in.reference) >= 0.9999 ? "ok_matching" : "LOST_wrong_labels");
    } else if (behaviour == 0 && result.status().code() == absl::StatusCode::kDeadlineExceeded) {
      tally.Add("deadline_as_asked");
    } else if (result.status().code() == absl::StatusCode::kResourceExhausted) {
      tally.Add("refused_retryable");
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    } else {
      tally.Add("LOST_" + absl::StatusCodeToString(result.status().code()));
    }
  }
}

// Abusive clients until `end`, one kind after another.
void Abuser(const std::string& address, const Input& input, const std::vector<HostileInput>& hostile,
            Clock::time_point end, uint64_t seed, Tally& tally) {
  std::mt19937_64 rng(seed);
  while (Clock::now() < end) {
    const int kind = static_cast<int>(rng() % (4 + hostile.size()));
    if (kind >= 4) {
      SendHostile(address, hostile[static_cast<size_t>(kind - 4)], tally);
      continue;
    }
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);  // a small window: results stall when not read
    args.SetInt("grpc.use_local_subchannel_pool", 1);
    auto stub = unetrpp::v1::Segmentation::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (kind == 3) context.AddMetadata("x-padding", std::string(64 << 10, 'a'));  // oversized metadata
    auto stream = stub->Segment(&context);
    unetrpp::v1::SegmentRequest header, chunk, done;
    header.mutable_header()->set_format(unetrpp::v1::INPUT_FORMAT_NIFTI);
    header.mutable_header()->add_outputs(unetrpp::v1::OUTPUT_KIND_RAW_LABELS);
    chunk.mutable_chunk()->set_data(input.nifti);
    done.mutable_end();
    if (kind == 1) {  // an upload that stops half-way
      unetrpp::v1::SegmentRequest half;
      half.mutable_chunk()->set_data(input.nifti.substr(0, input.nifti.size() / 2));
      stream->Write(header) && stream->Write(half);
    }
    if (kind == 2 || kind == 3) {
      stream->Write(header) && stream->Write(chunk) && stream->Write(done);
      stream->WritesDone();
      unetrpp::v1::SegmentResponse first;
      stream->Read(&first);  // accepted, then never read again
    }
    // kind 0: nothing at all. Wait for the server to give up on this client.
    std::this_thread::sleep_for(std::chrono::milliseconds(8000 + rng() % 4000));
    context.TryCancel();
    unetrpp::v1::SegmentResponse r;
    while (stream->Read(&r)) {
    }
    stream->Finish();
    static const char* const kKinds[] = {"abuse_idle_stream", "abuse_stopped_upload", "abuse_never_reads",
                                         "abuse_big_metadata"};
    tally.Add(kKinds[kind]);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"unetrpp-serve soak: long mixed load with abusive clients; nothing lost, memory comes back"};
  std::string weights = "model/weights/phantom_ct_v1.safetensors";
  int clients = 16, abusers = 3;
  double minutes = 20;
  app.add_option("--weights", weights, "model");
  app.add_option("--clients", clients, "well-behaved clients");
  app.add_option("--abusers", abusers, "abusive clients");
  app.add_option("--minutes", minutes, "duration of the load");
  CLI11_PARSE(app, argc, argv);
  upp::model::ConfigureCpuThreads(0);
  spdlog::set_level(spdlog::level::warn);

  auto config = upp::server::ParseConfig(
      "listen_address: '127.0.0.1:0'\nmetrics_address: 'off'\ncpu_threads: 2\n"
      "limits { per_caller { max_requests_per_peer: 64 } max_pending_streams: 64 max_concurrent_requests: 64 }\n"
      "timeouts { header_seconds: 2 upload_idle_seconds: 2 send_stall_seconds: 4 }\n"
      "models { name: 'm' weights: '" +
      weights + "' }\n");
  auto server = upp::server::Server::Create(config.value());
  if (!server.ok()) return std::fprintf(stderr, "%s\n", server.status().ToString().c_str()), 1;
  const std::string address = "127.0.0.1:" + std::to_string((*server)->port());

  // Mixed sizes, small enough for many requests on a small machine.
  std::vector<Input> inputs;
  const std::array<std::array<int64_t, 3>, 3> sizes{{{96, 96, 24}, {128, 112, 32}, {160, 160, 20}}};
  for (size_t i = 0; i < sizes.size(); ++i) inputs.push_back({MakeNifti(sizes[i], {2.5, 2.5, 5.0}, 500 + i), {}});
  auto reference_client = upp::client::Client::Connect(address);
  for (auto& in : inputs) {
    upp::client::SegmentOptions o;
    o.outputs = {unetrpp::v1::OUTPUT_KIND_RAW_LABELS};
    auto r = reference_client->Segment({in.nifti}, o);
    if (!r.ok()) return std::fprintf(stderr, "reference: %s\n", r.status().ToString().c_str()), 1;
    in.reference = upp::imageio::DecodeRawLabels(r->outputs[unetrpp::v1::OUTPUT_KIND_RAW_LABELS]);
  }
  // Made before the warm measure: about 115 MB of inputs the client side holds.
  const std::vector<HostileInput> hostile = MakeHostileInputs();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const int64_t rss_warm = upp::testing::ProcStatusBytes("VmRSS");

  Tally tally;
  const auto start = Clock::now();
  const auto end = start + std::chrono::milliseconds(static_cast<int64_t>(minutes * 60000));
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i)
    threads.emplace_back(Client, address, std::cref(inputs), end, 1000 + i, std::ref(tally));
  for (int i = 0; i < abusers; ++i)
    threads.emplace_back(Abuser, address, std::cref(inputs[0]), std::cref(hostile), end, 2000 + i, std::ref(tally));
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::this_thread::sleep_for(std::chrono::seconds(10));  // idle: timeouts fire, the heap is trimmed
  const int64_t rss_end = upp::testing::ProcStatusBytes("VmRSS");

  nlohmann::json out;
  int64_t lost = 0, completed = 0;
  for (const auto& [what, n] : tally.counts) {
    out["outcomes"][what] = n;
    if (what.rfind("LOST", 0) == 0) lost += n;
    if (what == "ok_matching") completed += n;
  }
  for (const auto& [what, message] : tally.first_message) out["hostile_refusals"][what] = message;
  out["clients"] = clients;
  out["abusers"] = abusers;
  out["seconds"] = seconds;
  out["completed_requests"] = completed;
  out["lost"] = lost;
  out["rss_after_warmup_mib"] = rss_warm / 1048576.0;
  out["rss_end_mib"] = rss_end / 1048576.0;
  out["rss_growth"] = static_cast<double>(rss_end - rss_warm) / static_cast<double>(rss_warm);
  std::printf("%s\n", out.dump(1).c_str());
  return lost == 0 && rss_end <= rss_warm * 1.10 ? 0 : 1;
}
