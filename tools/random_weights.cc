// upp-random-weights: writes a randomly initialised UNETR++ of a preset (or
// any architecture the model flags describe) as safetensors, with its
// architecture in the "unetrpp_config" metadata, so that the server and the
// benchmarks can load a network of realistic cost without a checkpoint.
// Its labels mean nothing.
//
//   upp-random-weights --preset synapse -o synapse_random.safetensors [--seed 0]
#include <cstdio>

#include "model/unetrpp.h"
#include "model/weights.h"
#include "tools/model_cli.h"

int main(int argc, char** argv) {
  CLI::App app{"Write a randomly initialised UNETR++ (safetensors with unetrpp_config metadata)"};
  upp::tools::ModelFlags flags;
  flags.preset = "synapse";
  flags.Register(app);
  std::string output;
  uint64_t seed = 0;
  app.add_option("-o,--output", output, "safetensors file to write")->required();
  app.add_option("--seed", seed, "seed of the initialisation");
  CLI11_PARSE(app, argc, argv);
  auto config = flags.Resolve("");
  if (!config.ok()) return std::fprintf(stderr, "%s\n", config.status().ToString().c_str()), 1;
  torch::manual_seed(seed);
  upp::model::UnetrPP model(*config);
  model->eval();
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (auto& [name, t] : upp::model::StateDict(*model)) tensors.emplace_back(name, t.detach().contiguous());
  const std::map<std::string, std::string> metadata{{"unetrpp_config", config->ToJson()},
                                                    {"random_init_seed", std::to_string(seed)}};
  if (auto s = upp::model::WriteSafetensors(output, tensors, metadata); !s.ok())
    return std::fprintf(stderr, "%s\n", s.ToString().c_str()), 1;
  std::printf("wrote %s (%zu tensors)\n", output.c_str(), tensors.size());
  return 0;
}
