// flextron: one binary, one subcommand per stage. Errors are one line on stderr, exit code 1.
#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <CLI/CLI.hpp>

#include "commands.h"
#include "core/error.h"
#include "core/suggest.h"
#include "number_options.h"
#include "runtime/allocator.h"
#include "runtime/blas_kernels.h"

int main(int argc, char** argv) {
  flextron::runtime::keep_freed_memory();
  flextron::runtime::select_blas_kernels();
  CLI::App app{"flextron: one trained LLM, many nested sub-networks, any budget on demand"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "flextron 0.1.0");
  flextron::cli::register_import(app);
  flextron::cli::register_export(app);
  flextron::cli::register_generate(app);
  flextron::cli::register_info(app);
  flextron::cli::register_tokenizer(app);
  flextron::cli::register_pretrain(app);
  flextron::cli::register_perplexity(app);
  flextron::cli::register_space(app);
  flextron::cli::register_rank(app);
  flextron::cli::register_extract(app);
  flextron::cli::register_train_elastic(app);
  flextron::cli::register_launch(app);
  flextron::cli::register_profile(app);
  flextron::cli::register_train_router(app);
  flextron::cli::register_convert(app);
  flextron::cli::register_eval(app);
  flextron::cli::register_make_task(app);
  flextron::cli::register_serve(app);
  flextron::cli::register_bench(app);
  flextron::cli::register_quantize(app);
  flextron::cli::register_sample_corpus(app);
  flextron::cli::check_every_number(app);
  // The first word that is not an option names the command; CLI11 alone would report a typo as
  // "A subcommand is required".
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') continue;
    std::vector<std::string> names;
    for (const auto* sub : app.get_subcommands([](CLI::App*) { return true; }))
      names.push_back(sub->get_name());
    if (std::find(names.begin(), names.end(), word) == names.end()) {
      std::cerr << "flextron: error: " << flextron::unknown_name_message("command", word, names)
                << " (flextron --help lists them)\n";
      return 1;
    }
    break;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // One line as every other error, naming the option ("--tokens: 0 is not a positive number").
    std::cerr << "flextron: error: " << e.what() << " (--help lists the options)\n";
    return 1;
  } catch (const flextron::Error& e) {
    std::cerr << "flextron: error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    // LibTorch messages carry a C++ backtrace; the first line is the useful part.
    std::string message = e.what_without_backtrace();
    std::cerr << "flextron: error: " << message.substr(0, message.find('\n')) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "flextron: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
