// The evaluation report's Markdown table and SVG plots, from a hand-made report: every row in the
// table, a line per router kind through its points in latency order, a marker per baseline, and
// nothing drawn for a metric a row lacks.
#include <cmath>
#include <regex>
#include <sstream>
#include <tuple>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "eval/report.h"
#include "io/files.h"
#include "test_util.h"

namespace {

nlohmann::json row(const std::string& model, const std::string& router, double latency, double ppl,
                   double acc_norm) {
  return {{"model", model},
          {"router", router},
          {"budget", latency},
          {"latency_fraction", latency},
          {"decode_ms", 2.0 * latency},
          {"tokens_per_second", 500.0 / latency},
          {"params", 1e6 * latency},
          {"params_fraction", latency},
          {"perplexity", ppl},
          {"bits_per_byte", 2.0},
          {"architecture", "mlp 1/2"},
          {"tasks", {{"faq", {{"acc", acc_norm}, {"acc_norm", acc_norm}}}}}};
}

nlohmann::json sample_report() {
  nlohmann::json rows = nlohmann::json::array();
  rows.push_back(row("flextron", "full", 1.0, 200.0, 0.5));
  rows.push_back(row("flextron", "static", 0.7, 230.0, 0.4));
  rows.push_back(row("flextron", "static", 0.5, 260.0, 0.35));  // out of latency order
  rows.push_back(row("flextron", "dynamic", 0.6, 240.0, 0.38));
  rows.push_back(row("flextron", "dynamic", 0.9, 210.0, 0.45));
  rows.push_back(row("scratch-0.5", "baseline", 0.52, 300.0, 0.3));
  return {{"model", "m"},
          {"settings", {{"tasks", {{{"name", "faq"}}}}, {"latency_contexts", {128}}}},
          {"rows", rows}};
}

TEST(Report, MarkdownHasOneLinePerRowAndEveryColumn) {
  const auto md = flextron::eval::report_markdown(sample_report());
  const auto lines = std::count(md.begin(), md.end(), '\n');
  EXPECT_EQ(lines, 2 + 6);  // header, rule, rows
  EXPECT_NE(md.find("| perplexity | bits/byte | faq acc | faq acc_norm |"), std::string::npos);
  EXPECT_NE(md.find("| flextron | static | 0.50 | 0.500 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| scratch-0.5 | baseline |"), std::string::npos);
  EXPECT_NE(md.find("| 260.00 |"), std::string::npos);
}

TEST(Report, QualityTargetsGetTheirOwnTable) {
  auto report = sample_report();
  for (const auto& [target, ppl, allowed] : std::vector<std::tuple<std::string, double, double>>{
           {"ppl+10%", 215.0, 220.0}, {"loss+0.01", 205.0, 202.01}}) {
    auto r = row("flextron", "quality", 0.8, ppl, 0.4);
    r.erase("budget");
    r["quality_target"] = target;
    r["predicted_perplexity"] = 190.0;
    r["predicted_loss_increase"] = 0.05;
    r["measured_loss_increase"] = std::log(ppl / 200.0);
    r["measured_target_perplexity"] = allowed;
    r["target_met"] = ppl <= allowed;
    report["rows"].push_back(r);
  }
  const auto md = flextron::eval::report_markdown(report);
  EXPECT_NE(md.find("| flextron | quality | ppl+10% | 0.800 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| quality target | latency (measured) | predicted ppl |"), std::string::npos);
  EXPECT_NE(md.find("| ppl+10% | 0.800 | 190.00 | +0.0500 | 215.00 | +0.0723 | 220.00 | yes |"),
            std::string::npos)
      << md;
  EXPECT_NE(
      md.find("| loss+0.01 | 0.800 | 190.00 | +0.0500 | 205.00 | +0.0247 | 202.01 | **no** |"),
      std::string::npos)
      << md;
}

TEST(Report, PlotsALinePerRouterKindAndAMarkerPerBaseline) {
  const auto report = sample_report();
  const auto metrics = flextron::eval::plot_metrics(report);
  ASSERT_EQ(metrics.size(), 2u);
  EXPECT_EQ(metrics[0].file, "quality_perplexity.svg");
  EXPECT_EQ(metrics[1].file, "quality_faq.svg");
  const auto svg = flextron::eval::quality_plot_svg(report, metrics[0]);
  // static and dynamic have two points each: two polylines; the full model and the baseline are
  // squares (one each, plus one legend square each).
  const std::regex polyline("<polyline[^>]*points=\"([^\"]*)\"");
  std::vector<std::vector<double>> xs;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), polyline);
       it != std::sregex_iterator(); ++it) {
    std::vector<double> x;
    std::istringstream points((*it)[1].str());
    for (std::string p; points >> p;) x.push_back(std::stod(p.substr(0, p.find(','))));
    xs.push_back(x);
  }
  ASSERT_EQ(xs.size(), 2u);
  for (const auto& x : xs) EXPECT_TRUE(std::is_sorted(x.begin(), x.end()));
  const std::regex square("<rect x=[^>]*width=\"10\"");
  EXPECT_EQ(
      std::distance(std::sregex_iterator(svg.begin(), svg.end(), square), std::sregex_iterator()),
      4);
  EXPECT_NE(svg.find(">scratch-0.5<"), std::string::npos);
  EXPECT_NE(svg.find("perplexity (lower is better)"), std::string::npos);
}

TEST(Report, WritesEveryFileAndSkipsMissingMetrics) {
  auto report = sample_report();
  report["rows"][3].erase("perplexity");  // a row without perplexity: no point for it
  const auto dir = flextron::testing::scratch_dir();
  const auto files = flextron::eval::write_report(dir, report);
  EXPECT_EQ(files.size(), 4u);
  for (const char* f : {"report.json", "report.md", "quality_perplexity.svg", "quality_faq.svg"})
    EXPECT_TRUE(std::filesystem::exists(dir / f)) << f;
  EXPECT_EQ(flextron::io::read_json_file(dir / "report.json"), report);
  const auto md = flextron::testing::read_file(dir / "report.md");
  EXPECT_NE(md.find("![perplexity (lower is better)](quality_perplexity.svg)"), std::string::npos);
  const auto svg = flextron::testing::read_file(dir / "quality_perplexity.svg");
  // dynamic now has one point: no line for it, one polyline (static) left.
  const std::regex polyline("<polyline");
  EXPECT_EQ(
      std::distance(std::sregex_iterator(svg.begin(), svg.end(), polyline), std::sregex_iterator()),
      1);
}

}  // namespace
