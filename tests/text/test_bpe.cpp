// The BPE engine against llama.cpp's tokenizer test vocabularies (ids from HF `tokenizers`): every
// family through the GGUF path (llama.cpp's pre-tokenizer regexes, score merging for `llama`)
// and through a tokenizer.json rebuilt here from the GGUF vocabulary plus the family's published
// tokenizer.json settings (rank merging), and through the tokenizer.json that GGUF import writes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/gguf_tokenizer.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "text/tokenizer_cases.h"

namespace flextron::text {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::TokenizerCase;

const std::vector<std::string> kFamilies = {"gpt-2",       "llama-spm", "phi-3",  "falcon",
                                            "mpt",         "starcoder", "refact", "deepseek-coder",
                                            "deepseek-llm"};

fs::path vocab_dir() {
  return testing::shared_data() / "tokenizers" / "llama.cpp";
}
fs::path gguf_path(const std::string& family) {
  return vocab_dir() / ("ggml-vocab-" + family + ".gguf");
}
std::vector<TokenizerCase> family_cases(const std::string& family) {
  const auto base = gguf_path(family).string();
  return testing::read_tokenizer_cases(base + ".inp", base + ".out");
}

// Every case exact (the first mismatches listed) and decode(encode(x)) == x; returns the number
// of exact cases.
size_t expect_family(const Tokenizer& tok, const std::vector<TokenizerCase>& cases,
                     const std::string& label) {
  size_t exact = 0, shown = 0, round_trips = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto got = tok.encode(cases[i].input, false);
    if (got == cases[i].expected) {
      ++exact;
    } else if (shown++ < 4) {
      ADD_FAILURE() << label << " case " << i << " " << testing::quoted_text(cases[i].input)
                    << "\n  expected " << testing::ids_text(cases[i].expected) << "\n  got      "
                    << testing::ids_text(got);
    }
    const auto back = tok.decode(got);
    if (back == cases[i].input) {
      ++round_trips;
    } else {
      ADD_FAILURE() << label << " case " << i << " decodes to " << testing::quoted_text(back)
                    << ", not " << testing::quoted_text(cases[i].input);
    }
  }
  EXPECT_EQ(exact, cases.size()) << label;
  EXPECT_EQ(round_trips, cases.size()) << label;
  std::printf("[ tokenizer ] %-32s %zu/%zu exact, %zu/%zu round trips\n", label.c_str(), exact,
              cases.size(), round_trips, cases.size());
  return exact;
}

// --- tokenizer.json fixtures: the GGUF vocabulary with each family's published settings ----------

// HF transformers' SentencePiece converter: every split of a piece into two pieces is a merge,
// ordered by the piece's score (highest first), splits of one piece by the ids of their halves.
json merges_from_scores(const std::vector<std::string>& tokens, const std::vector<float>& scores,
                        const std::vector<int32_t>& types) {
  std::map<std::string, int64_t> vocab;
  for (size_t i = 0; i < tokens.size(); ++i) vocab.emplace(tokens[i], static_cast<int64_t>(i));
  struct M {
    float score;
    std::string a, b;
  };
  std::vector<M> all;
  for (size_t p = 0; p < tokens.size(); ++p) {
    if (types[p] != 1) continue;
    const std::string& s = tokens[p];
    std::vector<std::pair<std::pair<int64_t, int64_t>, M>> local;
    for (size_t k = 1; k < s.size(); ++k) {
      if ((static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) continue;  // inside a character
      auto l = vocab.find(s.substr(0, k)), r = vocab.find(s.substr(k));
      if (l != vocab.end() && r != vocab.end())
        local.push_back({{l->second, r->second}, {scores[p], l->first, r->first}});
    }
    std::sort(local.begin(), local.end(),
              [](const auto& x, const auto& y) { return x.first < y.first; });
    for (auto& e : local) all.push_back(e.second);
  }
  std::stable_sort(all.begin(), all.end(),
                   [](const M& x, const M& y) { return x.score > y.score; });
  json out = json::array();
  for (const auto& m : all) out.push_back(json::array({m.a, m.b}));
  return out;
}

// The families' tokenizer.json normalizer / pre_tokenizer / decoder / post_processor, as the
// published files have them (Llama-2-7b-hf, Phi-3-mini-4k-instruct, gpt2, falcon-7b, mpt-7b,
// starcoder, Refact-1_6B-fim, deepseek-coder-6.7b-base, deepseek-llm-7b-base).
json family_settings(const std::string& family) {
  const json byte_level = json::parse(
      R"({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})");
  const json byte_level_no_regex = json::parse(
      R"({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false})");
  json s;
  s["decoder"] = json::parse(
      R"({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true})");
  s["post_processor"] = s["decoder"];
  s["normalizer"] = nullptr;
  if (family == "llama-spm" || family == "phi-3") {
    s["normalizer"] = json::parse(R"({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]})");
    s["pre_tokenizer"] = nullptr;
    s["decoder"] = json::parse(R"({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})");
    s["post_processor"] = json::parse(R"({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}})");
  } else if (family == "gpt-2") {
    s["pre_tokenizer"] = byte_level;
  } else if (family == "mpt") {
    s["normalizer"] = json::parse(R"({"type": "NFC"})");
    s["pre_tokenizer"] = byte_level;
  } else if (family == "falcon") {
    s["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {json::parse(R"({"type": "Punctuation", "behavior": "Contiguous"})"), byte_level,
          json::parse(R"({"type": "Digits", "individual_digits": false})"),
          json::parse(R"({"type": "Split", "pattern": {"Regex": "[0-9][0-9][0-9]"},
                                            "behavior": "Isolated", "invert": false})")}}};
  } else if (family == "starcoder" || family == "refact") {
    s["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {json::parse(R"({"type": "Digits", "individual_digits": true})"), byte_level}}};
  } else if (family == "deepseek-coder" || family == "deepseek-llm") {
    auto split = [](const std::string& regex) {
      return json{{"type", "Split"},
                  {"pattern", {{"Regex", regex}}},
                  {"behavior", "Isolated"},
                  {"invert", false}};
    };
    json steps = json::array({split("[\r\n]")});
    if (family == "deepseek-coder") {
      steps.push_back(split(R"(\s?\p{L}+)"));
      steps.push_back(split(R"(\s?\p{P}+)"));
    } else {
      steps.push_back(
          split("\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-"
                "ᏽᲐ-"
                "ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-"
                "ℝℤΩℨK-"
                "ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-"
                "𐓓𐓘-"
                "𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+"));
      steps.push_back(split("\\s?[!-/:-~！-／：-～‘-‟　-。]+"));
      steps.push_back(split(R"(\s+$)"));
    }
    steps.push_back(split("[一-龥ࠀ-一가-퟿]+"));
    steps.push_back(json::parse(R"({"type": "Digits", "individual_digits": true})"));
    steps.push_back(byte_level_no_regex);
    s["normalizer"] = json::parse(R"({"type": "Sequence", "normalizers": []})");
    s["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", steps}};
  } else {
    ADD_FAILURE() << "no settings for " << family;
  }
  return s;
}

// tokenizer.json for `family` from its GGUF vocabulary: written to a fresh directory, loaded.
std::unique_ptr<Tokenizer> fixture_tokenizer(const std::string& family, const fs::path& root) {
  const auto meta = io::read_gguf(gguf_path(family)).metadata;
  const auto tokens = meta.at("tokenizer.ggml.tokens").value.get<std::vector<std::string>>();
  const auto types = meta.at("tokenizer.ggml.token_type").value.get<std::vector<int32_t>>();
  const bool spm = meta.at("tokenizer.ggml.model").value.get<std::string>() == "llama";
  json vocab = json::object(), added = json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!vocab.contains(tokens[i])) vocab[tokens[i]] = i;
    if (types[i] == 2 || types[i] == 3 || types[i] == 4)
      added.push_back({{"id", i},
                       {"content", tokens[i]},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", types[i] != 4}});
  }
  json j = family_settings(family);
  j["version"] = "1.0";
  j["added_tokens"] = added;
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"dropout", nullptr}};
  if (spm) {
    const auto scores = meta.at("tokenizer.ggml.scores").value.get<std::vector<float>>();
    j["model"]["merges"] = merges_from_scores(tokens, scores, types);
    j["model"]["byte_fallback"] = true;
    j["model"]["fuse_unk"] = true;
    j["model"]["unk_token"] = "<unk>";
  } else {
    j["model"]["merges"] = meta.at("tokenizer.ggml.merges").value;
    j["model"]["byte_fallback"] = false;
  }
  const auto dir = root / family;
  fs::create_directories(dir);
  io::write_text_atomically(dir / "tokenizer.json", j.dump());
  return load_hf_tokenizer(dir / "tokenizer.json");
}

TEST(BpeFamiliesTest, GgufPathReproducesEveryCase) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  for (const auto& family : kFamilies) {
    const auto tok = io::gguf_tokenizer(io::read_gguf(gguf_path(family)).metadata, family);
    const auto cases = family_cases(family);
    ASSERT_GT(cases.size(), 30u) << family;
    expect_family(*tok, cases, family + " (gguf)");
    EXPECT_EQ(tok->kind().rfind("gguf-", 0), 0u) << tok->kind();
  }
}

TEST(BpeFamiliesTest, PublishedTokenizerJsonSettingsReproduceEveryCase) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto root = testing::scratch_dir();
  for (const auto& family : kFamilies) {
    const auto tok = fixture_tokenizer(family, root);
    EXPECT_EQ(tok->kind(), "hf-bpe (tokenizer.json)");
    expect_family(*tok, family_cases(family), family + " (tokenizer.json)");
  }
}

// GGUF import's tokenizer.json (score merges become HF merges for `llama`) tokenizes as the GGUF
// path does, on the cases and on a stretch of Shakespeare.
TEST(BpeFamiliesTest, GeneratedTokenizerJsonMatchesTheGgufPath) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const std::string text =
      testing::read_all(testing::shared_data() / "corpora" / "tinyshakespeare.txt")
          .substr(0, 20000);
  const auto root = testing::scratch_dir();
  for (const auto& family : kFamilies) {
    const auto gguf = io::gguf_tokenizer(io::read_gguf(gguf_path(family)).metadata, family);
    const auto dir = root / ("generated-" + family);
    fs::create_directories(dir);
    gguf->save(dir / gguf->file_name());
    const auto saved = load_tokenizer(dir, 0);
    EXPECT_EQ(saved->kind(), "hf-bpe (tokenizer.json)");
    EXPECT_EQ(saved->vocab_size(), gguf->vocab_size());
    EXPECT_EQ(saved->bos_id(), gguf->bos_id()) << family;
    EXPECT_EQ(saved->eos_id(), gguf->eos_id()) << family;
    EXPECT_EQ(saved->gguf_pre(), gguf->gguf_pre()) << family;
    expect_family(*saved, family_cases(family), family + " (generated tokenizer.json)");
    for (size_t at = 0; at < text.size(); at += 2000) {
      const auto chunk = text.substr(at, 2000);
      ASSERT_EQ(saved->encode(chunk, true), gguf->encode(chunk, true)) << family << " at " << at;
    }
    EXPECT_EQ(gguf->decode(gguf->encode(text, false)), text) << family;
  }
}

TEST(BpeFamiliesTest, SpecialTokensAndBos) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto spm = io::gguf_tokenizer(io::read_gguf(gguf_path("llama-spm")).metadata, "spm");
  EXPECT_EQ(spm->bos_id(), 1);
  EXPECT_EQ(spm->eos_id(), 2);
  EXPECT_EQ(spm->encode("Hello world", true), (std::vector<int64_t>{1, 15043, 3186}));
  // Control tokens in the text are matched whole, as HF does; they decode to nothing.
  EXPECT_EQ(spm->encode("Hello</s>", false), (std::vector<int64_t>{15043, 2}));
  EXPECT_EQ(spm->decode({15043, 2}), "Hello");
  EXPECT_EQ(spm->decode_piece(15043, 3186), " world");
  EXPECT_EQ(spm->decode_piece(1, 15043), "Hello");
  EXPECT_EQ(spm->decode_piece(15043, 13), "\n");  // <0x0A>
  const auto gpt2 = io::gguf_tokenizer(io::read_gguf(gguf_path("gpt-2")).metadata, "gpt2");
  EXPECT_EQ(gpt2->kind(), "gguf-gpt2/gpt-2");
  EXPECT_EQ(gpt2->gguf_pre(), "gpt-2");
  EXPECT_TRUE(gpt2->byte_level());
  EXPECT_FALSE(spm->byte_level());
  EXPECT_EQ(gpt2->encode("a<|endoftext|>b", false), (std::vector<int64_t>{64, 50256, 65}));
  // The vocab.json + merges.txt loader runs on the same engine and agrees with the GGUF path.
  const auto dir = testing::shared_data() / "tokenizers";
  const auto files = load_gpt2_tokenizer(dir / "gpt2_vocab.json", dir / "gpt2_merges.txt");
  EXPECT_EQ(files->kind(), "gpt2-bpe");
  EXPECT_EQ(files->gguf_pre(), "gpt-2");
  const std::string text = "Hello, world! It's 2026 and the llamas' café is open.\n\n  x";
  EXPECT_EQ(files->encode(text, true), gpt2->encode(std::string("<|endoftext|>") + text, false));
}

// --- bad input -----------------------------------------------------------------------------------

// Expects a one-line flextron::Error containing every needle.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no flextron::Error thrown; expected one naming " << needles.front();
  } catch (const flextron::Error& e) {
    const std::string what = e.what();
    for (const auto& n : needles)
      EXPECT_NE(what.find(n), std::string::npos) << "\"" << what << "\" does not name " << n;
    EXPECT_EQ(what.find('\n'), std::string::npos) << "not one line: " << what;
  }
}

fs::path write_tokenizer_json(const fs::path& root, const std::string& name,
                              const std::string& text) {
  const auto dir = root / name;
  fs::create_directories(dir);
  io::write_text_atomically(dir / "tokenizer.json", text);
  return dir / "tokenizer.json";
}

json tiny_bpe() {
  return json::parse(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<s>": 3,
      "</s>": 4}, "merges": ["a b"]}, "added_tokens": [
      {"id": 3, "content": "<s>", "special": true, "normalized": false},
      {"id": 4, "content": "</s>", "special": true, "normalized": false}]})");
}

TEST(HfTokenizerJsonTest, RefusesWhatItCannotHonour) {
  const auto root = testing::scratch_dir();
  json unigram = tiny_bpe();
  unigram["model"] = {{"type", "Unigram"}, {"vocab", json::array()}};
  auto path = write_tokenizer_json(root, "unigram", unigram.dump());
  expect_error([&] { load_hf_tokenizer(path); }, {path.string(), "\"Unigram\""});

  json pre = tiny_bpe();
  pre["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  path = write_tokenizer_json(root, "pre", pre.dump());
  expect_error([&] { load_hf_tokenizer(path); },
               {path.string(), "pre_tokenizer", "BertPreTokenizer"});

  json norm = tiny_bpe();
  norm["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "BertNormalizer"}}}}};
  path = write_tokenizer_json(root, "norm", norm.dump());
  expect_error([&] { load_hf_tokenizer(path); }, {path.string(), "normalizer", "BertNormalizer"});

  json dec = tiny_bpe();
  dec["decoder"] = {{"type", "WordPiece"}};
  path = write_tokenizer_json(root, "dec", dec.dump());
  expect_error([&] { load_hf_tokenizer(path); }, {path.string(), "decoder", "WordPiece"});

  json merge = tiny_bpe();
  merge["model"]["merges"] = {"a b", json::array({"a", "c"})};
  path = write_tokenizer_json(root, "merge", merge.dump());
  expect_error([&] { load_hf_tokenizer(path); }, {path.string(), "merge 1", "\"c\""});

  json regex = tiny_bpe();
  regex["pre_tokenizer"] = json::parse(R"({"type": "Split", "pattern": {"Regex": "(a"},
                                           "behavior": "Isolated", "invert": false})");
  path = write_tokenizer_json(root, "regex", regex.dump());
  expect_error([&] { load_hf_tokenizer(path); }, {path.string(), "(a"});

  path = write_tokenizer_json(root, "invalid", "{\"model\": {\"type\": \"BPE\",");
  expect_error([&] { load_hf_tokenizer(path); }, {path.string(), "invalid JSON"});

  const auto missing = root / "none" / "tokenizer.json";
  expect_error([&] { load_hf_tokenizer(missing); }, {missing.string()});

  FLEXTRON_REQUIRE_SHARED_DATA();
  auto meta = io::read_gguf(gguf_path("falcon")).metadata;
  meta["tokenizer.ggml.pre"] = io::gguf_string("nonesuch");
  expect_error([&] { io::gguf_tokenizer(meta, "x.gguf"); }, {"x.gguf", "\"nonesuch\""});
  meta["tokenizer.ggml.model"] = io::gguf_string("bert");
  expect_error([&] { io::gguf_tokenizer(meta, "x.gguf"); }, {"x.gguf", "\"bert\""});
}

TEST(HfTokenizerJsonTest, ConfigFilesDecideBosEosAndChatTemplate) {
  const auto root = testing::scratch_dir();
  const auto path = write_tokenizer_json(root, "config", tiny_bpe().dump());
  const auto dir = path.parent_path();
  auto plain = load_hf_tokenizer(path);
  EXPECT_EQ(plain->bos_id(), -1);
  EXPECT_EQ(plain->encode("abab", true), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(plain->encode("ba</s>", false), (std::vector<int64_t>{1, 0, 4}));
  io::write_text_atomically(dir / "tokenizer_config.json", R"({"bos_token": {"content": "<s>"},
      "eos_token": "</s>", "add_bos_token": true, "add_eos_token": true,
      "chat_template": "{{ messages }}"})");
  io::write_text_atomically(dir / "generation_config.json", R"({"eos_token_id": [4, 1]})");
  const auto tok = load_hf_tokenizer(path);
  EXPECT_EQ(tok->bos_id(), 3);
  EXPECT_EQ(tok->eos_id(), 4);
  EXPECT_EQ(tok->eos_ids(), (std::vector<int64_t>{4, 1}));
  EXPECT_EQ(tok->chat_template(), "{{ messages }}");
  EXPECT_EQ(tok->encode("abab", true), (std::vector<int64_t>{3, 2, 2, 4}));
  EXPECT_EQ(tok->decode({3, 2, 0, 4}), "aba");
  // save() copies all three files; the directory then loads the same tokenizer.
  const auto out = root / "saved";
  fs::create_directories(out);
  tok->save(out / tok->file_name());
  const auto again = load_tokenizer(out, 5);
  EXPECT_EQ(again->eos_ids(), tok->eos_ids());
  EXPECT_EQ(again->encode("abab", true), tok->encode("abab", true));
  EXPECT_EQ(testing::read_all(out / "tokenizer.json"), testing::read_all(path));
  // A tokenizer.model beats tokenizer.json; tokenizer.json beats vocab.json + merges.txt.
  io::write_text_atomically(out / "vocab.json", R"({"a": 0})");
  io::write_text_atomically(out / "merges.txt", "a a\n");
  EXPECT_EQ(load_tokenizer(out, 5)->kind(), "hf-bpe (tokenizer.json)");
}

TEST(HfTokenizerJsonTest, PipelineComponents) {
  const auto root = testing::scratch_dir();
  // Metaspace (prepend first, split), Lowercase + NFKC normalizers, Split behaviors.
  json j = json::parse(R"({"model": {"type": "BPE", "vocab": {"▁": 0, "a": 1, "b": 2, "▁a": 3,
      "ab": 4, "▁ab": 5, "-": 6, "ﬁ": 7, "f": 8, "i": 9, "fi": 10},
      "merges": ["▁ a", "a b", "▁a b", "f i"]},
      "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
      "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                        "split": true},
      "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                  "split": true}})");
  auto path = write_tokenizer_json(root, "metaspace", j.dump());
  auto tok = load_hf_tokenizer(path);
  EXPECT_EQ(tok->encode("AB ab", false), (std::vector<int64_t>{5, 5}));
  EXPECT_EQ(tok->encode("\xEF\xAC\x81", false), (std::vector<int64_t>{0, 10}));  // U+FB01 -> "fi"
  EXPECT_EQ(tok->decode({5, 5}), "ab ab");
  // Split's behaviors on "-" (Contiguous joins adjacent matches).
  const std::map<std::string, std::pair<std::string, std::vector<int64_t>>> behaviors = {
      {"Isolated", {"a-b", {0, 2, 1}}},
      {"Removed", {"a-b", {0, 1}}},
      {"MergedWithPrevious", {"a-b", {3, 1}}},
      {"MergedWithNext", {"a-b", {0, 4}}},
      {"Contiguous", {"ab--a", {5, 6, 0}}}};
  for (const auto& [behavior, want] : behaviors) {
    json s = json::parse(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "-": 2, "a-": 3,
        "-b": 4, "ab": 5, "--": 6}, "merges": ["a -", "- b", "a b", "- -"]}})");
    s["pre_tokenizer"] = {{"type", "Split"},
                          {"pattern", {{"String", "-"}}},
                          {"behavior", behavior},
                          {"invert", false}};
    auto split = load_hf_tokenizer(write_tokenizer_json(root, "split" + behavior, s.dump()));
    EXPECT_EQ(split->encode(want.first, false), want.second) << behavior;
  }
}

}  // namespace
}  // namespace flextron::text
