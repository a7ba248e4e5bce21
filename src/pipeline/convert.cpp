#include "pipeline/convert.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/files.h"
#include "route/profile_model.h"
#include "route/router_file.h"
#include "route/router_pipeline.h"
#include "train/checkpoint.h"
#include "train/elastic_training.h"
#include "train/progress.h"
#include "train/rank_model.h"

namespace flextron::pipeline {

namespace fs = std::filesystem;

namespace {

// What one stage ran with, what it produced and what it cost.
struct StageOutcome {
  int64_t tokens_trained = 0;  // through forward and backward passes
  int64_t tokens_read = 0;     // forward only (calibration, surrogate measurements)
  nlohmann::json details = nlohmann::json::object();
};

struct Stage {
  std::string name;
  std::string what;
  nlohmann::json settings;  // a change reruns this stage and every later one
  std::function<StageOutcome(const fs::path& dir)> run;
};

std::vector<std::string> path_strings(const std::vector<fs::path>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) out.push_back(p.string());
  return out;
}

int64_t base_pretraining_tokens(const fs::path& model) {
  const auto file = model / "training.json";
  return fs::exists(file) ? train::base_pretraining_tokens(io::read_json_file(file)) : 0;
}

// The finished model directory: every regular file of the last stage, hard-linked (copied where
// links are not possible) into `out`.
void publish(const fs::path& stage_dir, const fs::path& out) {
  for (const auto& entry : fs::directory_iterator(stage_dir)) {
    if (!entry.is_regular_file()) continue;
    const auto target = out / entry.path().filename();
    fs::remove(target);
    std::error_code linked;
    fs::create_hard_link(entry.path(), target, linked);
    if (linked) fs::copy_file(entry.path(), target);
  }
}

}  // namespace

nlohmann::json convert(const ConvertOptions& o) {
  if (o.out.empty()) fail("--out", "an output directory is required");
  const bool self_distill = o.self_distill.tokens > 0;
  if (o.data.empty() && !self_distill)
    fail("--data", "at least one training text file is required (or --self-distill N)");
  if (!fs::is_directory(o.model)) fail(o.model.string(), "not a model directory (--model)");
  if (fs::exists(o.out) && fs::equivalent(o.out, o.model))
    fail("--out", "must differ from --model (the base model is read, not modified)");
  if (!(o.joint_share >= 0.0 && o.joint_share < 1.0))
    fail("--joint-share", std::to_string(o.joint_share) + " outside [0, 1)");
  for (const auto& f : o.data)
    if (!fs::is_regular_file(f)) fail(f.string(), "no such file (--data)");
  for (const auto& f : o.val)
    if (!fs::is_regular_file(f)) fail(f.string(), "no such file (--val)");

  // The token budget: given, or a fraction of what the base was pretrained on.
  const int64_t base_tokens = base_pretraining_tokens(o.model);
  int64_t budget = o.tokens;
  if (budget <= 0) {
    if (base_tokens <= 0)
      fail((o.model / "training.json").string(),
           "--token-fraction needs the base model's pretraining token count here (pass --tokens "
           "instead)");
    if (!(o.token_fraction > 0.0 && o.token_fraction <= 10.0))
      fail("--token-fraction", std::to_string(o.token_fraction) + " outside (0, 10]");
    budget = std::llround(o.token_fraction * static_cast<double>(base_tokens));
  }
  const auto joint_tokens =
      static_cast<int64_t>(std::llround(o.joint_share * static_cast<double>(budget)));
  const int64_t elastic_tokens = budget - joint_tokens;
  if (elastic_tokens < o.batch * o.seq_len)
    fail("--tokens", "a budget of " + std::to_string(budget) +
                         " tokens leaves less than one elastic-training step of " +
                         std::to_string(o.batch * o.seq_len));

  const fs::path stages_dir = o.out / "stages";
  // Every stage after sampling trains and measures on `data`: the given files, then the corpus.
  const fs::path corpus = stages_dir / "sample" / "corpus.txt";
  std::vector<fs::path> data = o.data;
  if (self_distill) data.push_back(corpus);
  // Held out from the base's own distribution too: a second sample with another seed (a split of
  // a small corpus would leave no validation window), unless --val is given.
  const fs::path heldout = stages_dir / "sample" / "heldout.txt";
  std::vector<fs::path> val = o.val;
  if (self_distill && val.empty()) val.push_back(heldout);
  const fs::path ranked = stages_dir / "rank", elastic = stages_dir / "elastic",
                 routed = stages_dir / "routers";
  auto router_options = [&](const fs::path& model, const fs::path& out) {
    route::RouterPipelineOptions r;
    r.model = model;
    r.out = out;
    r.data = data;
    r.val = val;
    r.budgets = o.budgets;
    r.router_steps = o.router_steps;
    r.surrogate_samples = o.surrogate_samples;
    r.dynamic_steps = o.dynamic_steps;
    r.seq_len = o.seq_len;
    r.batch = o.router_batch;
    r.seed = o.seed;
    r.threads = o.threads;
    return r;
  };

  const fs::path profile_file = stages_dir / "profile" / route::kLatencyFile;
  auto load_profile = [&] {
    return route::latency_table_from_json(io::read_json_file(profile_file), profile_file.string());
  };

  std::vector<Stage> stages;
  SampleCorpusOptions sampling = o.self_distill;
  sampling.model = o.model;
  sampling.out = corpus;
  sampling.seed = o.seed;
  sampling.threads = o.threads;
  // 1/20 of the corpus, and at least 16 validation windows.
  SampleCorpusOptions heldout_sampling = sampling;
  heldout_sampling.out = heldout;
  heldout_sampling.seed = sampling.seed ^ 0x5eed0ffULL;
  heldout_sampling.tokens = std::max<int64_t>(sampling.tokens / 20, 16 * (o.seq_len + 1));
  if (self_distill)
    stages.push_back({"sample",
                      "self-distillation corpus",
                      {{"tokens", sampling.tokens},
                       {"temperature", sampling.temperature},
                       {"top_p", sampling.top_p},
                       {"prompts", path_strings(sampling.prompts)},
                       {"max_length", sampling.max_length},
                       {"batch", sampling.batch},
                       {"seed", sampling.seed},
                       {"heldout", o.val.empty() ? heldout_sampling.tokens : 0}},
                      [&](const fs::path& dir) {
                        fs::create_directories(dir);
                        const auto r = sample_corpus(sampling);
                        if (!r.completed) fail("convert", "corpus sampling stopped early");
                        StageOutcome outcome;
                        outcome.tokens_read = r.tokens;  // generated: forward passes only
                        outcome.details = r.provenance;
                        outcome.details["tokens_per_second"] = r.tokens_per_second;
                        if (o.val.empty()) {
                          const auto h = sample_corpus(heldout_sampling);
                          if (!h.completed) fail("convert", "held-out sampling stopped early");
                          outcome.tokens_read += h.tokens;
                          outcome.details["heldout"] = h.provenance;
                          outcome.details["heldout_tokens"] = h.tokens;
                        }
                        return outcome;
                      }});
  stages.push_back({"rank",
                    "importance ranking",
                    {{"model", fs::absolute(o.model).string()},
                     {"calibration", data.front().string()},
                     {"samples", o.rank_samples},
                     {"seq_len", o.seq_len}},
                    [&](const fs::path& dir) {
                      train::RankModelOptions r;
                      r.model = o.model;
                      r.data = data.front();
                      r.out = dir;
                      r.samples = o.rank_samples;
                      r.seq_len = o.seq_len;
                      const auto result = train::rank_model_dir(r);
                      StageOutcome outcome;
                      outcome.tokens_read =
                          result.ranked.scores.sequences * result.ranked.scores.seq_len;
                      return outcome;
                    }});
  stages.push_back({"elastic",
                    "elastic continued training",
                    {{"data", path_strings(data)},
                     {"val", path_strings(val)},
                     {"distill", self_distill ? "kl from the base" : "none"},
                     {"tokens", elastic_tokens},
                     {"seq_len", o.seq_len},
                     {"batch", o.batch},
                     {"sampling", o.sampling},
                     {"seed", o.seed}},
                    [&](const fs::path& dir) {
                      train::ElasticTrainOptions e;
                      e.model = ranked;
                      e.data = data;
                      // On the base's own samples the target is its whole distribution, not
                      // the one token drawn from it: KL only (the teacher is the ranked base,
                      // the same function as the base).
                      e.distill = self_distill;
                      e.distill_weight = 1.0;
                      e.val = val;
                      e.out = dir;
                      e.tokens = elastic_tokens;
                      e.sampling = train::parse_arch_sampling(o.sampling);
                      e.seq_len = o.seq_len;
                      e.batch = o.batch;
                      e.seed = o.seed;
                      e.threads = o.threads;
                      e.resume = train::find_checkpoint(dir).has_value();
                      const auto r = train::train_elastic(e);
                      if (!r.completed) fail("convert", "elastic training stopped early");
                      StageOutcome outcome;
                      outcome.tokens_trained = r.tokens;
                      return outcome;
                    }});
  stages.push_back(
      {"profile",
       "latency profile",
       {{"method", "entries + weight bytes, interleaved rounds"},  // what the fit regresses on
        {"runtime", "auto"},  // the serving runtime calibrates the table
        {"contexts", o.profile.contexts},
        {"repeats", o.profile.repeats},
        {"check", o.profile_check}},
       [&](const fs::path& dir) {
         route::ProfileModelOptions p;
         p.model = elastic;
         p.out = dir / route::kLatencyFile;
         p.profile = o.profile;
         p.check = o.profile_check;
         fs::create_directories(dir);
         const auto j = route::profile_model_dir(p);
         StageOutcome outcome;
         if (j.contains("check"))
           outcome.details["median_relative_error"] = j["check"]["median_relative_error"];
         return outcome;
       }});
  stages.push_back(
      {"routers",
       "surrogate, static and dynamic routers",
       {{"budgets", o.budgets.empty() ? nlohmann::json("auto") : nlohmann::json(o.budgets)},
        {"router_steps", o.router_steps},
        {"surrogate_samples", o.surrogate_samples},
        {"dynamic_steps", o.dynamic_steps},
        {"batch", o.router_batch},
        {"seed", o.seed}},
       [&](const fs::path& dir) {
         auto r = router_options(elastic, dir);
         r.latency = profile_file;
         if (o.budgets.empty()) r.budgets = route::feasible_budget_grid(load_profile());
         r.dynamic = true;
         const auto report = route::train_routers(r);
         StageOutcome outcome;
         outcome.tokens_trained = o.dynamic_steps * o.router_batch * o.seq_len;
         outcome.tokens_read =
             report.value("architectures_measured", int64_t{0}) * r.eval_windows * o.seq_len;
         outcome.details["surrogate_heldout_spearman"] =
             report.value("surrogate_heldout_spearman", 0.0);
         return outcome;
       }});
  if (joint_tokens > 0)
    stages.push_back({"joint",
                      "joint fine-tune of model and routers",
                      {{"tokens", joint_tokens}, {"batch", o.router_batch}},
                      [&](const fs::path& dir) {
                        auto r = router_options(routed, dir);
                        r.reuse = true;
                        r.joint = true;
                        r.joint_tokens = joint_tokens;
                        const auto report = route::train_routers(r);
                        StageOutcome outcome;
                        outcome.tokens_trained = report["joint"].value("tokens", int64_t{0});
                        return outcome;
                      }});

  // The record of earlier runs.
  fs::create_directories(stages_dir);
  const fs::path record_file = o.out / kConvertFile;
  nlohmann::json record =
      fs::exists(record_file) ? io::read_json_file(record_file) : nlohmann::json::object();
  if (!record.is_object() || record.value("format", "flextron-convert") != "flextron-convert")
    fail(record_file.string(), "not a flextron convert record");
  record["format"] = "flextron-convert";
  record["base_model"] = fs::absolute(o.model).string();
  record["base_pretraining_tokens"] = base_tokens;
  record["token_budget"] = budget;
  if (!record.contains("stages")) record["stages"] = nlohmann::json::object();
  record["data"] = path_strings(o.data);
  if (self_distill) {
    record["self_distill_tokens"] = o.self_distill.tokens;
  } else {
    record.erase("self_distill_tokens");
    record["stages"].erase("sample");
  }
  auto save_record = [&] {
    io::write_text_atomically(record_file, record.dump(2) + "\n");
  };

  const auto started = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return train::format_duration(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  };
  bool rerun_rest = false;
  const int total = static_cast<int>(stages.size());
  for (int i = 0; i < total; ++i) {
    // Stages print tables on stdout and progress on stderr: keep them in order in a log file.
    std::fflush(stdout);
    const auto& stage = stages[i];
    const fs::path dir = stages_dir / stage.name;
    auto& entry = record["stages"][stage.name];
    const bool same =
        entry.is_object() && entry.value("settings", nlohmann::json()) == stage.settings;
    if (!rerun_rest && same && entry.value("done", false) && fs::is_directory(dir)) {
      std::fprintf(stderr, "[convert %d/%d] %s: cached (%s)\n", i + 1, total, stage.what.c_str(),
                   dir.c_str());
      continue;
    }
    // Changed settings, or an earlier stage ran again: start this one over. An unfinished stage
    // with the same settings keeps its directory (elastic training resumes from its checkpoint).
    if (!same || rerun_rest) fs::remove_all(dir);
    rerun_rest = true;
    entry = {{"settings", stage.settings}, {"done", false}};
    save_record();
    std::fprintf(stderr, "[convert %d/%d] %s -> %s (pipeline %s elapsed)\n", i + 1, total,
                 stage.what.c_str(), dir.c_str(), elapsed().c_str());
    const auto stage_start = std::chrono::steady_clock::now();
    const auto outcome = stage.run(dir);
    entry["done"] = true;
    entry["seconds"] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - stage_start).count();
    entry["tokens_trained"] = outcome.tokens_trained;
    entry["tokens_read"] = outcome.tokens_read;
    entry["details"] = outcome.details;
    save_record();
    if (o.stop_after_stage > 0 && i + 1 >= o.stop_after_stage && i + 1 < total) {
      std::fprintf(stderr, "[convert] stopping after stage %d as asked\n", i + 1);
      return record;
    }
  }
  // Stages of an earlier, longer pipeline (joint share now 0) are not part of this result.
  if (joint_tokens == 0) record["stages"].erase("joint");

  publish(stages_dir / stages.back().name, o.out);
  record["smallest_latency_fraction"] = route::smallest_latency_fraction(load_profile());
  record["budgets"] = io::read_json_file(o.out / route::kRouterFile).at("budgets");
  int64_t trained = 0, read = 0;
  double seconds = 0.0;
  std::printf("%-9s %-12s %-12s %-10s %s\n", "stage", "trained", "read", "time", "output");
  for (const auto& stage : stages) {
    const auto& e = record["stages"][stage.name];
    trained += e.value("tokens_trained", int64_t{0});
    read += e.value("tokens_read", int64_t{0});
    seconds += e.value("seconds", 0.0);
    std::printf("%-9s %-12lld %-12lld %-10s %s\n", stage.name.c_str(),
                static_cast<long long>(e.value("tokens_trained", int64_t{0})),
                static_cast<long long>(e.value("tokens_read", int64_t{0})),
                train::format_duration(e.value("seconds", 0.0)).c_str(),
                (stages_dir / stage.name).c_str());
  }
  // The LLM's weights learn in the elastic and joint stages; the router stage sends tokens
  // forward and backward through the frozen LLM to train the routers alone.
  const int64_t llm =
      record["stages"]["elastic"].value("tokens_trained", int64_t{0}) +
      (joint_tokens > 0 ? record["stages"]["joint"].value("tokens_trained", int64_t{0}) : 0);
  auto fraction = [&](int64_t tokens) {
    return base_tokens > 0 ? static_cast<double>(tokens) / static_cast<double>(base_tokens) : 0.0;
  };
  record["tokens_trained"] = trained;
  record["llm_tokens"] = llm;
  record["router_tokens"] = trained - llm;
  record["tokens_read"] = read;
  record["seconds"] = seconds;
  record["fraction_of_pretraining"] = fraction(llm);
  record["fraction_of_pretraining_all_passes"] = fraction(trained);
  record["done"] = true;
  save_record();
  if (base_tokens > 0)
    std::printf(
        "LLM trained on %lld tokens = %.2f%% of the base's %lld pretraining tokens; with the "
        "routers' passes %lld = %.2f%%; %s in all\n",
        static_cast<long long>(llm), 100.0 * fraction(llm), static_cast<long long>(base_tokens),
        static_cast<long long>(trained), 100.0 * fraction(trained),
        train::format_duration(seconds).c_str());
  std::printf("Flextron model: %s (generate/perplexity/eval --model %s --budget ...)\n",
              o.out.c_str(), o.out.c_str());
  return record;
}

}  // namespace flextron::pipeline
