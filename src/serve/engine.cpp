#include "serve/engine.h"

#include <algorithm>

#include <torch/torch.h>

#include "core/error.h"
#include "model/elastic_space.h"
#include "runtime/fast_generate.h"
#include "serve/api.h"
#include "serve/schedule.h"

namespace flextron::serve {

namespace {
double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

const model::Architecture kFull;

const model::Architecture& architecture_of(const JobSpec& spec) {
  return spec.plan ? spec.plan->arch : kFull;
}
model::LayerRouter* router_of(const JobSpec& spec) {
  return spec.plan ? spec.plan->router() : nullptr;
}
}  // namespace

// ---------------------------------------------------------------------------------------------
Job::Job(JobSpec spec) : spec_(std::move(spec)), stream_(spec_.stop) {
  progress_.prompt_tokens = static_cast<int64_t>(spec_.prompt_tokens.size());
  progress_.submitted = Clock::now();
}

bool Job::wait(std::string& out, std::chrono::milliseconds timeout) {
  std::vector<runtime::TokenLogprob> ignored;
  return wait(out, ignored, timeout);
}

bool Job::wait(std::string& out, std::vector<runtime::TokenLogprob>& logprobs,
               std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait_for(lock, timeout,
                    [&] { return !text_.empty() || !logprobs_.empty() || finished_; });
  out += text_;
  text_.clear();
  for (auto& entry : logprobs_) logprobs.push_back(std::move(entry));
  logprobs_.clear();
  return finished_;
}

JobOutcome Job::outcome() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return outcome_;
}

void Job::publish(const std::string& text, std::vector<runtime::TokenLogprob> logprobs,
                  bool finished) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    text_ += text;
    for (auto& entry : logprobs) logprobs_.push_back(std::move(entry));
    if (finished) {
      finished_ = true;
      outcome_ = progress_;
    }
  }
  changed_.notify_all();
}

// ---------------------------------------------------------------------------------------------
Engine::Engine(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
               const EngineOptions& options, Metrics& metrics)
    : model_(model), tokenizer_(tokenizer), options_(options), metrics_(metrics) {
  const auto format = runtime::qk::parse_format(options.quant, "--quant");
  if (runtime::use_fast_runtime(options.runtime, model)) {
    runtime::EngineOptions eo;
    eo.max_rows = std::max<int64_t>(64, options.max_batch);
    eo.format = format;
    fast_ = std::make_unique<runtime::FastDecoder>(model, eo);
  } else if (format != runtime::qk::WeightFormat::F32) {
    fail("--quant", "quantized weights run on the fast runtime only (this server runs on torch)");
  }
  thread_ = std::thread([this] { run(); });
}

Engine::~Engine() {
  shutdown(std::chrono::milliseconds(0));
}

std::shared_ptr<Job> Engine::submit(JobSpec spec) {
  return submit_choices(std::move(spec), 1).front();
}

std::vector<std::shared_ptr<Job>> Engine::submit_choices(JobSpec spec, int64_t n) {
  if (n < 1) fail("n", "must be >= 1");
  if (n > 1 && router_of(spec) != nullptr)
    fail("n", "choices forked from one prefill cannot share a dynamic router");
  std::vector<std::shared_ptr<Job>> jobs;
  for (int64_t i = 0; i < n; ++i) {
    JobSpec choice = spec;
    choice.sampling.seed = spec.sampling.seed + static_cast<uint64_t>(i);
    jobs.push_back(std::make_shared<Job>(std::move(choice)));
  }
  auto job = jobs.front();
  job->followers_.assign(jobs.begin() + 1, jobs.end());
  // Jobs that decode together share a key: their architecture. A dynamic router picks widths
  // per token, so its job is a batch of its own.
  std::string key;
  if (spec.speculative) {
    for (auto& choice : jobs)  // a round at a time, each alone
      choice->batch_key_ =
          "speculative:" + std::to_string(reinterpret_cast<uintptr_t>(choice.get()));
  } else if (router_of(job->spec()) != nullptr) {
    key = "dynamic:" + std::to_string(reinterpret_cast<uintptr_t>(job.get()));
  } else if (fast_ && options_.batch_across_budgets) {
    key = "static";  // every static architecture decodes in one batch on the fast runtime
  } else {
    const auto& arch = architecture_of(job->spec());
    key = arch.empty() ? "full" : model::architecture_to_json(arch).dump();
  }
  if (!spec.speculative)
    for (auto& choice : jobs) choice->batch_key_ = key;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) throw ApiError(503, "the server is shutting down", "", "server_error");
    if (static_cast<int64_t>(queue_.size()) + active_count_ + n - 1 >=
        options_.max_active + options_.max_queue)
      throw ApiError(503,
                     "the server is busy: " + std::to_string(active_count_) + " generating, " +
                         std::to_string(queue_.size()) + " waiting; retry shortly",
                     "", "server_error");
    queue_.push_back(job);
    metrics_.set_queue(static_cast<int64_t>(queue_.size()), active_count_);
  }
  wake_.notify_one();
  return jobs;
}

void Engine::shutdown(std::chrono::milliseconds grace) {
  std::deque<std::shared_ptr<Job>> queued;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    deadline_ = std::min(deadline_, Clock::now() + grace);
    queued.swap(queue_);
  }
  for (auto& job : queued) finish(*job, "cancelled", "the server is shutting down");
  wake_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void Engine::run() {
  c10::InferenceMode inference;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      admit();
      active_count_ = static_cast<int64_t>(active_.size());
      metrics_.set_queue(static_cast<int64_t>(queue_.size()), active_count_);
      if (active_.empty()) {
        if (stopping_) break;
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        continue;
      }
      if (Clock::now() > deadline_)
        for (auto& job : active_) job->cancel();
    }
    step();
    active_.erase(std::remove_if(active_.begin(), active_.end(),
                                 [](const auto& job) { return job->sequence_ == nullptr; }),
                  active_.end());
  }
}

void Engine::admit() {
  double least = 0.0;
  if (!active_.empty())
    least = (*std::min_element(active_.begin(), active_.end(), [](const auto& a, const auto& b) {
              return a->charge_ < b->charge_;
            }))->charge_;
  while (!queue_.empty() && static_cast<int64_t>(active_.size()) < options_.max_active) {
    auto job = queue_.front();
    // A job's followers take slots too once forked: wait for room for all (unless idle).
    const auto need = static_cast<int64_t>(active_.size() + 1 + job->followers_.size());
    if (!active_.empty() && need > options_.max_active) break;
    queue_.pop_front();
    const auto& spec = job->spec();
    try {
      auto* router = router_of(spec);
      if (fast_ && (router == nullptr || router->routes_on_host()))
        job->sequence_ = std::make_unique<runtime::Sequence>(
            *fast_, tokenizer_, spec.prompt_tokens, spec.max_tokens, spec.sampling,
            architecture_of(spec), router, &model_);
      else
        job->sequence_ = std::make_unique<runtime::Sequence>(model_, tokenizer_, spec.prompt_tokens,
                                                             spec.max_tokens, spec.sampling,
                                                             architecture_of(spec), router);
      if (spec.logprobs >= 0) job->sequence_->record_logprobs(spec.logprobs);
      job->sequence_->stop_at(spec.stop_ids);
      if (spec.constraint) job->sequence_->constrain(spec.constraint->clone());
      if (spec.speculative) {
        if (!draft_) fail("speculative", "this server has no draft (start it with --speculative)");
        job->sequence_->speculate(*draft_);
      }
    } catch (const std::exception& e) {
      finish(*job, "error", e.what());
      continue;
    }
    job->charge_ = least;
    if (job->sequence_->engine() != nullptr && router_of(spec) == nullptr)
      job->weight_ = decode_weight(model_.config(), architecture_of(spec));
    active_.push_back(job);
  }
}

void Engine::step() {
  for (auto& job : active_)
    if (job->cancelled() && job->sequence_) finish(*job, "cancelled");
  std::vector<Job*> running;
  for (auto& job : active_)
    if (job->sequence_) running.push_back(job.get());
  if (running.empty()) return;
  auto by_charge = [](const Job* a, const Job* b) {
    return a->charge_ < b->charge_;
  };
  std::stable_sort(running.begin(), running.end(), by_charge);
  Job& first = *running.front();
  const auto started = Clock::now();
  std::vector<Job*> rows;
  const bool prefilling = first.progress_.started == Clock::time_point();
  try {
    if (prefilling) {
      rows = {&first};
      for (Job* follower : prefill(first)) rows.push_back(follower);
    } else {
      std::vector<Job*> candidates;
      std::vector<ScheduleCandidate> numbers;
      for (Job* job : running)
        if (job->batch_key_ == first.batch_key_ && job->progress_.started != Clock::time_point()) {
          candidates.push_back(job);
          numbers.push_back({job->charge_, job->weight_});
        }
      for (size_t j : select_step_rows(numbers, seconds_per_weight_, options_.max_batch))
        rows.push_back(candidates[j]);
      // Widest first: rows that share a piece of a product are then one run (decode_batch).
      std::stable_sort(rows.begin(), rows.end(),
                       [](const Job* a, const Job* b) { return a->weight_ > b->weight_; });
      decode(rows);
    }
  } catch (const std::exception& e) {
    for (Job* job : rows) finish(*job, "error", e.what());
    return;
  }
  const double took = seconds(Clock::now() - started);
  std::vector<double> weights;
  for (Job* job : rows) weights.push_back(prefilling ? 1.0 : job->weight_);
  const auto shares = step_shares(weights, took);
  if (!prefilling) {
    double total = 0.0;
    for (double w : weights) total += w;
    const double per_weight = took / total;
    seconds_per_weight_ =
        seconds_per_weight_ == 0.0 ? per_weight : 0.8 * seconds_per_weight_ + 0.2 * per_weight;
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    Job* job = rows[i];
    job->charge_ += shares[i];
    (prefilling ? job->progress_.prefill_seconds : job->progress_.decode_seconds) += shares[i];
    deliver(*job);
  }
}

std::vector<Job*> Engine::prefill(Job& job) {
  job.progress_.started = Clock::now();
  job.sequence_->prefill();
  std::vector<Job*> forked;
  for (auto& follower : job.followers_) {
    follower->progress_.started = job.progress_.started;
    follower->sequence_ = job.sequence_->fork(follower->spec().sampling.seed);
    follower->charge_ = job.charge_;
    follower->weight_ = job.weight_;
    active_.push_back(follower);
    forked.push_back(follower.get());
  }
  job.followers_.clear();
  return forked;
}

void Engine::decode(const std::vector<Job*>& rows) {
  if (rows.size() == 1) {
    // One sequence (a dynamic router's, or an architecture nobody else runs): the same step as
    // `flextron generate`.
    rows.front()->sequence_->decode_step();
  } else {
    // Rows share a batch key, hence (no router) a runtime, and on the torch forward an
    // architecture; the fast runtime's rows may be at several.
    std::vector<int64_t> tokens;
    for (Job* job : rows) tokens.push_back(job->sequence_->next_input());
    const auto& arch = architecture_of(rows.front()->spec());
    if (auto* engine = rows.front()->sequence_->engine()) {
      std::vector<runtime::EngineCache*> caches;
      std::vector<const model::Architecture*> archs;
      for (Job* job : rows) {
        caches.push_back(job->sequence_->engine_cache());
        archs.push_back(&architecture_of(job->spec()));
      }
      const float* logits = engine->decode_batch(tokens, caches, archs);
      const int64_t vocab = engine->config().vocab_size;
      for (size_t b = 0; b < rows.size(); ++b)
        rows[b]->sequence_->accept(logits + static_cast<int64_t>(b) * vocab);
    } else {
      std::vector<model::KVCache*> caches;
      for (Job* job : rows) caches.push_back(job->sequence_->cache());
      auto logits = model_.decode_rows(tokens, caches, arch.empty() ? nullptr : &arch);
      for (size_t b = 0; b < rows.size(); ++b)
        rows[b]->sequence_->accept(logits[static_cast<int64_t>(b)]);
    }
  }
  metrics_.record_batch(static_cast<int64_t>(rows.size()));
  for (Job* job : rows) {
    ++job->progress_.decode_steps;
    job->progress_.batch_rows += static_cast<double>(rows.size());
  }
}

void Engine::deliver(Job& job) {
  auto& seq = *job.sequence_;
  std::string text = job.stream_.push(seq.take_text());
  auto logprobs = seq.take_logprobs();
  if (job.stream_.stopped()) seq.finish("stop");
  const auto tokens = static_cast<int64_t>(seq.tokens().size());
  if (tokens > 0 && job.progress_.completion_tokens == 0) job.progress_.first_token = Clock::now();
  job.progress_.completion_tokens = tokens;
  if (seq.finished()) {
    job.publish(text + job.stream_.flush(), std::move(logprobs), false);
    finish(job, seq.stop_reason());
  } else if (!text.empty() || !logprobs.empty()) {
    job.publish(text, std::move(logprobs), false);
  }
}

void Engine::finish(Job& job, const std::string& reason, const std::string& error) {
  job.progress_.stop_reason = reason;
  job.progress_.error = error;
  job.progress_.finished = Clock::now();
  if (job.progress_.started == Clock::time_point()) job.progress_.started = job.progress_.finished;
  if (job.sequence_) {
    job.progress_.decoded_tokens = job.sequence_->decoded();
    if (const auto* stats = job.sequence_->speculative_stats()) job.progress_.speculative = *stats;
  }
  job.sequence_.reset();  // frees the KV cache; the engine drops the job from active_
  Metrics::Generation g;
  g.budget = job.spec().budget_label;
  g.router = job.spec().router_label;
  g.finish_reason = error.empty() ? finish_reason(reason) : "error";
  g.prompt_tokens = job.progress_.prompt_tokens;
  g.completion_tokens = job.progress_.completion_tokens;
  g.queue_seconds = seconds(job.progress_.started - job.progress_.submitted);
  g.first_token_seconds = seconds(job.progress_.first_token - job.progress_.submitted);
  g.total_seconds = seconds(job.progress_.finished - job.progress_.submitted);
  metrics_.record_generation(g);
  job.publish("", {}, true);
  // Choices never forked (the leader failed or was cancelled before its prefill) end with it.
  auto followers = std::move(job.followers_);
  job.followers_.clear();
  for (auto& follower : followers) finish(*follower, reason, error);
}

}  // namespace flextron::serve
