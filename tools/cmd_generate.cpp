// flextron generate: stream a completion to stdout, or print tokens, text and timings as JSON.
#include <cstdio>
#include <iostream>
#include <optional>

#include <nlohmann/json.hpp>

#include "arch_options.h"
#include "commands.h"
#include "core/error.h"
#include "device_options.h"
#include "io/files.h"
#include "io/model_dir.h"
#include "number_options.h"
#include "runtime/allocator.h"
#include "runtime/fast_generate.h"
#include "runtime/generate.h"
#include "runtime/json_constraint.h"
#include "speculative_options.h"

namespace flextron::cli {

namespace {
struct GenerateArgs {
  std::string model;
  std::string prompt;
  int64_t max_tokens = 256;
  runtime::SamplingOptions sampling;
  bool json = false;
  DeviceArgs device;
  ArchArgs arch;
  std::string runtime = "auto";
  std::string quant = "auto";
  std::string json_schema;  // a file, or "object"
  SpeculativeArgs speculative;
};

// --json-schema: the output constrained to a JSON Schema file's values, or to any object.
std::shared_ptr<const runtime::TokenConstraint> output_constraint(
    const GenerateArgs& a, const text::Tokenizer& tokenizer) {
  std::shared_ptr<const runtime::JsonGrammar> grammar;
  if (a.json_schema == "object") {
    grammar = runtime::JsonGrammar::any_object();
  } else {
    const auto schema = nlohmann::json::parse(io::read_file(a.json_schema), nullptr, false);
    if (schema.is_discarded()) fail(a.json_schema, "is not valid JSON");
    grammar = runtime::JsonGrammar::from_schema(schema, a.json_schema);
  }
  auto constraint = std::make_shared<runtime::JsonConstraint>(
      std::make_shared<runtime::VocabularyBytes>(tokenizer), grammar, "--json-schema");
  constraint->check_room(a.max_tokens, "--max-tokens");
  return constraint;
}

void run_generate(const GenerateArgs& a) {
  runtime::check_sampling_options(a.sampling);
  auto loaded = io::load_model_dir(a.model, a.device.load_options());
  if (!loaded.tokenizer)
    fail(a.model, "no tokenizer.model or tokenizer.bin in this model directory");
  runtime::GenerateOptions options;
  options.max_tokens = a.max_tokens;
  options.sampling = a.sampling;
  if (!a.json_schema.empty()) options.constraint = output_constraint(a, *loaded.tokenizer);
  auto selection = a.arch.resolve(loaded, a.model);
  options.arch = selection.arch;
  options.router = selection.router();
  const auto config = loaded.model->config();
  if (selection.plan && !a.json)
    std::fprintf(stderr, "budget: %s\n", selection.describe(config).c_str());
  std::function<void(const std::string&)> stream;
  if (!a.json) {
    stream = [](const std::string& piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    };
  }
  auto format = runtime::qk::resolve_format(a.quant, loaded.stored_weights, "--quant");
  const bool fast = runtime::use_fast_runtime(a.runtime, *loaded.model, options);
  // A quantized directory on the torch runtime runs its dequantized weights; asking for a
  // format the torch runtime does not run is an error.
  if (!fast && a.quant == "auto") format = runtime::qk::WeightFormat::F32;
  if (selection.plan && fast)
    route::check_latency_weights(a.model, runtime::qk::format_name(format));
  if (format != runtime::qk::WeightFormat::F32 && !fast)
    fail("--quant", std::string(runtime::qk::format_name(format)) +
                        " weights run on the fast runtime only (this run is on the torch runtime)");
  if (a.speculative.on && !fast)
    fail("--speculative", "runs on the fast runtime (this run is on the torch runtime)");
  runtime::GenerateResult r;
  std::optional<route::DraftChoice> draft;
  if (fast) {
    runtime::EngineOptions engine_options;
    engine_options.format = format;
    runtime::FastDecoder engine(*loaded.model, engine_options);
    if (a.speculative.on) {
      if (options.router != nullptr)
        fail("--speculative", "needs one architecture to verify with, not a dynamic router");
      draft = route::pick_draft(a.speculative.draft, a.model, *loaded.model, loaded.space, engine,
                                *loaded.tokenizer, options.arch, a.speculative.draft_tokens);
      options.speculative = {draft->chosen.arch, a.speculative.draft_tokens};
      if (!a.json) {
        std::fprintf(stderr, "draft: %s (%s)", draft->chosen.label.c_str(),
                     model::describe_architecture(draft->chosen.arch, config).c_str());
        if (!draft->trials.empty())
          std::fprintf(stderr, ", the fastest of %zu measured in %.1f s", draft->trials.size(),
                       draft->seconds);
        std::fprintf(stderr, "\n");
      }
    }
    // The engine holds every weight it reads; the model's own o and down would stay resident
    // beside their transposed copies, and the heap would keep the load's file buffers. A
    // dynamic router's prompt is prefilled by the model's forward, so it stays then.
    if (options.router == nullptr) {
      loaded.model = nullptr;
      runtime::release_freed_memory();
    }
    r = runtime::generate_fast(engine, *loaded.tokenizer, a.prompt, options,
                               options.router != nullptr ? loaded.model.get() : nullptr, stream);
  } else {
    r = runtime::generate(*loaded.model, *loaded.tokenizer, a.prompt, options, stream);
  }
  if (a.json) {
    nlohmann::json j;
    j["prompt"] = a.prompt;
    j["prompt_tokens"] = r.prompt_tokens;
    j["tokens"] = r.tokens;
    j["text"] = r.text;
    j["stop_reason"] = r.stop_reason;
    j["stop_description"] = r.stop_description;
    j["runtime"] = fast ? "fast" : "torch";
    j["weights"] = runtime::qk::format_name(format);
    j["architecture"] = model::architecture_to_json(
        options.arch.empty() ? model::full_architecture(config) : options.arch);
    j["selection"] = selection.to_json(config);
    j["timings"] = {{"prefill_tokens", r.prompt_tokens.size()},
                    {"prefill_seconds", r.prefill_seconds},
                    {"prefill_tokens_per_second", r.prefill_tokens_per_second()},
                    {"decode_tokens", r.decode_tokens},
                    {"decode_seconds", r.decode_seconds},
                    {"decode_tokens_per_second", r.decode_tokens_per_second()}};
    j["timings"]["decode_passes"] = r.decode_steps;
    if (draft && r.speculative) {
      j["speculative"] = draft->to_json(config);
      j["speculative"]["acceptance_rate"] = r.speculative->acceptance_rate();
      j["speculative"]["tokens_per_round"] = r.speculative->tokens_per_round();
      j["speculative"]["rounds"] = r.speculative->rounds;
      j["speculative"]["draft_tokens"] = a.speculative.draft_tokens;
    }
    // Invalid UTF-8 (a byte piece cut mid-character) is replaced rather than aborting the dump.
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return;
  }
  std::cout << "\n" << std::flush;  // the text before the timing line on a shared terminal
  std::fprintf(
      stderr, "prefill: %zu tokens, %.1f tok/s; decode: %lld tokens, %.1f tok/s (%s runtime)\n%s\n",
      r.prompt_tokens.size(), r.prefill_tokens_per_second(),
      static_cast<long long>(r.decode_tokens), r.decode_tokens_per_second(),
      fast ? "fast" : "torch", r.stop_description.c_str());
  if (r.speculative)
    std::fprintf(
        stderr,
        "speculative: %lld rounds, %.0f%% of drafted tokens accepted, %.2f tokens a round\n",
        static_cast<long long>(r.speculative->rounds), 100.0 * r.speculative->acceptance_rate(),
        r.speculative->tokens_per_round());
}
}  // namespace

void register_generate(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt");
  cmd->add_option("--model", args->model, "Model directory")->required();
  cmd->add_option("--prompt", args->prompt, "Prompt text (empty: start from BOS)");
  cmd->add_option("--max-tokens", args->max_tokens, "New tokens to generate")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--temperature", args->sampling.temperature, "0 = greedy")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--top-p", args->sampling.top_p, "Nucleus sampling mass")
      ->check(unit_fraction())
      ->capture_default_str();
  cmd->add_option("--seed", args->sampling.seed, "Sampling seed")->capture_default_str();
  cmd->add_flag("--json", args->json, "Print tokens, text and timings as JSON");
  cmd->add_option("--json-schema", args->json_schema,
                  "Constrain the output to this JSON Schema file's values ('object': any JSON "
                  "object); see docs/serving.md, Structured output");
  args->device.add_to(cmd);
  args->arch.add_to(cmd);
  add_runtime_option(cmd, args->runtime);
  add_quant_option(cmd, args->quant);
  args->speculative.add_to(cmd);
  cmd->callback([args] { run_generate(*args); });
}

}  // namespace flextron::cli
