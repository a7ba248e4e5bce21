// flextron eval: quality and measured speed of an elastic model at every budget and router kind,
// beside baselines, written as a report (report.json, report.md, SVG plots; eval/report.h).
#include <cstdio>

#include "commands.h"
#include "core/error.h"
#include "core/parse.h"
#include "device_options.h"
#include "eval/budget_eval.h"
#include "eval/report.h"
#include "io/files.h"
#include "io/model_dir.h"
#include "number_options.h"
#include "route/latency.h"
#include "route/router_file.h"
#include "route/router_pipeline.h"

namespace flextron::cli {

namespace {
struct EvalArgs {
  eval::BudgetEvalOptions options;
  std::string model;
  std::string budgets;  // empty: the budgets the routers were trained for
  std::string kinds;    // empty: uniform, static, and dynamic when the model has one
  std::string ppl;
  std::string quality_targets;
  std::vector<std::string> tasks;
  std::vector<std::string> baselines;
  std::string report;
  bool json = false;
};

// Reads router.json's trained budgets and whether a dynamic router is there, if any.
std::pair<std::vector<double>, bool> trained_routers(const std::filesystem::path& dir) {
  if (!route::has_routers(dir)) return {{}, false};
  const auto j = io::read_json_file(dir / route::kRouterFile);
  return {j.value("budgets", std::vector<double>{}), j.value("dynamic", false)};
}

void run_eval(EvalArgs& a) {
  auto& o = a.options;
  o.model = a.model;
  const auto [trained, has_dynamic] = trained_routers(o.model);
  const bool profiled = std::filesystem::exists(o.model / route::kLatencyFile);
  if (!a.budgets.empty())
    o.budgets = route::parse_budget_list(a.budgets, "--budgets");
  else if (!trained.empty())
    o.budgets = trained;
  else if (!profiled)
    o.budgets.clear();  // a plain model: measured at full width only
  o.kinds.clear();
  if (a.kinds.empty()) {
    o.kinds.push_back(route::RouterKind::Uniform);
    if (!trained.empty()) o.kinds.push_back(route::RouterKind::Static);
    if (has_dynamic) o.kinds.push_back(route::RouterKind::Dynamic);
  } else {
    for (const auto& kind : split_list(a.kinds)) o.kinds.push_back(route::parse_router_kind(kind));
  }
  o.ppl = a.ppl;
  if (!a.quality_targets.empty()) o.quality_targets = split_list(a.quality_targets);
  o.tasks.assign(a.tasks.begin(), a.tasks.end());
  for (const auto& b : a.baselines) {
    // LABEL=DIR, or DIR labelled by its last path component.
    const auto eq = b.find('=');
    const std::filesystem::path dir = eq == std::string::npos ? b : b.substr(eq + 1);
    const std::string label = eq == std::string::npos
                                  ? std::filesystem::path(b).lexically_normal().filename().string()
                                  : b.substr(0, eq);
    if (!std::filesystem::is_directory(dir))
      fail("--baseline", dir.string() + " is not a model directory");
    o.baselines.emplace_back(label.empty() ? dir.string() : label, dir);
  }
  const auto report = eval::evaluate_budgets(o);
  const auto files = eval::write_report(a.report, report);
  if (a.json) {
    std::printf("%s\n", report.dump(2).c_str());
    return;
  }
  std::printf("%s\n", eval::report_markdown(report).c_str());
  std::printf("report: ");
  for (const auto& f : files) std::printf("%s ", f.c_str());
  std::printf("\n");
}
}  // namespace

void register_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand(
      "eval",
      "Measure quality and decode speed at every budget and router kind, beside baselines -> "
      "report.json, report.md, SVG plots");
  cmd->add_option("--model", a->model, "Flextron model directory (latency.json, routers)")
      ->required();
  cmd->add_option("--budgets", a->budgets,
                  "Latency fractions, comma-separated (default: those the routers were trained "
                  "for)");
  cmd->add_option("--kinds", a->kinds,
                  "Router kinds: uniform, static, dynamic (default: every one the model has)");
  cmd->add_option("--quality-targets", a->quality_targets,
                  "Quality targets, comma-separated (ppl+2%,loss+0.05,ppl<=250): a static row "
                  "each, its measured perplexity checked against the target");
  cmd->add_option("--ppl", a->ppl, "Held-out text for perplexity (llama.cpp convention)");
  cmd->add_option("--ctx", a->options.ppl_ctx, "Perplexity window")
      ->check(in_range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--ppl-tokens", a->options.ppl_max_tokens,
                  "Score only the first N tokens of --ppl (0: all)")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--tasks", a->tasks,
                  "Multiple-choice JSONL files (context/choices/label, HellaSwag or ARC layout)")
      ->expected(1, -1);
  cmd->add_option("--task-limit", a->options.task_limit, "Examples per task (0: all)")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--delimiter", a->options.delimiter, "Between context and choice")
      ->capture_default_str();
  cmd->add_option("--baseline", a->baselines,
                  "Other model directories, [LABEL=]DIR, evaluated at full width on the same axes")
      ->expected(1, -1);
  cmd->add_option("--repeats", a->options.latency_repeats,
                  "Timed decode steps per latency measurement (median)")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--rounds", a->options.latency_rounds,
                  "Interleaved latency measurements per row (median)")
      ->check(positive())
      ->capture_default_str();
  add_runtime_option(cmd, a->options.runtime);
  add_quant_option(cmd, a->options.quant);
  cmd->add_option("--report", a->report, "Report directory")->required();
  cmd->add_flag("--json", a->json, "Print report.json instead of the table");
  cmd->callback([a] { run_eval(*a); });
}

}  // namespace flextron::cli
