// The stories260K reference model (../shared/data/stories260K) loaded for tests, and sequences
// sampled from it: in-distribution text for calibration and held-out evaluation, since its
// training corpus (TinyStories) is not part of the shared data.
#pragma once

#include <torch/torch.h>

#include "io/llama2c_checkpoint.h"
#include "model/transformer.h"
#include "test_util.h"

namespace flextron::testing {

inline model::Transformer load_stories260k() {
  auto ck = io::read_llama2c_checkpoint(shared_data() / "stories260K/stories260K.bin");
  model::Transformer m(ck.config);
  m->load_state(ck.tensors, "stories260K.bin");
  m->eval();
  return m;
}

// `count` sequences of `length` tokens: BOS, then tokens sampled at temperature 1 (seeded).
inline torch::Tensor sample_sequences(model::TransformerImpl& m, int64_t count, int64_t length,
                                      uint64_t seed) {
  c10::InferenceMode guard;
  torch::manual_seed(seed);
  auto cache = m.make_cache(count, length);
  auto tokens = torch::full({count, 1}, m.config().bos_token_id, torch::kLong);
  std::vector<torch::Tensor> columns{tokens};
  while (static_cast<int64_t>(columns.size()) < length) {
    auto logits = m.forward(columns.back(), &cache).select(1, 0);
    columns.push_back(torch::multinomial(torch::softmax(logits, -1), 1));
  }
  return torch::cat(columns, 1);
}

}  // namespace flextron::testing
