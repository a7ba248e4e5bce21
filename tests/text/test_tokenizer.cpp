// Tokenizers against data nobody here wrote: llama.cpp's SentencePiece test cases and the
// prompt tokens / generated text of llama2.c's reference run.c on stories260K.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "text/tokenizer_cases.h"

namespace flextron::text {
namespace {

namespace fs = std::filesystem;

fs::path tok512_path() {
  return testing::shared_data() / "stories260K" / "tok512.bin";
}
fs::path llama2_spm_path() {
  return testing::shared_data() / "tokenizers" / "llama2_tokenizer.model";
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

nlohmann::json read_json(const fs::path& path) {
  return nlohmann::json::parse(read_bytes(path));
}

std::string ids_to_string(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
  return "[" + s + "]";
}

// The string as a JSON literal, readable in failure messages even when it is not UTF-8.
std::string quoted(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Expects `f` to throw flextron::Error whose message contains `needle` (normally the path).
void expect_error_naming(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no flextron::Error thrown; expected one naming " << needle;
  } catch (const flextron::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message \"" << e.what() << "\" does not name " << needle;
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "not one line: " << e.what();
  }
}

// karpathy/llama2.c run.c encode(), transcribed literally (quadratic merge loop, C strings):
// an independent reference for the library's faster merge.
std::vector<int64_t> run_c_encode(const Tokenizer& t, const std::string& text, bool bos) {
  const int64_t n = t.vocab_size();
  std::map<std::string, int64_t> vocab;  // str_lookup(); emplace keeps the first id
  for (int64_t i = 0; i < n; ++i) vocab.emplace(t.piece(i), i);
  auto lookup = [&](const std::string& s) -> int64_t {
    const auto it = vocab.find(s);
    return it == vocab.end() ? -1 : it->second;
  };
  std::vector<int64_t> tokens;
  if (bos) tokens.push_back(1);
  if (!text.empty()) tokens.push_back(lookup(" "));
  std::string buf;
  const char* c = text.c_str();
  for (; *c != '\0'; c++) {
    if ((*c & 0xC0) != 0x80) buf.clear();
    buf += *c;
    if ((*(c + 1) & 0xC0) == 0x80 && buf.size() < 4) continue;
    const int64_t id = lookup(buf);
    if (id != -1) {
      tokens.push_back(id);
    } else {
      for (char b : buf) tokens.push_back(static_cast<unsigned char>(b) + 3);
    }
    buf.clear();
  }
  while (true) {
    float best_score = -1e10f;
    int64_t best_id = -1, best_idx = -1;
    for (size_t i = 0; i + 1 < tokens.size(); ++i) {
      const int64_t id = lookup(t.piece(tokens[i]) + t.piece(tokens[i + 1]));
      if (id != -1 && t.score(id) > best_score) {
        best_score = t.score(id);
        best_id = id;
        best_idx = static_cast<int64_t>(i);
      }
    }
    if (best_idx == -1) break;
    tokens[best_idx] = best_id;
    tokens.erase(tokens.begin() + best_idx + 1);
  }
  return tokens;
}

// llama.cpp's test vocab format (tokenizer_cases.h).
using Case = testing::TokenizerCase;

std::vector<Case> read_llama_cases(const fs::path& inp, const fs::path& out) {
  return testing::read_tokenizer_cases(inp, out);
}

// Every llama.cpp case encodes to its expected ids (mismatches listed), and encoding with BOS
// prepends `bos` to the same ids.
void expect_cases(const Tokenizer& tok, const std::vector<Case>& cases, int64_t bos) {
  int mismatches = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto got = tok.encode(cases[i].input, /*add_bos=*/false);
    if (got != cases[i].expected) {
      ++mismatches;
      ADD_FAILURE() << "case " << i << " input " << quoted(cases[i].input) << "\n  expected "
                    << ids_to_string(cases[i].expected) << "\n  got      " << ids_to_string(got);
    }
    const auto with_bos = tok.encode(cases[i].input, /*add_bos=*/true);
    ASSERT_FALSE(with_bos.empty());
    EXPECT_EQ(with_bos.front(), bos);
    EXPECT_EQ(std::vector<int64_t>(with_bos.begin() + 1, with_bos.end()), got);
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(SentencePieceTokenizerTest, ReproducesEveryLlamaCppCase) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto tok = load_sentencepiece_tokenizer(llama2_spm_path());
  const auto dir = testing::shared_data() / "tokenizers";
  const auto cases = read_llama_cases(dir / "llama_spm_cases.inp", dir / "llama_spm_cases.out");
  ASSERT_EQ(cases.size(), 46u);
  expect_cases(*tok, cases, 1);
}

// GPT-2's byte-level BPE against llama.cpp's GPT-2 cases (HF's ids), and decoding back to the
// exact input bytes.
TEST(Gpt2TokenizerTest, ReproducesEveryLlamaCppCase) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = testing::shared_data() / "tokenizers";
  const auto tok = load_gpt2_tokenizer(dir / "gpt2_vocab.json", dir / "gpt2_merges.txt");
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->eos_id(), 50256);
  const auto cases = read_llama_cases(dir / "gpt2_cases.inp", dir / "gpt2_cases.out");
  ASSERT_GT(cases.size(), 30u);
  expect_cases(*tok, cases, 50256);
  for (const auto& c : cases) EXPECT_EQ(tok->decode(tok->encode(c.input, false)), c.input);
}

TEST(Gpt2TokenizerTest, InvalidUtf8KeepsEveryByteAndSaveRoundTrips) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = testing::shared_data() / "tokenizers";
  const auto tok = load_gpt2_tokenizer(dir / "gpt2_vocab.json", dir / "gpt2_merges.txt");
  const std::string bytes = "ok \xff\xfe caf\xc3";  // invalid and truncated UTF-8
  EXPECT_EQ(tok->decode(tok->encode(bytes, false)), bytes);
  const auto out = testing::scratch_dir();
  tok->save(out / tok->file_name());
  const auto again = load_tokenizer(out, 50257);
  const std::string text = "Hello, world! It's 2026 and the llamas' café is open.";
  EXPECT_EQ(again->encode(text, false), tok->encode(text, false));
  EXPECT_EQ(again->piece(31373), tok->piece(31373));
}

TEST(Gpt2TokenizerTest, BadFilesNameTheFileAndLine) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = testing::scratch_dir();
  const auto vocab = testing::shared_data() / "tokenizers" / "gpt2_vocab.json";
  io::write_text_atomically(dir / "merges.txt", "#version: 0.2\n\u0120 t\nonlyone\n");
  try {
    load_gpt2_tokenizer(vocab, dir / "merges.txt");
    ADD_FAILURE() << "accepted a malformed merges.txt";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("merges.txt:3"), std::string::npos) << e.what();
  }
  io::write_text_atomically(dir / "vocab.json", "{\"a\": 0, \"b\": 0}");
  EXPECT_THROW(load_gpt2_tokenizer(dir / "vocab.json", dir / "merges.txt"), Error);
  EXPECT_THROW(load_gpt2_tokenizer(dir / "missing.json", dir / "merges.txt"), Error);
}

TEST(SentencePieceTokenizerTest, MetadataAndDecoding) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto tok = load_sentencepiece_tokenizer(llama2_spm_path());
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->file_name(), "tokenizer.model");
  EXPECT_EQ(tok->piece(15043), "\xE2\x96\x81Hello");
  EXPECT_EQ(tok->piece(13), "<0x0A>");
  // After BOS the dummy-prefix space goes; elsewhere it stays.
  EXPECT_EQ(tok->decode_piece(1, 15043), "Hello");
  EXPECT_EQ(tok->decode_piece(3186, 15043), " Hello");
  EXPECT_EQ(tok->decode_piece(15043, 13), "\n");
  EXPECT_EQ(tok->decode_piece(15043, 2), "");
  // Byte pieces of a 4-byte emoji and CJK must reassemble into the original UTF-8.
  const std::string text = "Hello, y'all! How are you \xF0\x9F\x98\x81 ?\xE6\x88\x91\n\tend";
  EXPECT_EQ(tok->decode(tok->encode(text, false)), text);
  expect_error_naming([&] { tok->piece(32000); }, "32000");
}

TEST(SentencePieceTokenizerTest, SaveCopiesTheModel) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto tok = load_sentencepiece_tokenizer(llama2_spm_path());
  const auto copy = testing::scratch_dir() / tok->file_name();
  tok->save(copy);
  const auto again = load_sentencepiece_tokenizer(copy);
  EXPECT_EQ(again->vocab_size(), tok->vocab_size());
  for (const std::string text : {"Hello world", " this is \xF0\x9F\xA6\x99.cpp", "3333"})
    EXPECT_EQ(again->encode(text, true), tok->encode(text, true));
}

TEST(Llama2cTokenizerTest, EncodesReferencePrompt) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto tok = load_llama2c_tokenizer(tok512_path(), 512);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->file_name(), "tokenizer.bin");
  const auto ref =
      read_json(testing::shared_data() / "stories260K" / "reference_once_upon_a_time.json");
  ASSERT_EQ(ref["prompt"].get<std::string>(), "Once upon a time");
  const auto expected = ref["prompt_tokens"].get<std::vector<int64_t>>();
  EXPECT_EQ(expected, (std::vector<int64_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok->encode("Once upon a time", true), expected);
  EXPECT_EQ(tok->encode("Once upon a time", false),
            std::vector<int64_t>(expected.begin() + 1, expected.end()));
  EXPECT_EQ(tok->encode("", true), std::vector<int64_t>{1});
  EXPECT_TRUE(tok->encode("", false).empty());
}

TEST(Llama2cTokenizerTest, DecodesReferenceGeneration) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto tok = load_llama2c_tokenizer(tok512_path(), 512);
  const auto dir = testing::shared_data() / "stories260K";
  const auto ref = read_json(dir / "reference_bos_greedy200.json");
  const std::string expected = read_bytes(dir / "reference_bos_greedy200.txt");
  const auto tokens = ref["greedy_continuation"].get<std::vector<int64_t>>();
  ASSERT_GE(tokens.size(), 200u);
  // run.c -n 200 prints the 200 tokens after BOS (positions 1..200), then a newline.
  std::string text;
  int64_t prev = 1;
  for (size_t i = 0; i < 200; ++i) {
    text += tok->decode_piece(prev, tokens[i]);
    prev = tokens[i];
    ASSERT_EQ(expected.compare(0, text.size(), text), 0) << "diverges at token " << i;
  }
  EXPECT_EQ(text + "\n", expected);
  EXPECT_EQ(tok->decode(std::vector<int64_t>(tokens.begin(), tokens.begin() + 200)), text);
  // The reference text starts "Once": token 403's leading space was dropped after BOS.
  EXPECT_EQ(tok->piece(403), " Once");
  EXPECT_EQ(tok->decode_piece(1, 403), "Once");
  EXPECT_EQ(tok->decode_piece(2, 403), " Once");
  EXPECT_EQ(tok->decode_piece(400, 3 + 0x0A), "\n");
}

TEST(Llama2cTokenizerTest, MergesLikeRunC) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto tok = load_llama2c_tokenizer(tok512_path(), 512);
  const std::string shakespeare =
      read_bytes(testing::shared_data() / "corpora" / "tinyshakespeare.txt").substr(0, 4000);
  // "ooo", "lll", "ppp": equal-score overlapping pairs, where only leftmost-first is right.
  std::vector<std::string> texts = {" ",
                                    "  x",
                                    "a",
                                    "ooo",
                                    "a balllll",
                                    "ppp oooo",
                                    "Lily's mom said, \"Lily, let's go.\"",
                                    "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\xA6\x99 \x80\xC3 end"};
  for (size_t at = 0; at + 300 <= shakespeare.size(); at += 300)
    texts.push_back(shakespeare.substr(at, 300));
  std::mt19937 rng(7);
  const std::string alphabet = "aeiou thsnrl.,!\n'\xC3\xA9\xE2\x82\xAC";
  for (int i = 0; i < 20; ++i) {
    std::string s;
    for (int j = 0; j < 60; ++j) s += alphabet[rng() % alphabet.size()];
    texts.push_back(s);
  }
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(tok->encode(texts[i], true), run_c_encode(*tok, texts[i], true))
        << "text " << i << ": " << quoted(texts[i]);
  }
}

TEST(Llama2cTokenizerTest, SaveLoadRoundTrip) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto tok = load_llama2c_tokenizer(tok512_path(), 512);
  const auto path = testing::scratch_dir() / tok->file_name();
  tok->save(path);
  EXPECT_EQ(read_bytes(path), read_bytes(tok512_path())) << "save() is not byte-identical";
  const auto again = load_llama2c_tokenizer(path, 512);
  for (int64_t i = 0; i < 512; ++i) {
    ASSERT_EQ(again->piece(i), tok->piece(i)) << "id " << i;
    ASSERT_EQ(again->score(i), tok->score(i)) << "id " << i;
  }
  for (const std::string text : {"Once upon a time", "Lily's mom \xE2\x82\xAC 42"})
    EXPECT_EQ(again->encode(text, true), tok->encode(text, true));
  // The generic writer gives the same file for a tokenizer already in this format.
  const auto generic = path.parent_path() / "generic.bin";
  save_llama2c_tokenizer(*tok, generic);
  EXPECT_EQ(read_bytes(generic), read_bytes(tok512_path()));
}

TEST(Llama2cTokenizerTest, ExportsSentencePieceLikeTokenizerPy) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto spm = load_sentencepiece_tokenizer(llama2_spm_path());
  const auto path = testing::scratch_dir() / "tokenizer.bin";
  save_llama2c_tokenizer(*spm, path);
  const auto tok = load_llama2c_tokenizer(path, 32000);
  EXPECT_EQ(tok->piece(0), "<unk>");
  EXPECT_EQ(tok->piece(1), "\n<s>\n");
  EXPECT_EQ(tok->piece(2), "\n</s>\n");
  EXPECT_EQ(tok->piece(3 + 0x41), "<0x41>");
  EXPECT_EQ(tok->piece(29871), " ");
  EXPECT_EQ(tok->piece(259), "  ");
  EXPECT_EQ(tok->piece(15043), " Hello");
  EXPECT_EQ(tok->piece(3186), " world");
  for (int64_t id : {0, 5, 259, 3186, 15043, 29871, 31999})
    EXPECT_EQ(tok->score(id), spm->score(id)) << "id " << id;
  // llama2.c's merge over the exported vocabulary reproduces llama.cpp's cases too.
  const auto dir = testing::shared_data() / "tokenizers";
  const auto cases = read_llama_cases(dir / "llama_spm_cases.inp", dir / "llama_spm_cases.out");
  ASSERT_FALSE(cases.empty());
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(tok->encode(cases[i].input, false), cases[i].expected)
        << "case " << i << " input " << quoted(cases[i].input);
  }
  EXPECT_EQ(tok->decode(tok->encode("Hello world", true)), "\n<s>\nHello world");
}

TEST(TokenizerTest, LoadTokenizerPicksTheModelDirectoryFile) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = testing::scratch_dir();
  expect_error_naming([&] { load_tokenizer(dir, 512); }, dir.string());
  fs::copy_file(tok512_path(), dir / "tokenizer.bin");
  EXPECT_EQ(load_tokenizer(dir, 512)->file_name(), "tokenizer.bin");
  fs::copy_file(llama2_spm_path(), dir / "tokenizer.model");
  EXPECT_EQ(load_tokenizer(dir, 32000)->file_name(), "tokenizer.model");
  expect_error_naming([&] { load_tokenizer(dir, 512); }, (dir / "tokenizer.model").string());
}

TEST(TokenizerTest, BadFilesThrowErrorsNamingThePath) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = testing::scratch_dir();
  const std::string good = read_bytes(tok512_path());

  const auto missing = dir / "missing.bin";
  expect_error_naming([&] { load_llama2c_tokenizer(missing, 512); }, missing.string());
  const auto empty = dir / "empty.bin";
  write_bytes(empty, "");
  expect_error_naming([&] { load_llama2c_tokenizer(empty, 512); }, empty.string());
  const auto header_only = dir / "short_header.bin";
  write_bytes(header_only, good.substr(0, 3));
  expect_error_naming([&] { load_llama2c_tokenizer(header_only, 512); }, header_only.string());
  // Cut inside a record, and exactly at a record boundary (fewer tokens than the model's).
  const auto truncated = dir / "truncated.bin";
  write_bytes(truncated, good.substr(0, good.size() / 2));
  expect_error_naming([&] { load_llama2c_tokenizer(truncated, 512); }, truncated.string());
  expect_error_naming([&] { load_llama2c_tokenizer(tok512_path(), 513); }, "vocab size mismatch");
  expect_error_naming([&] { load_llama2c_tokenizer(tok512_path(), 511); }, "vocab size mismatch");
  expect_error_naming([&] { load_llama2c_tokenizer(tok512_path(), 0); }, tok512_path().string());
  // A length field far beyond the file's end must not allocate or read past it.
  std::string huge = good;
  const int32_t len = 0x7FFFFFF0;
  std::memcpy(&huge[4 + 4], &len, sizeof(len));
  const auto overflow = dir / "overflow.bin";
  write_bytes(overflow, huge);
  expect_error_naming([&] { load_llama2c_tokenizer(overflow, 512); }, overflow.string());
  const int32_t negative = -5;
  std::memcpy(&huge[4 + 4], &negative, sizeof(negative));
  write_bytes(overflow, huge);
  expect_error_naming([&] { load_llama2c_tokenizer(overflow, 512); }, "negative length");

  const auto missing_model = dir / "missing.model";
  expect_error_naming([&] { load_sentencepiece_tokenizer(missing_model); }, missing_model.string());
  const auto garbage_model = dir / "garbage.model";
  write_bytes(garbage_model, good);
  expect_error_naming([&] { load_sentencepiece_tokenizer(garbage_model); }, garbage_model.string());
  const auto tok = load_llama2c_tokenizer(tok512_path(), 512);
  expect_error_naming([&] { tok->decode_piece(1, 512); }, "512");
  expect_error_naming([&] { tok->piece(-1); }, "-1");
}

}  // namespace
}  // namespace flextron::text
