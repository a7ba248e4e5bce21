// Chat templates: how a conversation becomes the prompt text a chat model was trained on.
//
// Models publish theirs as Jinja (tokenizer_config.json "chat_template", GGUF
// "tokenizer.chat_template"). We do not run Jinja: we recognise the family a template belongs to
// by its markers and render that family's format, written out below from the templates the
// families publish. A template we cannot place is an error that names --chat-template.
//
//   flextron  [system\n\n] User: u\nAssistant: a\n ... Assistant:        (ours, models we train)
//   llama2    [INST] <<SYS>>\ns\n<</SYS>>\n\nu [/INST] a </s><s>[INST] u [/INST]
//   llama3    <|start_header_id|>role<|end_header_id|>\n\ntext<|eot_id|> ... (assistant header)
//   chatml    <|im_start|>role\ntext<|im_end|>\n ... <|im_start|>assistant\n   (Qwen, SmolLM)
//   mistral   [INST] s\n\nu [/INST]a</s>[INST] u [/INST]
//   phi3      <|system|>\ns<|end|>\n<|user|>\nu<|end|>\n<|assistant|>\n
//   gemma     <start_of_turn>user\ns\n\nu<end_of_turn>\n<start_of_turn>model\n
//   zephyr    <|system|>\ns</s>\n<|user|>\nu</s>\n<|assistant|>\n
//
// The BOS token that templates put first is left out: prompt encoding adds it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "text/tokenizer.h"

namespace flextron::text {

enum class ChatFormat { Flextron, Llama2, Llama3, ChatML, Mistral, Phi3, Gemma, Zephyr };

struct ChatMessage {
  std::string role;  // system (or developer), user, assistant
  std::string content;
};

struct ChatPrompt {
  std::string text;
  // Where generation ends: the format's end-of-turn markers (special tokens, matched by id when
  // the vocabulary has them) and, for ours, the next turn's label.
  std::vector<std::string> stop;
};

// "flextron", "llama2", ... (the names above); throws flextron::Error naming `where`.
ChatFormat parse_chat_format(const std::string& name, const std::string& where);
std::string chat_format_name(ChatFormat format);
// Every name, comma-separated, for messages and --help.
std::string chat_format_names();

// The family of a Jinja chat template, or nullopt when it is none we render.
std::optional<ChatFormat> recognise_chat_template(const std::string& jinja);

// The format to serve: `requested` by name, or "auto": the model's own template recognised, ours
// when it has none. Throws flextron::Error naming `where` for a template we cannot place.
ChatFormat resolve_chat_format(const std::string& requested, const std::string& jinja,
                               const std::string& where);

// The conversation in `format`, ending with the assistant's turn opened for the model.
// `default_system`: a system message put first when the conversation has none (Qwen's ChatML).
// Throws flextron::Error naming the message for a role the format has no place for.
ChatPrompt render_chat(ChatFormat format, const std::vector<ChatMessage>& messages,
                       const std::string& default_system = "");
// The system message a template adds when the conversation has none ("" for most).
std::string default_system_message(const std::string& jinja);

// Our format as Jinja, written into model directories (chat_template.jinja) and GGUF exports
// so that other engines chat with our models as we do.
const std::string& flextron_chat_template();

// The markers of `format` that are special tokens (<|im_end|>, </s>, ...).
std::vector<std::string> chat_special_tokens(ChatFormat format);

// Special-token markers the vocabulary holds as one token each, with their ids.
using SpecialTokens = std::vector<std::pair<std::string, int64_t>>;
SpecialTokens find_special_tokens(const Tokenizer& tokenizer,
                                  const std::vector<std::string>& markers);

// Prompt ids: BOS, then `text` with every occurrence of a marker in `specials` as that token and
// the text between encoded as usual, so a tokenizer that would spell "<|im_end|>" out piece by
// piece still gets the real id.
std::vector<int64_t> encode_with_specials(const Tokenizer& tokenizer, const std::string& text,
                                          const SpecialTokens& specials);

}  // namespace flextron::text
