#include "train/presets.h"

#include "core/error.h"

namespace flextron::train {

namespace {

model::ModelConfig llama(int64_t dim, int64_t layers, int64_t heads, int64_t kv_heads,
                         int64_t hidden, int64_t vocab, int64_t context) {
  model::ModelConfig c;
  c.hidden_size = dim;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.intermediate_size = hidden;
  c.vocab_size = vocab;
  c.max_position_embeddings = context;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = true;
  return c;
}

Preset make(std::string name, std::string description, model::ModelConfig config, int64_t seq_len,
            int64_t micro_batch, int64_t accumulation, double lr, int64_t default_tokens) {
  Preset p;
  p.name = std::move(name);
  p.description = std::move(description);
  p.config = config;
  p.seq_len = seq_len;
  p.micro_batch = micro_batch;
  p.grad_accumulation = accumulation;
  p.lr = lr;
  p.default_tokens = default_tokens;
  return p;
}

}  // namespace

const std::vector<Preset>& presets() {
  // MLP widths are multiples of 16 so every elastic fraction (1/4 .. 1) stays kernel-friendly.
  // Default budgets are what 2 CPU cores train in the stated time (tiny ~3,600 tok/s, small
  // ~600 tok/s measured with LibTorch 1.13); more cores or a GPU take larger --tokens.
  static const std::vector<Preset> all = {
      make("tiny", "~1M parameters, trains in about a minute on 2 cores (tests)",
           llama(128, 4, 4, 2, 352, 1024, 256), 128, 16, 1, 3e-3, 200'000),
      make("small", "~5M parameters, 10-15 minutes on 2 cores (the embedded default)",
           llama(256, 6, 8, 4, 688, 4096, 512), 256, 8, 1, 2e-3, 480'000),
      make("medium", "~15M parameters, for more cores or a GPU",
           llama(384, 8, 6, 6, 1024, 8192, 512), 256, 32, 2, 1e-3, 300'000'000),
      make("base", "~110M parameters, for a GPU", llama(768, 12, 12, 4, 2048, 32000, 1024), 1024,
           16, 4, 6e-4, 2'000'000'000),
  };
  return all;
}

const Preset& find_preset(const std::string& name) {
  std::string known;
  for (const auto& p : presets()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  fail("--preset", "unknown preset \"" + name + "\" (known: " + known + ")");
}

}  // namespace flextron::train
