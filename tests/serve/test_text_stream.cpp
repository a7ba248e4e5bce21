// What the server sends of generated text: stop strings split across pieces, UTF-8 characters
// split across byte pieces, and the request parser's errors.
#include <gtest/gtest.h>

#include "serve/api.h"
#include "serve/text_stream.h"

namespace fs = flextron::serve;

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
  EXPECT_EQ(r.prompt, "Once");
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
  EXPECT_EQ(r.prompt, "Be brief.\n\nUser: Hi\nAssistant: Hello.\nUser: Go on\nAssistant:");
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\nUser:", "\nAssistant:"}));
  EXPECT_EQ(r.max_tokens, 256);
}

// Each bad request names the field (param) and answers 400.
TEST(CompletionRequest, BadRequestsNameTheField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"prompt":"a","max_tokens":0})", "max_tokens"},
      {R"({"prompt":"a","max_tokens":"many"})", "max_tokens"},
      {R"({"prompt":5})", "prompt"},
      {R"({"prompt":["a","b"]})", "prompt"},
      {R"({"max_tokens":3})", "prompt"},
      {R"({"prompt":"a","temperature":-1})", "temperature"},
      {R"({"prompt":"a","top_p":0})", "top_p"},
      {R"({"prompt":"a","n":2})", "n"},
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
