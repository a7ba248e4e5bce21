// The generation engine: one thread owns the model and runs every forward; HTTP handlers submit
// jobs and wait for their text.
//
// Scheduling is processor sharing (serve/schedule.h). Every active sequence is charged the
// engine time of the steps it takes part in (a batched step's time split between its rows in
// proportion to what each row costs). Each step serves the least-charged sequence, together with
// the other active sequences it can batch with that would not get ahead of it (up to max_batch,
// least charged first), in one batched decode step. So every request gets an equal share of the
// engine's time whatever its budget, a cheaper architecture turns that share into
// proportionally more tokens, and batched rows share the cost of reading the weights. On the
// fast runtime, sequences at different static budgets batch together (FastDecoder::decode_batch
// over several architectures: the widths all rows share run once for all of them); on the torch
// forward only those of one architecture do. A sequence joins at the least charge of those
// running: it neither waits for them nor overtakes them. Dynamic-router sequences choose widths
// per token, so each decodes alone. Jobs run on the fast CPU runtime where it applies
// (runtime/fast_decoder.h: its batched step reads each weight once for all rows; a dynamic
// router's prompt is prefilled by the torch forward, its decode steps on the engine) and on the
// torch forward otherwise (a GPU, // fp16/bf16 weights). At most max_active sequences hold KV
// caches; up to max_queue more wait, and beyond that submit() answers 503.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "model/transformer.h"
#include "route/select.h"
#include "runtime/fast_decoder.h"
#include "runtime/sampler.h"
#include "runtime/sequence.h"
#include "runtime/speculative.h"
#include "runtime/token_constraint.h"
#include "serve/metrics.h"
#include "serve/text_stream.h"
#include "text/tokenizer.h"

namespace flextron::serve {

using Clock = std::chrono::steady_clock;

// What to generate, checked by the caller (prompt fits, plan resolved).
struct JobSpec {
  std::vector<int64_t> prompt_tokens;  // BOS + prompt
  int64_t max_tokens = 16;
  runtime::SamplingOptions sampling;
  std::vector<std::string> stop;
  std::vector<int64_t> stop_ids;            // token ids that end it besides the tokenizer's end ids
  std::shared_ptr<route::BudgetPlan> plan;  // null: the full model
  std::string budget_label = "full";        // metrics label: "0.5", "full"
  std::string router_label = "static";
  int64_t logprobs = -1;  // >= 0: record each token's log-probability and this many alternatives
  // Structured output: every choice's sequence gets a clone of it (null: free text).
  std::shared_ptr<const runtime::TokenConstraint> constraint;
  // Self-speculative decoding with the engine's draft (Engine::set_draft); each choice then
  // decodes alone, a round at a time.
  bool speculative = false;
};

// How a job ended, with its timings (filled by the engine; read after finished).
struct JobOutcome {
  std::string stop_reason;  // Sequence's reason, "stop" (a stop string) or "cancelled"
  std::string error;        // non-empty when the engine could not run it
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t decode_steps = 0;
  double batch_rows = 0.0;  // sum over decode steps of the rows decoded together
  Clock::time_point submitted, started, first_token, finished;
  // Engine time charged to this job (a batched step's time split between its rows).
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
  int64_t decoded_tokens = 0;  // positions the decode steps decoded (speculative: > steps)
  std::optional<runtime::SpeculativeStats> speculative;  // its rounds, when it speculated
};

class Job {
 public:
  explicit Job(JobSpec spec);
  const JobSpec& spec() const { return spec_; }

  // Handler side. Waits up to `timeout` for new text or the end; appends new text to `out`.
  // Returns true once the job has finished (and all its text was handed out).
  bool wait(std::string& out, std::chrono::milliseconds timeout);
  // The same, also handing out the log-probabilities of the tokens generated since the last
  // call (JobSpec::logprobs); they may run ahead of the text a stop string holds back.
  bool wait(std::string& out, std::vector<runtime::TokenLogprob>& logprobs,
            std::chrono::milliseconds timeout);
  // Asks the engine to stop generating for this job (a client went away).
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  JobOutcome outcome() const;

 private:
  friend class Engine;
  // Engine side: hands out text; at the end, the outcome with it.
  void publish(const std::string& text, std::vector<runtime::TokenLogprob> logprobs, bool finished);

  const JobSpec spec_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string text_;                             // not yet taken by wait()
  std::vector<runtime::TokenLogprob> logprobs_;  // the same
  bool finished_ = false;
  JobOutcome outcome_;  // set when finished
  std::atomic<bool> cancelled_{false};

  // Engine thread only (and a queued job's finish at shutdown).
  JobOutcome progress_;
  std::unique_ptr<runtime::Sequence> sequence_;
  TextStream stream_;
  std::string batch_key_;
  double charge_ = 0.0;
  double weight_ = 1.0;  // one decode step's cost relative to the full model's (decode_weight)
  // The other choices of the same prompt (submit_choices): forked from this job's sequence once
  // its prefill has run; empty after that.
  std::vector<std::shared_ptr<Job>> followers_;
};

struct EngineOptions {
  int64_t max_batch = 8;    // rows per batched decode step
  int64_t max_active = 16;  // sequences holding a KV cache at once
  int64_t max_queue = 64;   // submitted jobs waiting for a slot
  // auto: the fast CPU runtime when it runs the model (fp32 on the CPU), the torch forward
  // otherwise; fast: that or an error; torch.
  std::string runtime = "auto";
  // The fast runtime's weight format: f32, q8_0 or q4_0 (runtime/quant_kernels.h).
  std::string quant = "f32";  // (the CLI resolves "auto" to the directory's own format)
  // Fast runtime: sequences at different static budgets share a decode step (off: only those
  // of one architecture, as on the torch forward).
  bool batch_across_budgets = true;
};

class Engine {
 public:
  Engine(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
         const EngineOptions& options, Metrics& metrics);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // "fast" when jobs without a dynamic router run on the fast runtime, else "torch".
  const char* runtime() const { return fast_ ? "fast" : "torch"; }
  // The fast runtime's engine (null on the torch runtime), for calibrating a draft before the
  // first job.
  runtime::FastDecoder* fast_engine() { return fast_.get(); }
  // The draft speculative jobs use (JobSpec::speculative); call before the first submit.
  void set_draft(const runtime::SpeculativeOptions& draft) { draft_ = draft; }
  bool has_draft() const { return draft_.has_value(); }

  // Queues a job. Throws ApiError(503) when the queue is full or the engine is shutting down.
  std::shared_ptr<Job> submit(JobSpec spec);
  // `n` choices of one prompt: the first job prefills it, the others are forked from that
  // prefill with their own seeds (spec's seed + i, so a seeded request is reproducible), and
  // all n decode together. The spec must not use a dynamic router (its state is per sequence).
  std::vector<std::shared_ptr<Job>> submit_choices(JobSpec spec, int64_t n);
  // Stops taking jobs, cancels the queued ones, lets running ones finish for up to `grace`,
  // cancels the rest, and joins the engine thread.
  void shutdown(std::chrono::milliseconds grace);

 private:
  void run();
  void admit();  // queue -> active (engine thread, under mutex_)
  void step();   // one prefill or decode step
  // Runs the job's prompt; returns the followers forked from it (now active).
  std::vector<Job*> prefill(Job& job);
  void decode(const std::vector<Job*>& rows);
  void deliver(Job& job);
  void finish(Job& job, const std::string& reason, const std::string& error = {});

  model::TransformerImpl& model_;
  const text::Tokenizer& tokenizer_;
  EngineOptions options_;
  std::unique_ptr<runtime::FastDecoder> fast_;  // null: every job on the torch forward
  std::optional<runtime::SpeculativeOptions> draft_;
  Metrics& metrics_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  int64_t active_count_ = 0;  // active_.size() as of the engine's last look, under mutex_
  bool stopping_ = false;
  Clock::time_point deadline_ = Clock::time_point::max();  // cancel everything after it
  std::vector<std::shared_ptr<Job>> active_;               // engine thread only
  double seconds_per_weight_ = 0.0;  // a batched decode step's time per unit of row weight
  std::thread thread_;
};

}  // namespace flextron::serve
