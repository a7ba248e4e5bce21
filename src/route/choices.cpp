#include "route/choices.h"

#include <torch/torch.h>

#include "core/error.h"

namespace flextron::route {

ChoiceLayout::ChoiceLayout(const model::ElasticSpace& space) : space_(space) {
  for (size_t l = 0; l < space.mlp.size(); ++l) {
    mlp_.push_back({size_, static_cast<int64_t>(space.mlp[l].size())});
    size_ += mlp_.back().size;
    attn_.push_back({size_, static_cast<int64_t>(space.kv_groups[l].size())});
    size_ += attn_.back().size;
  }
}

std::vector<int64_t> ChoiceLayout::indices(const model::Architecture& arch) const {
  std::vector<int64_t> out;
  for (int64_t l = 0; l < layers(); ++l) {
    const auto& widths = space_.mlp[static_cast<size_t>(l)];
    const auto& groups = space_.kv_groups[static_cast<size_t>(l)];
    if (arch.empty()) {
      out.push_back(static_cast<int64_t>(widths.size()) - 1);
      out.push_back(static_cast<int64_t>(groups.size()) - 1);
      continue;
    }
    auto m = std::find(widths.begin(), widths.end(), arch[static_cast<size_t>(l)].mlp);
    auto a = std::find(groups.begin(), groups.end(), arch[static_cast<size_t>(l)].kv_groups);
    if (m == widths.end() || a == groups.end())
      fail("architecture", "layer " + std::to_string(l) + " is not in the elastic space");
    out.push_back(m - widths.begin());
    out.push_back(a - groups.begin());
  }
  return out;
}

model::Architecture ChoiceLayout::from_indices(const std::vector<int64_t>& idx) const {
  model::Architecture arch;
  for (int64_t l = 0; l < layers(); ++l) {
    const auto i = static_cast<size_t>(l);
    arch.push_back({space_.mlp[i][static_cast<size_t>(idx[2 * i])],
                    space_.kv_groups[i][static_cast<size_t>(idx[2 * i + 1])]});
  }
  return arch;
}

torch::Tensor ChoiceLayout::encode(const model::Architecture& arch) const {
  auto out = torch::zeros({size_});
  const auto idx = indices(arch);
  for (int64_t l = 0; l < layers(); ++l) {
    out[mlp_segment(l).offset + idx[static_cast<size_t>(2 * l)]] = 1.0;
    out[attn_segment(l).offset + idx[static_cast<size_t>(2 * l + 1)]] = 1.0;
  }
  return out;
}

model::Architecture ChoiceLayout::decode(const torch::Tensor& scores) const {
  auto s = scores.detach().to(torch::kCPU, torch::kFloat).contiguous();
  std::vector<int64_t> idx;
  for (int64_t l = 0; l < layers(); ++l) {
    for (const Segment& seg : {mlp_segment(l), attn_segment(l)})
      idx.push_back(s.narrow(0, seg.offset, seg.size).argmax().item<int64_t>());
  }
  return from_indices(idx);
}

torch::Tensor ChoiceLayout::cost_ms(const LatencyTable& table) const {
  auto out = torch::zeros({size_}, torch::kDouble);
  const auto mlp = table.mlp_ms();
  const auto attn = table.attn_ms();
  for (int64_t l = 0; l < layers(); ++l) {
    const auto i = static_cast<size_t>(l);
    for (int64_t c = 0; c < mlp_segment(l).size; ++c)
      out[mlp_segment(l).offset + c] = mlp[i][static_cast<size_t>(c)];
    for (int64_t c = 0; c < attn_segment(l).size; ++c)
      out[attn_segment(l).offset + c] = attn[i][static_cast<size_t>(c)];
  }
  return out.to(torch::kFloat);
}

torch::Tensor gumbel_softmax_hard(const torch::Tensor& logits, double tau, bool noise) {
  auto scores = logits;
  if (noise) {
    // -log(-log(U)) with U in (0, 1): the Gumbel(0, 1) sample that makes argmax a draw from
    // softmax(logits).
    auto u = torch::rand_like(logits).clamp(1e-10, 1.0 - 1e-7);
    scores = logits - torch::log(-torch::log(u));
  }
  auto soft = torch::softmax(scores / tau, -1);
  auto hard = torch::zeros_like(soft).scatter_(-1, soft.argmax(-1, true), 1.0);
  return hard - soft.detach() + soft;  // value: hard; gradient: soft's
}

torch::Tensor inclusion_matrix(const std::vector<int64_t>& widths) {
  const int64_t widest = *std::max_element(widths.begin(), widths.end());
  auto neuron = torch::arange(widest).unsqueeze(0);
  auto limit = torch::tensor(widths, torch::kLong).unsqueeze(1);
  return (neuron < limit).to(torch::kFloat);
}

torch::Tensor sample_choices(const ChoiceLayout& layout, const torch::Tensor& logits, double tau,
                             bool noise) {
  std::vector<torch::Tensor> parts;
  for (int64_t l = 0; l < layout.layers(); ++l) {
    for (const Segment& seg : {layout.mlp_segment(l), layout.attn_segment(l)})
      parts.push_back(gumbel_softmax_hard(logits.narrow(-1, seg.offset, seg.size), tau, noise));
  }
  return torch::cat(parts, -1);
}

}  // namespace flextron::route
