#include "train/elastic_training.h"

#include <cmath>
#include <cstdio>
#include <random>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/files.h"
#include "io/model_dir.h"
#include "runtime/threads.h"
#include "train/trainer.h"

namespace flextron::train {

namespace fs = std::filesystem;

ArchSampling parse_arch_sampling(const std::string& name) {
  if (name == "random") return ArchSampling::Random;
  if (name == "sandwich") return ArchSampling::Sandwich;
  fail("--sampling", "unknown sampling \"" + name + "\" (use random or sandwich)");
}

namespace {

model::Architecture smallest(const model::ElasticSpace& space) {
  model::Architecture arch;
  for (size_t l = 0; l < space.mlp.size(); ++l)
    arch.push_back({space.mlp[l].front(), space.kv_groups[l].front()});
  return arch;
}

model::Architecture largest(const model::ElasticSpace& space) {
  model::Architecture arch;
  for (size_t l = 0; l < space.mlp.size(); ++l)
    arch.push_back({space.mlp[l].back(), space.kv_groups[l].back()});
  return arch;
}

// The allowed width closest to half the full width.
int64_t nearest_half(const std::vector<int64_t>& widths) {
  const double half = 0.5 * static_cast<double>(widths.back());
  int64_t best = widths.back();
  for (int64_t w : widths)
    if (std::abs(static_cast<double>(w) - half) < std::abs(static_cast<double>(best) - half))
      best = w;
  return best;
}

}  // namespace

std::vector<model::Architecture> sample_architectures(const model::ElasticSpace& space,
                                                      ArchSampling sampling, double p_full,
                                                      uint64_t seed, int64_t step) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(step) + 1);
  auto random_arch = [&] {
    model::Architecture arch;
    for (size_t l = 0; l < space.mlp.size(); ++l) {
      const auto& m = space.mlp[l];
      const auto& k = space.kv_groups[l];
      const int64_t mlp = m[rng() % m.size()];
      arch.push_back({mlp, k[rng() % k.size()]});
    }
    return arch;
  };
  if (sampling == ArchSampling::Sandwich) return {largest(space), smallest(space), random_arch()};
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  if (coin(rng) < p_full) return {largest(space)};
  return {random_arch()};
}

std::vector<ProbeArchitecture> probe_architectures(const model::ElasticSpace& space) {
  model::Architecture half;
  for (size_t l = 0; l < space.mlp.size(); ++l)
    half.push_back({nearest_half(space.mlp[l]), nearest_half(space.kv_groups[l])});
  return {{"smallest", smallest(space)}, {"half", half}, {"full", largest(space)}};
}

torch::Tensor distillation_loss(const torch::Tensor& student_logits,
                                const torch::Tensor& teacher_logits) {
  const auto type = student_logits.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto log_s = torch::log_softmax(student_logits.to(type), -1);
  auto log_t = torch::log_softmax(teacher_logits.to(type), -1);
  // KL(t || s) = sum_v p_t(v) (log p_t(v) - log p_s(v)), averaged over positions.
  return (log_t.exp() * (log_t - log_s)).sum(-1).mean();
}

int64_t base_pretraining_tokens(const nlohmann::json& training) {
  for (const char* key : {"base_pretraining_tokens", "tokens"})
    if (training.contains(key) && training[key].is_number_integer())
      return training[key].get<int64_t>();
  return 0;
}

ElasticTrainResult train_elastic(const ElasticTrainOptions& o) {
  if (o.out.empty()) fail("--out", "an output directory is required");
  if (o.tokens > 0 && o.token_fraction != 0.0)
    fail("--token-fraction", "give either --tokens or --token-fraction, not both");
  if (o.token_fraction != 0.0 && !(o.token_fraction > 0.0 && o.token_fraction <= 10.0))
    fail("--token-fraction", std::to_string(o.token_fraction) + " outside (0, 10]");
  if (!(o.p_full >= 0.0 && o.p_full <= 1.0))
    fail("--p-full", std::to_string(o.p_full) + " outside [0, 1]");
  if (!(o.distill_weight >= 0.0 && o.distill_weight <= 1.0))
    fail("--distill-weight", std::to_string(o.distill_weight) + " outside [0, 1]");
  if (o.batch < 1 || o.seq_len < 1) fail("--batch/--seq-len", "must be positive");
  const int threads = runtime::use_threads(o.threads);

  io::LoadOptions load;
  load.dtype = o.dtype;
  auto loaded = io::load_model_dir(o.model, load);
  if (!loaded.tokenizer) fail(o.model.string(), "no tokenizer in this model directory");
  auto& m = loaded.model;
  const auto& config = m->config();
  if (o.seq_len > config.max_position_embeddings)
    fail("--seq-len", std::to_string(o.seq_len) + " exceeds the model's context " +
                          std::to_string(config.max_position_embeddings));

  // Token budget: absolute, or a fraction of what the base model was pretrained on.
  int64_t tokens = o.tokens;
  nlohmann::json base_training = nlohmann::json::object();
  if (fs::exists(o.model / "training.json"))
    base_training = io::read_json_file(o.model / "training.json");
  if (o.token_fraction > 0.0) {
    const int64_t base = base_pretraining_tokens(base_training);
    if (base <= 0)
      fail((o.model / "training.json").string(),
           "--token-fraction needs the base model's pretraining token count here (pass --tokens "
           "instead)");
    tokens = static_cast<int64_t>(std::llround(o.token_fraction * static_cast<double>(base)));
  }
  if (tokens <= 0) fail("--tokens", "give a token budget with --tokens or --token-fraction");

  const auto dist = distributed_settings_from_env();
  if (o.batch % dist.world_size != 0)
    fail("--batch", std::to_string(o.batch) + " sequences per step cannot be split evenly over " +
                        std::to_string(dist.world_size) + " processes");
  std::unique_ptr<DataParallel> parallel;
  if (dist.world_size > 1) parallel = std::make_unique<DataParallel>(dist, m->device());
  const bool main_process = !parallel || parallel->is_main();
  const int64_t local_batch = o.batch / dist.world_size;
  const int64_t per_step = o.batch * o.seq_len;
  if (tokens < per_step)
    fail("--tokens", "budget of " + std::to_string(tokens) + " tokens is smaller than one step (" +
                         std::to_string(per_step) + ")");
  const int64_t total_steps = tokens / per_step;

  if (!loaded.space.ranked && main_process)
    std::fprintf(stderr,
                 "warning: %s is not ranked by importance, so its sub-networks are arbitrary "
                 "subsets; run `flextron rank --model %s --data TEXT --out RANKED` first\n",
                 o.model.string().c_str(), o.model.string().c_str());
  if (main_process) check_resume(o.out, o.resume);
  if (parallel) parallel->barrier();  // nobody starts while rank 0 may still fail
  fs::create_directories(o.out);

  // The teacher: frozen, the starting model by default.
  model::Transformer teacher{nullptr};
  if (o.distill) {
    io::LoadOptions options;
    options.with_tokenizer = false;
    options.dtype = o.dtype;
    const fs::path teacher_dir = o.teacher.empty() ? o.model : o.teacher;
    teacher = io::load_model_dir(teacher_dir, options).model;
    if (teacher->config().vocab_size != config.vocab_size)
      fail(teacher_dir.string(), "teacher vocabulary has " +
                                     std::to_string(teacher->config().vocab_size) +
                                     " tokens, the student's " + std::to_string(config.vocab_size));
    for (auto& p : teacher->parameters()) p.requires_grad_(false);
  }

  // Rank 0 tokenizes into the shared cache first; the others then read it.
  const fs::path tokenizer_file = o.model / loaded.tokenizer->file_name();
  if (parallel && !main_process) parallel->barrier();
  const auto data = load_training_data(o.data, o.val, *loaded.tokenizer, tokenizer_file,
                                       o.out / "cache", o.seq_len, o.eval_windows, o.seed);
  if (parallel && main_process) parallel->barrier();

  auto optimizer = make_adamw(*m, o.lr, o.weight_decay);
  if (parallel) parallel->broadcast(m->parameters());  // identical start on every rank
  const auto probes = probe_architectures(loaded.space);
  if (main_process)
    std::fprintf(stderr,
                 "elastic training %s: %lld parameters, %lld steps x %lld tokens = %lld tokens, "
                 "sampling %s%s, %d process%s x %d threads\n",
                 o.model.string().c_str(), static_cast<long long>(m->parameter_count()),
                 static_cast<long long>(total_steps), static_cast<long long>(per_step),
                 static_cast<long long>(total_steps * per_step),
                 o.sampling == ArchSampling::Sandwich ? "sandwich" : "random",
                 o.distill ? ", distillation" : "", dist.world_size,
                 dist.world_size > 1 ? "es" : "", threads);

  LoopSettings loop;
  loop.out = o.out;
  loop.total_steps = total_steps;
  loop.tokens_per_step = per_step;
  loop.peak_lr = o.lr;
  loop.warmup_steps = std::max<int64_t>(1, total_steps / 20);
  loop.checkpoint_every =
      o.checkpoint_every > 0 ? o.checkpoint_every : std::max<int64_t>(1, total_steps / 10);
  loop.eval_every = o.eval_every > 0 ? o.eval_every : std::max<int64_t>(1, total_steps / 10);
  loop.stop_after_steps = o.stop_after_steps;
  loop.resume = o.resume;
  loop.identity = {{"kind", "elastic"}, {"seed", o.seed},       {"total_steps", total_steps},
                   {"batch", o.batch},  {"seq_len", o.seq_len}, {"world_size", dist.world_size}};

  LoopHooks hooks;
  hooks.accumulate_gradients = [&](int64_t step) {
    auto batch = sample_batch(*data.train, data.split.train, o.batch, o.seq_len, o.seed, step);
    const int64_t first = parallel ? parallel->rank() * local_batch : 0;
    auto inputs = batch.inputs.narrow(0, first, local_batch).to(m->device());
    auto targets = batch.targets.narrow(0, first, local_batch).to(m->device()).reshape({-1});
    torch::Tensor teacher_logits;
    if (teacher) {
      torch::NoGradGuard no_grad;
      teacher_logits = teacher->forward(inputs);
    }
    const auto archs = sample_architectures(loaded.space, o.sampling, o.p_full, o.seed, step);
    double reported = 0.0;
    for (const auto& arch : archs) {
      auto logits = m->forward(inputs, nullptr, &arch);
      auto loss =
          torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), targets);
      if (teacher)
        loss = o.distill_weight * distillation_loss(logits, teacher_logits) +
               (1.0 - o.distill_weight) * loss;
      loss.backward();  // sandwich: gradients of the sampled architectures add up
      reported += loss.item<double>() / static_cast<double>(archs.size());
    }
    return reported;
  };
  hooks.evaluate = [&](int64_t) {
    nlohmann::json fields;
    for (const auto& probe : probes)
      fields["val_loss_" + probe.name] = validation_loss(*m, data.val_source(), data.val_windows,
                                                         o.seq_len, local_batch, probe.arch);
    fields["val_loss"] = fields["val_loss_full"];
    return fields;
  };
  const auto r = run_training_loop(*m, *optimizer, loop, hooks, parallel.get());
  ElasticTrainResult result;
  result.steps = r.steps;
  if (!r.completed) return result;
  result.completed = true;
  result.tokens = total_steps * per_step;
  result.tokens_per_second = r.tokens_per_second;
  if (main_process) {
    m->to(torch::kFloat);  // checkpoints are float32 whatever the training precision
    io::save_model_dir(o.out, *m, loaded.tokenizer.get(), &loaded.space);
    const int64_t base_tokens = base_pretraining_tokens(base_training);
    nlohmann::json training = {
        {"kind", "elastic"},
        {"tokens", result.tokens},
        {"steps", total_steps},
        {"tokens_per_step", per_step},
        {"base_pretraining_tokens", base_tokens},
        {"fraction_of_pretraining",
         base_tokens > 0 ? static_cast<double>(result.tokens) / static_cast<double>(base_tokens)
                         : 0.0},
        {"sampling", o.sampling == ArchSampling::Sandwich ? "sandwich" : "random"},
        {"p_full", o.p_full},
        {"distill", o.distill},
        {"distill_weight", o.distill_weight},
        {"seed", o.seed},
        {"peak_lr", o.lr},
        {"world_size", dist.world_size},
        {"tokens_per_second", r.tokens_per_second},
        {"final_train_loss", r.final_train_loss},
        {"final_eval", r.final_eval},
        {"base_training", base_training},
        {"data", data.train->manifest()}};
    io::write_text_atomically(o.out / "training.json", training.dump(2) + "\n");
    fs::remove_all(o.out / "checkpoint");
    std::fprintf(stderr,
                 "done: %lld tokens; validation loss smallest %.4f, half %.4f, full %.4f; "
                 "model in %s\n",
                 static_cast<long long>(result.tokens),
                 r.final_eval.value("val_loss_smallest", std::nan("")),
                 r.final_eval.value("val_loss_half", std::nan("")),
                 r.final_eval.value("val_loss_full", std::nan("")), o.out.string().c_str());
  }
  if (parallel) parallel->barrier();
  return result;
}

}  // namespace flextron::train
