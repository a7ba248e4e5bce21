#include "route/budget_table.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include <torch/torch.h>

#include "core/error.h"

namespace flextron::route {

double BudgetEntry::cost(BudgetKind kind) const {
  switch (kind) {
    case BudgetKind::Latency:
      return latency_fraction;
    case BudgetKind::Milliseconds:
      return decode_ms;
    case BudgetKind::Params:
      return params_fraction;
    case BudgetKind::Memory:
      return memory_mib;
    case BudgetKind::Quality:
      return predicted_loss;
  }
  return latency_fraction;
}

double latency_fraction(const LatencyTable& table, const model::Architecture& arch) {
  return table.decode_ms(arch) / table.decode_ms({});
}

namespace {

// Budgets compare with a little slack for rounding in the table's sums.
constexpr double kSlack = 1e-9;

std::string smallest_message(double budget, double smallest, const std::string& unit) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "%s budget %.4g is below the smallest achievable %.4g",
                unit.c_str(), budget, smallest);
  return buf;
}

}  // namespace

model::Architecture route_static(StaticRouterImpl& router, SurrogateImpl& surrogate,
                                 const ChoiceLayout& layout, const LatencyTable& table,
                                 double budget) {
  check_budget({budget, BudgetKind::Latency}, "budget");
  const double smallest = latency_fraction(table, model::narrowest_architecture(layout.space()));
  if (budget + kSlack < smallest)
    fail("budget", smallest_message(budget, smallest, "latency") +
                       " (the narrowest architecture of the elastic space)");
  torch::NoGradGuard no_grad;
  auto logits = router.forward(router.encode_budgets({budget}))[0];
  auto idx = layout.indices(layout.decode(logits));
  auto sizes = std::vector<int64_t>();
  for (int64_t l = 0; l < layout.layers(); ++l) {
    sizes.push_back(layout.mlp_segment(l).size);
    sizes.push_back(layout.attn_segment(l).size);
  }
  const double full_ms = table.decode_ms({});
  auto fraction = [&](const std::vector<int64_t>& i) {
    return table.decode_ms(layout.from_indices(i)) / full_ms;
  };
  // Candidates one step away (`direction` -1 or +1) from `idx`, with their SM losses.
  auto neighbours = [&](int direction) {
    std::vector<std::vector<int64_t>> out;
    for (size_t k = 0; k < idx.size(); ++k) {
      const int64_t next = idx[k] + direction;
      if (next < 0 || next >= sizes[k]) continue;
      auto cand = idx;
      cand[k] = next;
      out.push_back(cand);
    }
    return out;
  };
  auto losses = [&](const std::vector<std::vector<int64_t>>& cands) {
    std::vector<model::Architecture> archs;
    for (const auto& c : cands) archs.push_back(layout.from_indices(c));
    return predict_losses(surrogate, layout, archs);
  };

  double current = fraction(idx);
  double current_loss = losses({idx})[0];
  while (current > budget + kSlack) {  // narrow until it fits
    auto cands = neighbours(-1);
    auto cand_loss = losses(cands);
    double best = std::numeric_limits<double>::infinity();
    size_t pick = 0;
    for (size_t c = 0; c < cands.size(); ++c) {
      const double saved = current - fraction(cands[c]);
      const double price = (cand_loss[c] - current_loss) / std::max(saved, 1e-12);
      if (price < best) best = price, pick = c;
    }
    idx = cands[pick];
    current = fraction(idx);
    current_loss = cand_loss[pick];
  }
  for (;;) {  // widen while it fits
    auto cands = neighbours(+1);
    if (cands.empty()) break;
    auto cand_loss = losses(cands);
    double best = -std::numeric_limits<double>::infinity();
    int64_t pick = -1;
    for (size_t c = 0; c < cands.size(); ++c) {
      const double f = fraction(cands[c]);
      if (f > budget + kSlack) continue;
      // Widening a nested network does not hurt; a small predicted loss increase is the
      // surrogate's error, so every widening that fits is taken, best gain per ms first.
      const double gain = (current_loss - cand_loss[c]) / std::max(f - current, 1e-12);
      if (gain > best) best = gain, pick = static_cast<int64_t>(c);
    }
    if (pick < 0) break;
    idx = cands[static_cast<size_t>(pick)];
    current = fraction(idx);
    current_loss = cand_loss[static_cast<size_t>(pick)];
  }
  return layout.from_indices(idx);
}

BudgetEntry make_entry(double budget, const model::Architecture& arch, const LatencyTable& table,
                       const model::ModelConfig& config, torch::Dtype dtype,
                       double predicted_loss) {
  BudgetEntry e;
  e.budget = budget;
  e.arch = arch;
  e.latency_fraction = latency_fraction(table, arch);
  e.decode_ms = table.decode_ms(arch);
  e.params_fraction = architecture_cost(BudgetKind::Params, config, arch, &table, dtype);
  e.memory_mib = architecture_cost(BudgetKind::Memory, config, arch, &table, dtype);
  e.predicted_loss = predicted_loss;
  return e;
}

std::vector<BudgetEntry> build_budget_table(StaticRouterImpl& router, SurrogateImpl& surrogate,
                                            const ChoiceLayout& layout, const LatencyTable& table,
                                            const model::ModelConfig& config, torch::Dtype dtype,
                                            double step) {
  const auto narrowest = model::narrowest_architecture(layout.space());
  const double smallest = latency_fraction(table, narrowest);
  std::vector<BudgetEntry> out;
  out.push_back(make_entry(smallest, narrowest, table, config, dtype,
                           predict_losses(surrogate, layout, {narrowest})[0]));
  // Grid points k * step above the smallest fraction, and 1 itself.
  for (double b = std::ceil(smallest / step + 1e-9) * step; b < 1.0 + 1e-9; b += step) {
    const double budget = std::min(1.0, b);
    auto arch = route_static(router, surrogate, layout, table, budget);
    auto entry = make_entry(budget, arch, table, config, dtype,
                            predict_losses(surrogate, layout, {arch})[0]);
    // A larger budget never gets a slower-to-be-worse answer: where the router's choice is
    // faster than the previous budget's and not predicted better, the previous one (which fits
    // this budget too) stands.
    const auto& previous = out.back();
    if (entry.latency_fraction < previous.latency_fraction &&
        entry.predicted_loss >= previous.predicted_loss)
      entry = make_entry(budget, previous.arch, table, config, dtype, previous.predicted_loss);
    out.push_back(entry);
  }
  return out;
}

const BudgetEntry& widest_entry(const std::vector<BudgetEntry>& table) {
  if (table.empty()) fail("budget", "the router has no budget table (run flextron train-router)");
  const BudgetEntry* full = &table.front();
  for (const auto& e : table)
    if (e.latency_fraction > full->latency_fraction) full = &e;
  return *full;
}

const BudgetEntry& lookup_quality(const std::vector<BudgetEntry>& table,
                                  const QualityTarget& target) {
  // The reference of relative targets is the widest entry's prediction, in the surrogate's own
  // scale, so the surrogate's offset from a measurement cancels.
  const BudgetEntry* full = &widest_entry(table);
  const double reference = full->predicted_loss;
  const double max_loss = quality_max_loss(target, reference);
  if (max_loss < reference - kSlack) {
    char buf[240];
    std::snprintf(buf, sizeof buf,
                  "quality target \"%s\" asks for loss %.4f (ppl %.4g), below the full model's "
                  "predicted %.4f (ppl %.4g): the best achievable is the full model (ppl+0%%)",
                  target.text.c_str(), max_loss, std::exp(max_loss), reference,
                  std::exp(reference));
    fail("budget", buf);
  }
  // A sub-network is never predicted better than the model it is part of, and only the full
  // model meets a target at the full model's own loss: the surrogate's small errors below the
  // full model's prediction must not pick a narrower network for a "no loss" target.
  const BudgetEntry* best = full;
  if (max_loss > reference + kSlack)
    for (const auto& e : table)
      if (std::max(e.predicted_loss, reference) <= max_loss + kSlack &&
          e.latency_fraction < best->latency_fraction)
        best = &e;
  return *best;
}

const BudgetEntry& lookup_budget(const std::vector<BudgetEntry>& table, const Budget& budget) {
  check_budget(budget, "budget");
  if (table.empty()) fail("budget", "the router has no budget table (run flextron train-router)");
  if (budget.kind == BudgetKind::Quality) return lookup_quality(table, budget.quality);
  const BudgetEntry* best = nullptr;
  double smallest = std::numeric_limits<double>::infinity();
  for (const auto& e : table) {
    smallest = std::min(smallest, e.cost(budget.kind));
    if (e.cost(budget.kind) > budget.value + kSlack) continue;
    if (best == nullptr || e.latency_fraction > best->latency_fraction) best = &e;
  }
  if (best == nullptr)
    fail("budget", smallest_message(budget.value, smallest, budget_kind_name(budget.kind)));
  return *best;
}

model::Architecture uniform_architecture(const ChoiceLayout& layout, const LatencyTable& table,
                                         const model::ModelConfig& config, torch::Dtype dtype,
                                         const Budget& budget) {
  check_budget(budget, "budget");
  if (budget.kind == BudgetKind::Quality)
    fail("--router", "a quality target is met by the static router's predictions (use static)");
  // Candidates: every MLP width of the grid as a fraction f of the full width, with the KV-group
  // choice nearest the same fraction, in every layer ("mlp=f,attn=f").
  const auto& space = layout.space();
  model::Architecture best;
  double best_latency = -1.0, smallest = std::numeric_limits<double>::infinity();
  const size_t levels = space.mlp.front().size();
  for (size_t m = 0; m < levels; ++m) {
    model::Architecture arch;
    for (size_t l = 0; l < space.mlp.size(); ++l) {
      const auto& widths = space.mlp[l];
      const auto& groups = space.kv_groups[l];
      const size_t mi = std::min(widths.size() - 1, widths.size() - levels + m);
      const double f = static_cast<double>(widths[mi]) / static_cast<double>(widths.back());
      int64_t pick = groups.back();
      double gap = std::numeric_limits<double>::infinity();
      for (int64_t g : groups) {
        const double d = std::abs(static_cast<double>(g) / static_cast<double>(groups.back()) - f);
        if (d <= gap) gap = d, pick = g;  // ties go to the wider
      }
      arch.push_back({widths[mi], pick});
    }
    const double cost = architecture_cost(budget.kind, config, arch, &table, dtype);
    smallest = std::min(smallest, cost);
    if (cost > budget.value + kSlack) continue;
    const double lat = latency_fraction(table, arch);
    if (lat > best_latency) best_latency = lat, best = arch;
  }
  if (best.empty())
    fail("budget", smallest_message(budget.value, smallest, budget_kind_name(budget.kind)) +
                       " with uniform widths");
  return best;
}

nlohmann::json budget_entry_to_json(const BudgetEntry& e) {
  return {{"budget", e.budget},
          {"architecture", model::architecture_to_json(e.arch)},
          {"latency_fraction", e.latency_fraction},
          {"decode_ms", e.decode_ms},
          {"params_fraction", e.params_fraction},
          {"memory_mib", e.memory_mib},
          {"predicted_loss", e.predicted_loss}};
}

BudgetEntry budget_entry_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    BudgetEntry e;
    e.budget = j.at("budget").get<double>();
    e.arch = model::architecture_from_json(j.at("architecture"), where);
    e.latency_fraction = j.at("latency_fraction").get<double>();
    e.decode_ms = j.at("decode_ms").get<double>();
    e.params_fraction = j.at("params_fraction").get<double>();
    e.memory_mib = j.at("memory_mib").get<double>();
    e.predicted_loss = j.value("predicted_loss", 0.0);
    return e;
  } catch (const nlohmann::json::exception& ex) {
    fail(where, std::string("malformed budget entry: ") + ex.what());
  }
}

}  // namespace flextron::route
