#include "eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>

#include "io/atomic_file.h"

namespace flextron::eval {

namespace {

std::string format(const char* spec, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, spec, v);
  return buf;
}

// The value at `path` in a row, if it is a number.
std::optional<double> metric_value(const nlohmann::json& row,
                                   const std::vector<std::string>& path) {
  const nlohmann::json* v = &row;
  for (const auto& key : path) {
    if (!v->is_object() || !v->contains(key)) return std::nullopt;
    v = &(*v)[key];
  }
  return v->is_number() ? std::optional<double>(v->get<double>()) : std::nullopt;
}

std::string row_label(const nlohmann::json& row) {
  const auto kind = row.value("router", "");
  if (kind == "baseline") return row.value("model", "baseline");
  if (kind == "full") return "full model";
  return kind;
}

std::string escape_xml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// About five round tick values covering [lo, hi].
std::vector<double> ticks(double lo, double hi) {
  const double span = std::max(hi - lo, 1e-9);
  const double raw = span / 5.0;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> out;
  for (double t = std::ceil(lo / step) * step; t <= hi + 1e-9 * span; t += step) out.push_back(t);
  return out;
}

}  // namespace

std::vector<PlotMetric> plot_metrics(const nlohmann::json& report) {
  std::vector<PlotMetric> out;
  const auto& rows = report.at("rows");
  if (!rows.empty() && rows[0].contains("perplexity"))
    out.push_back({"perplexity (lower is better)", "quality_perplexity.svg", {"perplexity"}, true});
  for (const auto& t : report.at("settings").value("tasks", nlohmann::json::array())) {
    const auto name = t.at("name").get<std::string>();
    out.push_back(
        {name + " acc_norm", "quality_" + name + ".svg", {"tasks", name, "acc_norm"}, false});
  }
  return out;
}

std::string report_markdown(const nlohmann::json& report) {
  std::vector<std::string> tasks;
  for (const auto& t : report.at("settings").value("tasks", nlohmann::json::array()))
    tasks.push_back(t.at("name").get<std::string>());
  const bool ppl = !report.at("rows").empty() && report["rows"][0].contains("perplexity");
  std::string md =
      "| model | router | budget | latency (measured) | predicted | ms/token | tok/s | "
      "params | ";
  std::string rule = "|---|---|---:|---:|---:|---:|---:|---:|";
  if (ppl) md += "perplexity | bits/byte | ", rule += "---:|---:|";
  for (const auto& t : tasks) md += t + " acc | " + t + " acc_norm | ", rule += "---:|---:|";
  md += "architecture |\n" + rule + "---|\n";
  for (const auto& r : report.at("rows")) {
    md += "| " + r.value("model", "") + " | " + r.value("router", "") + " | ";
    md += (r.contains("budget")           ? format("%.2f", r["budget"].get<double>())
           : r.contains("quality_target") ? r["quality_target"].get<std::string>()
                                          : "") +
          " | ";
    md += format("%.3f", r.value("latency_fraction", 0.0)) + " | ";
    md += (r.contains("predicted_latency_fraction")
               ? format("%.3f", r["predicted_latency_fraction"].get<double>())
               : "") +
          " | ";
    md += format("%.3f", r.value("decode_ms", 0.0)) + " | ";
    md += format("%.0f", r.value("tokens_per_second", 0.0)) + " | ";
    md += format("%.2fM", r.value("params", 0.0) / 1e6) + " (" +
          format("%.0f%%", 100.0 * r.value("params_fraction", 0.0)) + ") | ";
    if (ppl)
      md += format("%.2f", r.value("perplexity", 0.0)) + " | " +
            format("%.4f", r.value("bits_per_byte", 0.0)) + " | ";
    for (const auto& t : tasks) {
      const auto a = metric_value(r, {"tasks", t, "acc"});
      const auto n = metric_value(r, {"tasks", t, "acc_norm"});
      md += (a ? format("%.3f", *a) : "") + " | " + (n ? format("%.3f", *n) : "") + " | ";
    }
    md += r.value("architecture", "") + " |\n";
  }
  // Quality targets: the prediction that chose each row against the measurement. A relative
  // target's allowed perplexity is taken from the full model's measured perplexity.
  std::string quality;
  for (const auto& r : report.at("rows")) {
    if (!r.contains("measured_target_perplexity")) continue;
    quality += "| " + r.value("quality_target", "") + " | " +
               format("%.3f", r.value("latency_fraction", 0.0)) + " | " +
               format("%.2f", r.value("predicted_perplexity", 0.0)) + " | " +
               format("%+.4f", r.value("predicted_loss_increase", 0.0)) + " | " +
               format("%.2f", r.value("perplexity", 0.0)) + " | " +
               format("%+.4f", r.value("measured_loss_increase", 0.0)) + " | " +
               format("%.2f", r.value("measured_target_perplexity", 0.0)) + " | " +
               (r.value("target_met", false) ? "yes" : "**no**") + " |\n";
  }
  if (!quality.empty())
    md +=
        "\n| quality target | latency (measured) | predicted ppl | predicted loss over full | "
        "measured ppl | measured loss over full | allowed ppl | met |\n"
        "|---|---:|---:|---:|---:|---:|---:|---|\n" +
        quality;
  return md;
}

std::string quality_plot_svg(const nlohmann::json& report, const PlotMetric& metric) {
  constexpr double W = 720, H = 440, left = 70, right = 180, top = 40, bottom = 55;
  struct Point {
    double x, y;
  };
  std::map<std::string, std::vector<Point>> series;  // by label, in row order
  std::vector<std::string> order;
  double xmin = std::numeric_limits<double>::max(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  for (const auto& r : report.at("rows")) {
    const auto y = metric_value(r, metric.path);
    const auto x = metric_value(r, {"latency_fraction"});
    if (!x || !y || !std::isfinite(*y)) continue;
    const auto label = row_label(r);
    if (!series.count(label)) order.push_back(label);
    series[label].push_back({*x, *y});
    xmin = std::min(xmin, *x), xmax = std::max(xmax, *x);
    ymin = std::min(ymin, *y), ymax = std::max(ymax, *y);
  }
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + format("%.0f", W) +
                    "\" height=\"" + format("%.0f", H) +
                    "\" font-family=\"sans-serif\" font-size=\"12\">\n"
                    "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += "<text x=\"" + format("%.0f", left) + "\" y=\"22\" font-size=\"15\">" +
         escape_xml(metric.title) + " vs measured decode latency</text>\n";
  if (series.empty()) return svg + "<text x=\"70\" y=\"80\">no data</text>\n</svg>\n";
  // Pad the ranges so points do not sit on the frame.
  const double xpad = std::max(0.02, 0.05 * (xmax - xmin)),
               ypad = std::max(1e-6, 0.08 * (ymax - ymin));
  xmin = std::max(0.0, xmin - xpad), xmax += xpad, ymin -= ypad, ymax += ypad;
  const double pw = W - left - right, ph = H - top - bottom;
  auto px = [&](double x) {
    return left + (x - xmin) / (xmax - xmin) * pw;
  };
  auto py = [&](double y) {
    return top + ph - (y - ymin) / (ymax - ymin) * ph;
  };

  svg += "<rect x=\"" + format("%.1f", left) + "\" y=\"" + format("%.1f", top) + "\" width=\"" +
         format("%.1f", pw) + "\" height=\"" + format("%.1f", ph) +
         "\" fill=\"none\" stroke=\"#444\"/>\n";
  for (double t : ticks(xmin, xmax))
    svg += "<line x1=\"" + format("%.1f", px(t)) + "\" y1=\"" + format("%.1f", top + ph) +
           "\" x2=\"" + format("%.1f", px(t)) + "\" y2=\"" + format("%.1f", top) +
           "\" stroke=\"#eee\"/><text x=\"" + format("%.1f", px(t)) + "\" y=\"" +
           format("%.1f", top + ph + 16) + "\" text-anchor=\"middle\">" + format("%g", t) +
           "</text>\n";
  for (double t : ticks(ymin, ymax))
    svg += "<line x1=\"" + format("%.1f", left) + "\" y1=\"" + format("%.1f", py(t)) + "\" x2=\"" +
           format("%.1f", left + pw) + "\" y2=\"" + format("%.1f", py(t)) +
           "\" stroke=\"#eee\"/><text x=\"" + format("%.1f", left - 6) + "\" y=\"" +
           format("%.1f", py(t) + 4) + "\" text-anchor=\"end\">" + format("%g", t) + "</text>\n";
  svg += "<text x=\"" + format("%.1f", left + pw / 2) + "\" y=\"" + format("%.1f", H - 14) +
         "\" text-anchor=\"middle\">decode latency, fraction of the full model (measured)</text>\n";
  svg += "<text transform=\"translate(16," + format("%.1f", top + ph / 2) +
         ") rotate(-90)\" text-anchor=\"middle\">" + escape_xml(metric.title) + "</text>\n";

  const std::map<std::string, std::string> colors = {{"uniform", "#7f7f7f"},
                                                     {"static", "#1f77b4"},
                                                     {"dynamic", "#d62728"},
                                                     {"full model", "#000000"}};
  const char* baseline_colors[] = {"#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"};
  size_t baseline_index = 0;
  double legend_y = top + 8;
  for (const auto& label : order) {
    auto points = series[label];
    const bool line = colors.count(label) && label != "full model";
    const std::string color =
        colors.count(label) ? colors.at(label) : baseline_colors[baseline_index++ % 5];
    std::sort(points.begin(), points.end(),
              [](const Point& a, const Point& b) { return a.x < b.x; });
    if (line && points.size() > 1) {
      svg += "<polyline fill=\"none\" stroke=\"" + color + "\" stroke-width=\"2\" points=\"";
      for (const auto& p : points)
        svg += format("%.1f", px(p.x)) + "," + format("%.1f", py(p.y)) + " ";
      svg += "\"/>\n";
    }
    for (const auto& p : points) {
      if (line)
        svg += "<circle cx=\"" + format("%.1f", px(p.x)) + "\" cy=\"" + format("%.1f", py(p.y)) +
               "\" r=\"4\" fill=\"" + color + "\"/>\n";
      else
        svg += "<rect x=\"" + format("%.1f", px(p.x) - 5) + "\" y=\"" +
               format("%.1f", py(p.y) - 5) + "\" width=\"10\" height=\"10\" fill=\"" + color +
               "\"/>\n";
    }
    const double lx = left + pw + 14;
    svg += line ? "<line x1=\"" + format("%.1f", lx) + "\" y1=\"" + format("%.1f", legend_y) +
                      "\" x2=\"" + format("%.1f", lx + 20) + "\" y2=\"" + format("%.1f", legend_y) +
                      "\" stroke=\"" + color + "\" stroke-width=\"2\"/>\n"
                : "<rect x=\"" + format("%.1f", lx + 5) + "\" y=\"" + format("%.1f", legend_y - 5) +
                      "\" width=\"10\" height=\"10\" fill=\"" + color + "\"/>\n";
    svg += "<text x=\"" + format("%.1f", lx + 26) + "\" y=\"" + format("%.1f", legend_y + 4) +
           "\">" + escape_xml(label) + "</text>\n";
    legend_y += 20;
  }
  return svg + "</svg>\n";
}

std::vector<std::filesystem::path> write_report(const std::filesystem::path& dir,
                                                const nlohmann::json& report) {
  std::filesystem::create_directories(dir);
  std::vector<std::filesystem::path> written;
  auto put = [&](const std::string& name, const std::string& content) {
    io::write_text_atomically(dir / name, content);
    written.push_back(dir / name);
  };
  put("report.json", report.dump(2) + "\n");
  std::string md = "# Flextron evaluation: " + report.value("model", "") + "\n\n" +
                   report_markdown(report) + "\n";
  md += "Latency: median of single-token decode steps, averaged over contexts " +
        report["settings"].value("latency_contexts", nlohmann::json::array()).dump() +
        ", as a fraction of the full model measured in the same run. Perplexity: llama.cpp "
        "convention. Multiple choice: lm-evaluation-harness log-likelihood; acc_norm divides by "
        "the choice's length in characters.\n\n";
  for (const auto& metric : plot_metrics(report)) {
    put(metric.file, quality_plot_svg(report, metric));
    md += "![" + metric.title + "](" + metric.file + ")\n\n";
  }
  put("report.md", md);
  return written;
}

}  // namespace flextron::eval
