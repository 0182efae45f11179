// Moving tensors between safetensors files and LibTorch: reading one tensor,
// loading a whole state dict into a module by name (strict by default),
// and writing tensors with metadata.
//
// All functions catch LibTorch exceptions and return a Status; none throws.
// Thread-safety: LoadWeights writes into the module's parameters and must not
// run concurrently with a forward pass on the same module.
#ifndef UPP_MODEL_WEIGHTS_H_
#define UPP_MODEL_WEIGHTS_H_

#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "model/safetensors.h"
#include "model/status.h"

namespace upp::model {

// A copy of the tensor, in the file's dtype (F16/BF16/F64 stay as they are).
StatusOr<torch::Tensor> ReadTensor(const SafetensorsReader& reader, const TensorInfo& info);
// Same, converted to float32.
StatusOr<torch::Tensor> ReadTensorAsFloat(const SafetensorsReader& reader, const TensorInfo& info);

// Writes tensors (any device; copied to CPU, contiguous) in the given order.
Status WriteSafetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

struct LoadOptions {
  // Strict: every key of the module must be in the file and every key of the
  // file must be in the module, with equal shapes. Otherwise keys that match
  // are loaded and the rest is reported only.
  bool strict = true;
  // Skip the deep-supervision heads (out2.*, out3.*) in both directions:
  // files exported for inference may lack them, training files carry them.
  bool ignore_deep_supervision = false;
};

struct LoadReport {
  std::vector<std::string> missing;     // in the module, not in the file
  std::vector<std::string> unexpected;  // in the file, not in the module
  std::vector<std::string> mismatched;  // "name: file [..] F16 vs model [..]"
  int64_t loaded = 0;                   // tensors copied
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string Summary() const;  // every problem, one per line
};

// Loads the reader's tensors into `module` by state-dict name (see StateDict in
// unetrpp.h). Floating tensors of any file dtype are converted to the
// parameter's dtype; each tensor is copied once, from the mapping into place.
// With strict options any problem fails the load and nothing is guaranteed
// about partially copied weights (reload or discard the module).
Status LoadWeights(torch::nn::Module& module, const SafetensorsReader& reader, const LoadOptions& options,
                   LoadReport* report = nullptr);

}  // namespace upp::model

#endif  // UPP_MODEL_WEIGHTS_H_
