// The flextron CLI: each subcommand lives in its own file and registers itself here.
#pragma once

#include <CLI/CLI.hpp>

namespace flextron::cli {

void register_import(CLI::App& app);
void register_export(CLI::App& app);
void register_generate(CLI::App& app);
void register_info(CLI::App& app);
void register_tokenizer(CLI::App& app);
void register_pretrain(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_space(CLI::App& app);
void register_rank(CLI::App& app);
void register_extract(CLI::App& app);
void register_train_elastic(CLI::App& app);
void register_launch(CLI::App& app);
void register_profile(CLI::App& app);
void register_train_router(CLI::App& app);
void register_convert(CLI::App& app);
void register_eval(CLI::App& app);
void register_make_task(CLI::App& app);
void register_serve(CLI::App& app);
void register_bench(CLI::App& app);
void register_quantize(CLI::App& app);
void register_sample_corpus(CLI::App& app);

}  // namespace flextron::cli
