// upp-forward: runs a UNETR++ on the tensor "input" of a safetensors file and
// writes "logits" (float32) and "labels" (uint8 argmax over classes). Anyone
// can use it to check parity with their own PyTorch model.
//
//   upp-forward --weights w.safetensors --input in.safetensors --output out.safetensors
//               [--preset synapse] [--patch D H W] [--feature-size F] ...
#include <cstdio>

#include "model/network.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "tools/model_cli.h"

int main(int argc, char** argv) {
  CLI::App app{"Run UNETR++ on a safetensors input and write logits and labels"};
  upp::tools::ModelFlags flags;
  flags.Register(app);
  std::string weights, input, output;
  bool ignore_ds = false;
  app.add_option("--weights", weights, "weights (safetensors)")->required();
  app.add_option("--input", input, "safetensors file with a tensor 'input' (B, C, D, H, W)")->required();
  app.add_option("--output", output, "safetensors file to write")->required();
  app.add_flag("--ignore-deep-supervision", ignore_ds, "load files without out2/out3 heads");
  CLI11_PARSE(app, argc, argv);
  flags.ApplyThreads();

  auto fail = [](const upp::model::Status& s) {
    std::fprintf(stderr, "upp-forward: %s\n", s.ToString().c_str());
    return 1;
  };
  auto config = flags.Resolve(weights);
  if (!config.ok()) return fail(config.status());
  auto options = flags.Options();
  if (!options.ok()) return fail(options.status());
  auto net = upp::model::Network::Create(*config, *options);
  if (!net.ok()) return fail(net.status());
  upp::model::LoadOptions load;
  load.ignore_deep_supervision = ignore_ds;
  if (auto s = (*net)->LoadWeights(weights, load); !s.ok()) return fail(s);

  auto reader = upp::model::SafetensorsReader::Open(input);
  if (!reader.ok()) return fail(reader.status());
  const auto* info = (*reader)->Find("input");
  if (info == nullptr) return fail(upp::model::InvalidArgumentError("'" + input + "' has no tensor 'input'"));
  auto x = upp::model::ReadTensorAsFloat(**reader, *info);
  if (!x.ok()) return fail(x.status());
  auto out = (*net)->Forward(*x);
  if (!out.ok()) return fail(out.status());
  auto logits = (*out)[0].to(torch::kCPU);
  auto labels = logits.argmax(1).to(torch::kUInt8);
  if (auto s = upp::model::WriteSafetensors(output, {{"logits", logits}, {"labels", labels}},
                                            {{"unetrpp_config", config->ToJson()}});
      !s.ok()) {
    return fail(s);
  }
  std::printf("wrote %s: logits [%ld, %ld, %ld, %ld, %ld]\n", output.c_str(), logits.size(0), logits.size(1),
              logits.size(2), logits.size(3), logits.size(4));
  return 0;
}
