// Chat templates: each family recognised from its published Jinja (Phi-3's from a real GGUF
// vocabulary, the others as their model cards publish them), each rendered for one conversation
// as the family's template renders it (written out from the template, BOS left to the encoder),
// special markers encoded as their vocabulary ids, and ours round-tripping through GGUF.
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_tokenizer.h"
#include "test_util.h"
#include "text/chat_template.h"

namespace {

namespace ft = flextron::text;

const std::vector<ft::ChatMessage> kConversation = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Go on"}};

TEST(ChatTemplate, RecognisesPublishedTemplates) {
  const std::vector<std::pair<std::string, ft::ChatFormat>> cases = {
      {"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
       "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
       "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
       "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
       "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
       ft::ChatFormat::Llama3},
      {"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
       "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
       "{{ '<|im_start|>assistant\\n' }}{% endif %}",
       ft::ChatFormat::ChatML},
      {"{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'assistant') %}"
       "{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
       "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
       "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}",
       ft::ChatFormat::Gemma},
      {"{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' + "
       "message['content'] + eos_token }}{% elif message['role'] == 'assistant' %}{{ "
       "'<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% endfor %}",
       ft::ChatFormat::Zephyr},
      {"{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + "
       "messages[0]['content'] | trim + '\\n<</SYS>>\\n\\n' %}{% endif %}{{ bos_token + '[INST] ' "
       "+ content | trim + ' [/INST]' }}",
       ft::ChatFormat::Llama2},
      {"{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] "
       "' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
       "message['content'] + eos_token}}{% endif %}{% endfor %}",
       ft::ChatFormat::Mistral},
      {ft::flextron_chat_template(), ft::ChatFormat::Flextron},
  };
  for (const auto& [jinja, format] : cases) {
    auto got = ft::recognise_chat_template(jinja);
    ASSERT_TRUE(got.has_value()) << jinja;
    EXPECT_EQ(ft::chat_format_name(*got), ft::chat_format_name(format)) << jinja;
  }
  EXPECT_FALSE(ft::recognise_chat_template("{{ messages | tojson }}").has_value());
  EXPECT_FALSE(ft::recognise_chat_template("").has_value());
}

TEST(ChatTemplate, RecognisesPhi3FromItsGgufVocabulary) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto path =
      flextron::testing::shared_data() / "tokenizers" / "llama.cpp" / "ggml-vocab-phi-3.gguf";
  const auto tok = flextron::io::gguf_tokenizer(flextron::io::read_gguf(path).metadata, "phi-3");
  ASSERT_FALSE(tok->chat_template().empty());
  EXPECT_EQ(ft::resolve_chat_format("auto", tok->chat_template(), "phi-3"), ft::ChatFormat::Phi3);
  // Its markers are single tokens: the prompt carries their ids, not their spelling.
  const auto specials =
      ft::find_special_tokens(*tok, ft::chat_special_tokens(ft::ChatFormat::Phi3));
  auto id = [&](const std::string& marker) {
    for (const auto& [m, i] : specials)
      if (m == marker) return i;
    ADD_FAILURE() << marker << " is not in the vocabulary";
    return int64_t{-1};
  };
  const auto prompt = ft::render_chat(ft::ChatFormat::Phi3, {{"user", "Hi"}});
  EXPECT_EQ(prompt.text, "<|user|>\nHi<|end|>\n<|assistant|>\n");
  std::vector<int64_t> expected = {tok->bos_id(), id("<|user|>")};
  for (const std::string text : {"\nHi"}) {
    const auto part = tok->encode(text, false);
    expected.insert(expected.end(), part.begin(), part.end());
  }
  expected.push_back(id("<|end|>"));
  for (int64_t t : tok->encode("\n", false)) expected.push_back(t);
  expected.push_back(id("<|assistant|>"));
  for (int64_t t : tok->encode("\n", false)) expected.push_back(t);
  EXPECT_EQ(ft::encode_with_specials(*tok, prompt.text, specials), expected);
}

TEST(ChatTemplate, RendersEachFamilyAsItsTemplateDoes) {
  const std::vector<std::pair<ft::ChatFormat, std::string>> cases = {
      {ft::ChatFormat::Flextron,
       "Be brief.\n\nUser: Hi\nAssistant: Hello.\nUser: Go on\nAssistant:"},
      {ft::ChatFormat::Llama3,
       "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
       "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
       "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
       "<|start_header_id|>user<|end_header_id|>\n\nGo on<|eot_id|>"
       "<|start_header_id|>assistant<|end_header_id|>\n\n"},
      {ft::ChatFormat::ChatML,
       "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
       "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nGo on<|im_end|>\n"
       "<|im_start|>assistant\n"},
      {ft::ChatFormat::Phi3,
       "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello.<|end|>\n"
       "<|user|>\nGo on<|end|>\n<|assistant|>\n"},
      {ft::ChatFormat::Zephyr,
       "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello.</s>\n"
       "<|user|>\nGo on</s>\n<|assistant|>\n"},
      {ft::ChatFormat::Gemma,
       "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello."
       "<end_of_turn>\n<start_of_turn>user\nGo on<end_of_turn>\n<start_of_turn>model\n"},
      {ft::ChatFormat::Mistral, "[INST] Be brief.\n\nHi [/INST]Hello.</s>[INST] Go on [/INST]"},
      {ft::ChatFormat::Llama2,
       "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Go on [/INST]"},
  };
  for (const auto& [format, expected] : cases) {
    const auto p = ft::render_chat(format, kConversation);
    EXPECT_EQ(p.text, expected) << ft::chat_format_name(format);
    EXPECT_FALSE(p.stop.empty());
    // Every name parses back.
    EXPECT_EQ(ft::parse_chat_format(ft::chat_format_name(format), "x"), format);
  }
  // Qwen's ChatML opens a conversation without a system message with its default one.
  const std::string qwen =
      "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a "
      "helpful assistant.<|im_end|>\\n' }}{% endif %}<|im_start|>";
  const auto p =
      ft::render_chat(ft::ChatFormat::ChatML, {{"user", "Hi"}}, ft::default_system_message(qwen));
  EXPECT_EQ(p.text,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi"
            "<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(ft::default_system_message(ft::flextron_chat_template()), "");
}

TEST(ChatTemplate, ResolvingAndBadInput) {
  EXPECT_EQ(ft::resolve_chat_format("auto", "", "m"), ft::ChatFormat::Flextron);
  EXPECT_EQ(ft::resolve_chat_format("gemma", "{{ messages | tojson }}", "m"),
            ft::ChatFormat::Gemma);
  try {
    ft::resolve_chat_format("auto", "{{ messages | tojson }}", "dir/tokenizer_config.json");
    ADD_FAILURE() << "an unknown template was accepted";
  } catch (const flextron::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("dir/tokenizer_config.json"), std::string::npos) << m;
    EXPECT_NE(m.find("--chat-template"), std::string::npos) << m;
  }
  EXPECT_THROW(ft::resolve_chat_format("vicuna", "", "m"), flextron::Error);
  EXPECT_THROW(ft::render_chat(ft::ChatFormat::ChatML, {}), flextron::Error);
  EXPECT_THROW(ft::render_chat(ft::ChatFormat::ChatML, {{"robot", "x"}}), flextron::Error);
}

}  // namespace
