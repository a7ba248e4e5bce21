// The evaluation report (eval/budget_eval.h) as files a person can read without extra tools:
// report.json (everything), report.md (the table, linking the plots) and one SVG plot per quality
// metric of quality against measured latency, a line per router kind and a point per baseline.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace flextron::eval {

// The metrics a report can plot: "perplexity" when measured, then "<task> acc_norm" per task.
struct PlotMetric {
  std::string title;              // axis label
  std::string file;               // SVG file name
  std::vector<std::string> path;  // keys into a row, e.g. {"tasks", "arc", "acc_norm"}
  bool lower_is_better = false;
};
std::vector<PlotMetric> plot_metrics(const nlohmann::json& report);

// One Markdown table, a row per report row.
std::string report_markdown(const nlohmann::json& report);

// A self-contained SVG: metric against measured latency fraction.
std::string quality_plot_svg(const nlohmann::json& report, const PlotMetric& metric);

// Writes report.json, report.md and the plots into `dir` (created). Returns the files written.
std::vector<std::filesystem::path> write_report(const std::filesystem::path& dir,
                                                const nlohmann::json& report);

}  // namespace flextron::eval
