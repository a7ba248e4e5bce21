// flextron convert: one command from a trained LLM to a Flextron model (FLEXTRON.md sections 2-5).
//   0. sample    with self_distill.tokens > 0: the base's own text (pipeline/sample_corpus.h),
//                added to `data` (or all of it), and elastic training distills from the frozen
//                base (KL over the whole distribution) instead of fitting the sampled tokens
//   1. rank      importance ranking and permutation (train/rank_model.h)
//   2. elastic   elastic continued training on (1 - joint_share) of the token budget
//   3. profile   the latency lookup table of the elastic model on this machine
//   4. routers   surrogate, static router and dynamic router (LLM frozen)
//   5. joint     LLM and routers fine-tuned together on joint_share of the budget
// Every stage writes its own directory under out/stages/ and is recorded in out/convert.json
// with the settings it ran with. A rerun skips each stage whose record is complete and whose
// settings are unchanged (a stage with changed settings runs again, and so does every stage after
// it); an interrupted elastic stage resumes from its last checkpoint. When all stages are done,
// the last stage's files are linked into `out`, which is then a model directory like any other.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeline/sample_corpus.h"
#include "route/latency.h"

namespace flextron::pipeline {

inline constexpr const char* kConvertFile = "convert.json";

struct ConvertOptions {
  std::filesystem::path model;              // trained base model directory
  std::vector<std::filesystem::path> data;  // may be empty with self_distill
  // Self-distillation: tokens > 0 samples that many tokens of the base's text first (model, out
  // and seed are set by convert); the other fields are the sampling settings.
  SampleCorpusOptions self_distill;
  // Held-out text. Empty: 5% of data's blocks; with self_distill, a second sample of the base
  // (another seed, 1/20 of the corpus, at least 16 windows) in stages/sample/heldout.txt.
  std::vector<std::filesystem::path> val;
  std::filesystem::path out;
  int64_t tokens = 0;              // training token budget (elastic + joint); or
  double token_fraction = 0.0763;  // of the base's pretraining tokens (its training.json)
  double joint_share = 0.2;        // share of the budget for the joint fine-tune (0: no stage 5)
  // Latency fractions the routers are trained for; empty: six from the smallest reachable on
  // this machine to 1 (route::feasible_budget_grid).
  std::vector<double> budgets;
  int64_t rank_samples = 256;
  int64_t seq_len = 256;
  int64_t batch = 8;         // sequences per elastic-training step
  int64_t router_batch = 4;  // sequences per router / joint step
  std::string sampling = "random";
  route::ProfileOptions profile;
  int64_t profile_check = 8;
  int64_t router_steps = 400;
  int64_t surrogate_samples = 64;
  int64_t dynamic_steps = 100;
  uint64_t seed = 1234;
  int threads = 0;
  int stop_after_stage = 0;  // testing aid: return after this many stages, as if killed
};

// Runs (or resumes) the pipeline; returns convert.json's content. Throws flextron::Error for bad
// input, naming the option or file.
nlohmann::json convert(const ConvertOptions& options);

}  // namespace flextron::pipeline
