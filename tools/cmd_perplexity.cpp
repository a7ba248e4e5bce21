// flextron perplexity: mean NLL, perplexity and bits per byte of a model on a text file.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "arch_options.h"
#include "commands.h"
#include "core/error.h"
#include "device_options.h"
#include "eval/perplexity.h"
#include "io/model_dir.h"
#include "number_options.h"
#include "text/utf8.h"

namespace flextron::cli {

namespace {
struct PerplexityArgs {
  std::string model;
  std::string data;
  eval::PerplexityOptions options;
  bool json = false;
  DeviceArgs device;
  ArchArgs arch;
};

void run_perplexity(const PerplexityArgs& a) {
  const std::string text = text::read_utf8_file(a.data);
  auto loaded = io::load_model_dir(a.model, a.device.load_options());
  if (!loaded.tokenizer) fail(a.model, "no tokenizer in this model directory");
  const auto tokens = loaded.tokenizer->encode(text, /*add_bos=*/true);
  auto options = a.options;
  auto selection = a.arch.resolve(loaded, a.model);
  options.arch = selection.arch;
  options.router = selection.router();
  const auto r = eval::perplexity(*loaded.model, *loaded.tokenizer, tokens, options);
  nlohmann::json j = {
      {"model", a.model},
      {"data", a.data},
      {"convention", r.convention},
      {"ctx", r.ctx},
      {"stride", r.stride},
      {"windows", r.windows},
      {"tokens_scored", r.tokens_scored},
      {"bytes_scored", r.bytes_scored},
      {"mean_nll", r.mean_nll()},
      {"perplexity", r.perplexity()},
      {"bits_per_byte", r.bits_per_byte()},
      {"architecture", model::describe_architecture(options.arch, loaded.model->config())},
      {"selection", selection.to_json(loaded.model->config())}};
  if (a.json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("architecture   %s\n", selection.describe(loaded.model->config()).c_str());
  std::printf("convention     %s (ctx %lld%s)\n", r.convention.c_str(),
              static_cast<long long>(r.ctx),
              r.stride > 0 ? (", stride " + std::to_string(r.stride)).c_str()
                           : ", second half of each window scored");
  std::printf("tokens scored  %lld in %lld windows\n", static_cast<long long>(r.tokens_scored),
              static_cast<long long>(r.windows));
  std::printf("mean NLL       %.4f nats\n", r.mean_nll());
  std::printf("perplexity     %.4f\n", r.perplexity());
  std::printf("bits per byte  %.4f\n", r.bits_per_byte());
}
}  // namespace

void register_perplexity(CLI::App& app) {
  auto a = std::make_shared<PerplexityArgs>();
  auto* cmd =
      app.add_subcommand("perplexity", "Perplexity and bits per byte of a model on a text file");
  cmd->add_option("--model", a->model, "Model directory")->required();
  cmd->add_option("--data", a->data, "UTF-8 text file")->required();
  cmd->add_option("--ctx", a->options.ctx,
                  "Window length in tokens (default: 512, or the model's context if shorter)")
      ->check(in_range(2, 1 << 20));
  cmd->add_option("--stride", a->options.stride,
                  "Rolling windows advancing by this many tokens (default: llama.cpp convention)")
      ->check(positive());
  cmd->add_option("--batch", a->options.batch, "Windows per forward pass")
      ->check(positive())
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print JSON");
  a->device.add_to(cmd);
  a->arch.add_to(cmd);
  cmd->callback([a] { run_perplexity(*a); });
}

}  // namespace flextron::cli
