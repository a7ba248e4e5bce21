// What the server sends of generated text: stop strings split across pieces, UTF-8 characters
// split across byte pieces, and the request parser's errors.
#include <gtest/gtest.h>

#include "serve/api.h"
#include "serve/text_stream.h"

namespace fs = flextron::serve;
using nlohmann::json;

namespace {

// Feeds `pieces` one by one and returns everything sent (pushes + flush).
std::string stream_all(fs::TextStream& s, const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) out += s.push(p);
  return out + s.flush();
}

TEST(TextStream, StopStringSplitAcrossPiecesIsNeverSent) {
  fs::TextStream s({"\nUser:"});
  EXPECT_EQ(s.push("Hello"), "Hello");
  EXPECT_EQ(s.push(" there\nUs"), " there");  // "\nUs" could begin the stop string
  EXPECT_FALSE(s.stopped());
  EXPECT_EQ(s.push("er: more"), "");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.push("after"), "");
  EXPECT_EQ(s.flush(), "");
}

TEST(TextStream, HeldBackPrefixIsReleasedWhenItDoesNotComplete) {
  fs::TextStream s({"STOP"});
  EXPECT_EQ(s.push("a ST"), "a ");
  EXPECT_EQ(s.push("ART"), "START");
  EXPECT_EQ(stream_all(s, {" x ST"}), " x ST");  // flush releases the unfinished prefix
  EXPECT_FALSE(s.stopped());
}

TEST(TextStream, EarliestOfSeveralStopStringsWins) {
  fs::TextStream s({"cd", "b"});
  EXPECT_EQ(stream_all(s, {"abcd"}), "a");
  EXPECT_TRUE(s.stopped());
}

TEST(TextStream, Utf8CharacterSplitAcrossPiecesIsSentWhole) {
  // "é" = C3 A9, "€" = E2 82 AC, "😀" = F0 9F 98 80: every split point.
  for (const std::string ch : {"\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"}) {
    for (size_t cut = 1; cut < ch.size(); ++cut) {
      fs::TextStream s;
      EXPECT_EQ(s.push("x" + ch.substr(0, cut)), "x");
      EXPECT_EQ(s.push(ch.substr(cut) + "y"), ch + "y");
    }
  }
  EXPECT_EQ(fs::incomplete_utf8_tail("ab"), 0u);
  EXPECT_EQ(fs::incomplete_utf8_tail("a\xE2\x82"), 2u);
  EXPECT_EQ(fs::incomplete_utf8_tail("a\xE2\x82\xAC"), 0u);
}

TEST(CompletionRequest, FieldsAndDefaults) {
  auto r = fs::parse_completion_request(
      R"({"prompt":["Once"],"max_tokens":7,"temperature":0,"top_p":0.5,"seed":3,"stop":"x",)"
      R"("stream":true,"budget":0.6,"budget_kind":"params","router":"uniform"})",
      fs::Endpoint::Completions);
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.prompts[0].text, "Once");
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.sampling.temperature, 0.0);
  EXPECT_EQ(r.sampling.top_p, 0.5);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.sampling.seed, 3u);
  EXPECT_EQ(r.stop, std::vector<std::string>{"x"});
  EXPECT_TRUE(r.stream);
  EXPECT_EQ(r.budget.value_or(0), 0.6);
  EXPECT_EQ(r.budget_kind, "params");
  EXPECT_EQ(r.router, "uniform");
  auto d = fs::parse_completion_request(R"({"prompt":"a"})", fs::Endpoint::Completions);
  EXPECT_EQ(d.max_tokens, 16);
  EXPECT_FALSE(d.budget.has_value());
  EXPECT_FALSE(d.seed_given);
}

TEST(CompletionRequest, ChatTemplateAndItsStopStrings) {
  auto r = fs::parse_completion_request(
      R"({"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},)"
      R"({"role":"assistant","content":"Hello."},{"role":"user","content":"Go on"}]})",
      fs::Endpoint::ChatCompletions);
  EXPECT_EQ(r.prompts.at(0).text,
            "Be brief.\n\nUser: Hi\nAssistant: Hello.\nUser: Go on\nAssistant:");
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\nUser:", "\nAssistant:"}));
  EXPECT_EQ(r.max_tokens, 256);
}

// OpenAI's prompt shapes, choices, logprobs, echo, usage in streams and content parts.
TEST(CompletionRequest, PromptShapesChoicesAndLogprobs) {
  auto r = fs::parse_completion_request(
      R"({"prompt":["a",[1,2,3]],"n":3,"logprobs":2,"stream":true,)"
      R"("stream_options":{"include_usage":true},"response_format":{"type":"text"},)"
      R"("presence_penalty":0,"tool_choice":"none","logit_bias":{},"user":"me"})",
      fs::Endpoint::Completions);
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_FALSE(r.prompts[0].is_tokens);
  EXPECT_EQ(r.prompts[0].text, "a");
  EXPECT_TRUE(r.prompts[1].is_tokens);
  EXPECT_EQ(r.prompts[1].tokens, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(r.n, 3);
  EXPECT_EQ(r.logprobs, 2);
  EXPECT_TRUE(r.include_usage);
  auto ids =
      fs::parse_completion_request(R"({"prompt":[5,6],"echo":true})", fs::Endpoint::Completions);
  ASSERT_EQ(ids.prompts.size(), 1u);
  EXPECT_EQ(ids.prompts[0].tokens, (std::vector<int64_t>{5, 6}));
  EXPECT_TRUE(ids.echo);
  EXPECT_EQ(ids.logprobs, -1);
  auto chat = fs::parse_completion_request(
      R"({"messages":[{"role":"user","content":[{"type":"text","text":"Hi "},)"
      R"({"type":"text","text":"there"}]}],"logprobs":true,"top_logprobs":3})",
      fs::Endpoint::ChatCompletions);
  EXPECT_EQ(chat.prompts.at(0).text, "User: Hi there\nAssistant:");
  EXPECT_EQ(chat.logprobs, 3);
  auto plain = fs::parse_completion_request(
      R"({"messages":[{"role":"user","content":"x"}],"logprobs":true})",
      fs::Endpoint::ChatCompletions);
  EXPECT_EQ(plain.logprobs, 0);
}

// Log-probabilities' two shapes, and which tokens a cut text keeps.
TEST(CompletionRequest, LogprobShapes) {
  using flextron::runtime::PieceLogprob;
  std::vector<flextron::runtime::TokenLogprob> tokens(2);
  tokens[0].token = PieceLogprob{7, "Hi", -0.5};
  tokens[0].top = {tokens[0].token, PieceLogprob{9, "Ho", -1.5}};
  tokens[1].token = PieceLogprob{8, " \xC3", -0.25};
  tokens[1].top = {tokens[1].token};
  auto c = fs::completion_logprobs(tokens, 3);
  EXPECT_EQ(c["tokens"], json({"Hi", " \xC3"}));
  EXPECT_EQ(c["token_logprobs"], json({-0.5, -0.25}));
  EXPECT_EQ(c["top_logprobs"][0], json({{"Hi", -0.5}, {"Ho", -1.5}}));
  EXPECT_EQ(c["text_offset"], json({3, 5}));
  auto chat = fs::chat_logprobs(tokens);
  EXPECT_EQ(chat["content"][1]["bytes"], json({32, 195}));
  EXPECT_EQ(chat["content"][0]["top_logprobs"][1]["token"], "Ho");
  EXPECT_TRUE(chat["refusal"].is_null());
  EXPECT_EQ(fs::tokens_within(tokens, 0), 0u);
  EXPECT_EQ(fs::tokens_within(tokens, 1), 1u);
  EXPECT_EQ(fs::tokens_within(tokens, 2), 1u);
  EXPECT_EQ(fs::tokens_within(tokens, 3), 2u);
  EXPECT_EQ(fs::tokens_within(tokens, 99), 2u);
}

// Each bad request names the field (param) and answers 400.
TEST(CompletionRequest, BadRequestsNameTheField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"prompt":"a","max_tokens":0})", "max_tokens"},
      {R"({"prompt":"a","max_tokens":"many"})", "max_tokens"},
      {R"({"prompt":5})", "prompt"},
      {R"({"prompt":[]})", "prompt"},
      {R"({"prompt":[1,-2]})", "prompt"},
      {R"({"prompt":["a",[1,"x"]]})", "prompt[1]"},
      {R"({"prompt":["a",{}]})", "prompt"},
      {R"({"prompt":["a","b"],"n":9})", "prompt"},
      {R"({"prompt":"a","logprobs":6})", "logprobs"},
      {R"({"prompt":"a","logprobs":true})", "logprobs"},
      {R"({"prompt":"a","logprobs":1,"echo":true})", "echo"},
      {R"({"prompt":"a","echo":1})", "echo"},
      {R"({"prompt":"a","stream_options":{"include_usage":true}})", "stream_options"},
      {R"({"prompt":"a","stream":true,"stream_options":{"include_usage":1}})",
       "stream_options.include_usage"},
      {R"({"prompt":"a","response_format":{"type":"xml"}})", "response_format.type"},
      {R"({"prompt":"a","response_format":{"type":"json_schema"}})", "response_format.json_schema"},
      {R"({"prompt":"a","response_format":{"type":"json_schema","json_schema":{"name":"x"}}})",
       "response_format.json_schema.schema"},
      {R"({"prompt":"a","response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object","properties":{"a":{"format":"date"}}}}}})",
       "response_format.json_schema.schema.properties.a.format"},
      {R"({"prompt":"a","tools":[{"type":"function"}]})", "tools"},
      {R"({"prompt":"a","tool_choice":"auto"})", "tool_choice"},
      {R"({"prompt":"a","logit_bias":{"5":10}})", "logit_bias"},
      {R"({"prompt":"a","presence_penalty":0.5})", "presence_penalty"},
      {R"({"prompt":"a","frequency_penalty":1})", "frequency_penalty"},
      {R"({"prompt":"a","suffix":"end"})", "suffix"},
      {R"({"prompt":"a","best_of":3})", "best_of"},
      {R"({"prompt":"a","router":"smart"})", "router"},
      {R"({"prompt":"a","budget_kind":"speed"})", "budget_kind"},
      {R"({"max_tokens":3})", "prompt"},
      {R"({"prompt":"a","temperature":-1})", "temperature"},
      {R"({"prompt":"a","top_p":0})", "top_p"},
      {R"({"prompt":"a","n":0})", "n"},
      {R"({"prompt":"a","n":17})", "n"},
      {R"({"prompt":"a","stream":"yes"})", "stream"},
      {R"({"prompt":"a","stop":[1]})", "stop"},
      {R"({"prompt":"a","budget":-0.5})", "budget"},
      {R"({"prompt":"a","budget":"half"})", "budget"},
  };
  for (const auto& [body, param] : cases) {
    try {
      fs::parse_completion_request(body, fs::Endpoint::Completions);
      ADD_FAILURE() << "accepted " << body;
    } catch (const fs::ApiError& e) {
      EXPECT_EQ(e.status, 400) << body;
      EXPECT_EQ(e.param, param) << body << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find(param), std::string::npos) << e.what();
      // The message is the API's, not the CLI's ("--router: ...").
      EXPECT_EQ(std::string(e.what()).find("--"), std::string::npos) << e.what();
    }
  }
  const std::vector<std::pair<std::string, std::string>> chat_cases = {
      {R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})",
       "messages[0].content[0].type"},
      {R"({"messages":[{"role":"user","content":[{"type":"text"}]}]})",
       "messages[0].content[0].text"},
      {R"({"messages":[{"role":"user","content":5}]})", "messages[0].content"},
      {R"({"messages":[{"role":"user","content":"a"}],"top_logprobs":2})", "top_logprobs"},
      {R"({"messages":[{"role":"user","content":"a"}],"logprobs":true,"top_logprobs":21})",
       "top_logprobs"},
      {R"({"messages":[{"role":"user","content":"a"}],"echo":true})", "echo"},
  };
  for (const auto& [body, param] : chat_cases) {
    try {
      fs::parse_completion_request(body, fs::Endpoint::ChatCompletions);
      ADD_FAILURE() << "accepted " << body;
    } catch (const fs::ApiError& e) {
      EXPECT_EQ(e.status, 400) << body;
      EXPECT_EQ(e.param, param) << body << ": " << e.what();
    }
  }
  for (const std::string body :
       {R"({"messages":[]})", R"({"messages":[{"role":"robot","content":"x"}]})",
        R"({"messages":[{"role":"user"}]})", R"({"prompt":"a"})"}) {
    EXPECT_THROW(fs::parse_completion_request(body, fs::Endpoint::ChatCompletions), fs::ApiError)
        << body;
  }
  for (const std::string body : {"{bad", "[1,2]", ""}) {
    try {
      fs::parse_completion_request(body, fs::Endpoint::Completions);
      ADD_FAILURE() << "accepted " << body;
    } catch (const fs::ApiError& e) {
      EXPECT_EQ(e.status, 400);
    }
  }
}

}  // namespace
