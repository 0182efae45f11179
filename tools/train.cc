// upp-train: trains the project's default model, a small UNETR++, on
// synthetic abdominal CT phantoms (tools/phantom.h), on the CPU.
//
// Each step draws a fresh phantom (seeded by --seed and the step), rasterises
// it directly on the plan's grid with a random noise level, and takes two
// crops (60 % centred on a random organ voxel, as nnU-Net oversamples
// foreground). Loss: cross-entropy + soft Dice (foreground classes) on the
// full-resolution output and, with deep supervision, on out2 and out3
// (weights 4/7, 2/7, 1/7). AdamW with linear warm-up and polynomial decay.
// Deterministic for a seed and a thread count (LibTorch's CPU kernels are).
//
// The weights are written as safetensors with metadata: unetrpp_config,
// unetrpp_plan, seed, steps, generator version.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <array>
#include <chrono>
#include <cstdio>
#include <random>

#include "model/network.h"
#include "model/unetrpp.h"
#include "model/weights.h"
#include "preprocessing/plan.h"
#include "tools/cli_flags.h"
#include "tools/phantom.h"

namespace {

namespace F = torch::nn::functional;
using upp::model::ModelConfig;
using upp::preprocessing::Plan;

// The default model: synapse-style UNETR++ with feature size 8, one EPA
// block per stage, 32 x 64 x 64 windows at 4 x 3 x 3 mm. The coarse model
// of the `fastest` mode (docs/model_card_coarse.md) is the same network on
// 16 x 32 x 32 windows at 8 x 6 x 6 mm (--patch, --spacing).
constexpr std::array<int64_t, 3> kDefaultPatch{32, 64, 64};
constexpr std::array<double, 3> kDefaultSpacing{4.0, 3.0, 3.0};

ModelConfig DefaultModelConfig(const std::array<int64_t, 3>& patch) {
  ModelConfig c = *upp::model::Preset("synapse");
  c.preset = "custom";
  c.num_classes = upp::tools::kNumPhantomClasses;
  c.patch = patch;
  c.feature_size = 8;
  c.depths = {1, 1, 1, 1};
  c.decoder_depth = 1;
  return c;
}

Plan DefaultModelPlan(const ModelConfig& c, const std::array<double, 3>& spacing) {
  Plan p;
  p.target_spacing = spacing;
  p.patch = c.patch;
  p.num_classes = static_cast<int>(c.num_classes);
  upp::preprocessing::ChannelNormalization n;
  n.clip_low = -200;
  n.clip_high = 400;
  n.mean = 50;
  n.std = 120;
  p.normalization = {n};
  p.labels = upp::tools::PhantomLabels();
  return p;
}

torch::Tensor DiceCe(const torch::Tensor& logits, const torch::Tensor& target) {
  const int64_t k = logits.size(1);
  auto ce = F::cross_entropy(logits, target);
  auto probs = torch::softmax(logits, 1);
  auto onehot = F::one_hot(target, k).permute({0, 4, 1, 2, 3}).to(torch::kFloat);
  const std::vector<int64_t> dims{0, 2, 3, 4};
  auto inter = (probs * onehot).sum(dims);
  auto denom = probs.sum(dims) + onehot.sum(dims);
  auto dice = (2 * inter + 1e-5) / (denom + 1e-5);
  return ce + (1 - dice.slice(0, 1).mean());
}

struct Sample {
  torch::Tensor image;   // (1, D, H, W) normalised
  torch::Tensor labels;  // (D, H, W) long
};

// Two crops of one fresh phantom on the plan's grid.
std::vector<Sample> DrawSamples(uint64_t seed, const Plan& plan, int count) {
  std::mt19937_64 rng(seed);
  auto U = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  upp::tools::Anatomy anatomy = upp::tools::RandomAnatomy(seed);
  anatomy.noise_hu *= U(0.25, 1.0);      // resampling from a finer grid averages noise
  const auto& ts = plan.target_spacing;  // (D, H, W) = (z, y, x)
  const auto geometry = upp::tools::GridFor({ts[2], ts[1], ts[0]}, {U(380, 460), U(380, 460), U(200, 300)});
  const auto ph = upp::tools::Rasterize(anatomy, geometry, seed + 17);
  const auto& g = ph.geometry;
  const auto& n = plan.normalization[0];
  torch::Tensor image = torch::from_blob(const_cast<float*>(ph.hu.data()), {1, g.size[2], g.size[1], g.size[0]})
                            .clamp(n.clip_low, n.clip_high)
                            .sub(n.mean)
                            .div(n.std);
  torch::Tensor labels =
      torch::from_blob(const_cast<uint16_t*>(ph.labels.data()), {g.size[2], g.size[1], g.size[0]}, torch::kShort)
          .to(torch::kLong);
  std::vector<Sample> out;
  for (int i = 0; i < count; ++i) {
    std::array<int64_t, 3> start{};
    const bool foreground = U(0, 1) < 0.6;
    std::array<int64_t, 3> centre{};
    if (foreground) {
      const int64_t label = 1 + static_cast<int64_t>(U(0, upp::tools::kNumPhantomClasses - 1));
      auto idx = (labels == label).nonzero();
      if (idx.size(0) > 0) {
        auto row = idx[static_cast<int64_t>(U(0, 1) * static_cast<double>(idx.size(0))) % idx.size(0)];
        for (int a = 0; a < 3; ++a) centre[a] = row[a].item<int64_t>();
      } else {
        for (int a = 0; a < 3; ++a) centre[a] = labels.size(a) / 2;
      }
    }
    for (int a = 0; a < 3; ++a) {
      const int64_t room = std::max<int64_t>(0, labels.size(a) - plan.patch[a]);
      start[a] = foreground ? std::clamp<int64_t>(centre[a] - plan.patch[a] / 2, 0, room)
                            : static_cast<int64_t>(U(0, 1) * static_cast<double>(room + 1)) % (room + 1);
    }
    torch::Tensor im = image, lab = labels;
    for (int a = 0; a < 3; ++a) {
      im = im.narrow(a + 1, start[a], std::min(plan.patch[a], labels.size(a)));
      lab = lab.narrow(a, start[a], std::min(plan.patch[a], labels.size(a)));
    }
    // Pad (air, background) if the phantom is smaller than the patch.
    std::vector<int64_t> pad;
    for (int a = 2; a >= 0; --a) {
      pad.push_back(0);
      pad.push_back(plan.patch[a] - lab.size(a));
    }
    im = torch::constant_pad_nd(im, pad, (n.clip_low - n.mean) / n.std);
    lab = torch::constant_pad_nd(lab, pad, 0);
    out.push_back({im.contiguous(), lab.contiguous()});
  }
  return out;
}

constexpr char kTool[] = "upp-train";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train the default UNETR++ on synthetic CT phantoms (CPU)"};
  std::string output = "default_model.safetensors";
  uint64_t seed = 1;
  int64_t steps = 3000, log_every = 50;
  double lr = 2e-3;
  upp::tools::RunFlags run(/*default_batch=*/2);
  app.add_option("-o,--output", output, "weights to write (safetensors)");
  app.add_option("--seed", seed, "seed of everything random");
  app.add_option("--steps", steps, "optimizer steps");
  app.add_option("--lr", lr, "peak learning rate (AdamW)");
  run.Register(app, "crops per step (one phantom per step)");
  app.add_option("--log-every", log_every, "steps between progress lines");
  std::vector<int64_t> patch(kDefaultPatch.begin(), kDefaultPatch.end());
  std::vector<double> spacing(kDefaultSpacing.begin(), kDefaultSpacing.end());
  app.add_option("--patch", patch, "window D H W (multiples of 16 32 32)")->expected(3);
  app.add_option("--spacing", spacing, "target spacing D H W in mm (z y x)")->expected(3);
  bool half = false;
  app.add_flag("--half", half, "store the weights as float16 (half the file; loaded as float32)");
  CLI11_PARSE(app, argc, argv);
  run.Apply();
  torch::manual_seed(seed);

  const ModelConfig config = DefaultModelConfig({patch[0], patch[1], patch[2]});
  if (auto s = config.Validate(); !s.ok()) return upp::tools::FailWith(kTool, s);
  const Plan plan = DefaultModelPlan(config, {spacing[0], spacing[1], spacing[2]});
  if (auto s = plan.Validate(); !s.ok()) return upp::tools::FailWith(kTool, s);
  upp::model::UnetrPP model(config);
  model->train();
  std::printf("model: %lld trainable parameters\n",
              static_cast<long long>(upp::model::CountTrainableParameters(*model)));
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(lr).weight_decay(1e-4));
  const int64_t warmup = std::max<int64_t>(1, steps / 50);
  const auto start = std::chrono::steady_clock::now();
  double running = 0;
  for (int64_t step = 0; step < steps; ++step) {
    const double rate = step < warmup ? lr * (step + 1) / warmup
                                      : lr * std::pow(1.0 - static_cast<double>(step - warmup) / (steps - warmup), 0.9);
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(rate);
    auto samples = DrawSamples(seed * 1000003ULL + static_cast<uint64_t>(step), plan, static_cast<int>(run.batch));
    std::vector<torch::Tensor> images, labels;
    for (auto& s : samples) {
      images.push_back(s.image);
      labels.push_back(s.labels);
    }
    const torch::Tensor x = torch::stack(images), y = torch::stack(labels);
    auto outs = model->forward(x, /*deep_supervision=*/true);
    torch::Tensor loss = DiceCe(outs[0], y) * (4.0 / 7.0);
    const double ds_weights[] = {2.0 / 7.0, 1.0 / 7.0};
    for (int i = 1; i < 3; ++i) {
      std::vector<int64_t> size(outs[i].sizes().begin() + 2, outs[i].sizes().end());
      auto yi =
          F::interpolate(y.unsqueeze(1).to(torch::kFloat), F::InterpolateFuncOptions().size(size).mode(torch::kNearest))
              .squeeze(1)
              .to(torch::kLong);
      loss = loss + DiceCe(outs[i], yi) * ds_weights[i - 1];
    }
    optimizer.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 12.0);
    optimizer.step();
    running = step == 0 ? loss.item<double>() : 0.95 * running + 0.05 * loss.item<double>();
    if ((step + 1) % log_every == 0 || step + 1 == steps) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("step %lld/%lld loss %.4f lr %.2e %.1f s (%.2f s/step)\n", static_cast<long long>(step + 1),
                  static_cast<long long>(steps), running, rate, elapsed, elapsed / (step + 1));
      std::fflush(stdout);
    }
  }
  model->eval();
  std::map<std::string, std::string> metadata{
      {"unetrpp_config", config.ToJson()},
      {"unetrpp_plan", plan.ToJson()},
      {"seed", std::to_string(seed)},
      {"steps", std::to_string(steps)},
      {"batch", std::to_string(run.batch)},
      {"weights_dtype", half ? "float16" : "float32"},
      {"phantom_generator_version", std::to_string(upp::tools::kPhantomGeneratorVersion)},
      {"trained_by", "upp-train (unetrpp-serve)"},
  };
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (auto& [name, t] : upp::model::StateDict(*model)) {
    torch::Tensor v = t.detach().contiguous();
    if (half && v.is_floating_point()) v = v.to(torch::kHalf);
    tensors.emplace_back(name, v);
  }
  if (auto s = upp::model::WriteSafetensors(output, tensors, metadata); !s.ok()) return upp::tools::FailWith(kTool, s);
  std::printf("wrote %s\n", output.c_str());
  return 0;
}
