#include "text/chat_template.h"

#include <algorithm>

#include "core/error.h"

namespace flextron::text {

namespace {

struct FormatName {
  ChatFormat format;
  const char* name;
};
constexpr FormatName kFormats[] = {
    {ChatFormat::Flextron, "flextron"}, {ChatFormat::Llama2, "llama2"},
    {ChatFormat::Llama3, "llama3"},     {ChatFormat::ChatML, "chatml"},
    {ChatFormat::Mistral, "mistral"},   {ChatFormat::Phi3, "phi3"},
    {ChatFormat::Gemma, "gemma"},       {ChatFormat::Zephyr, "zephyr"}};

bool has(const std::string& s, const char* marker) {
  return s.find(marker) != std::string::npos;
}

// Jinja's `| trim` / Python's strip(): the templates of Llama 2/3 and Gemma strip contents.
std::string trim(const std::string& s) {
  const char* space = " \t\n\r";
  const auto a = s.find_first_not_of(space);
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(space) - a + 1);
}

bool is_system(const std::string& role) {
  return role == "system" || role == "developer";
}

// The formats without a system turn put the system text before the first user message.
std::vector<ChatMessage> fold_system(const std::vector<ChatMessage>& messages) {
  std::vector<ChatMessage> out;
  std::string system;
  for (const auto& m : messages) {
    if (is_system(m.role)) {
      system += (system.empty() ? "" : "\n\n") + m.content;
      continue;
    }
    out.push_back(m);
    if (!system.empty() && m.role == "user") {
      out.back().content = system + "\n\n" + m.content;
      system.clear();
    }
  }
  if (!system.empty()) out.insert(out.begin(), ChatMessage{"user", system});
  return out;
}

void check_role(const ChatMessage& m, size_t i) {
  if (!is_system(m.role) && m.role != "user" && m.role != "assistant")
    fail("messages[" + std::to_string(i) + "].role",
         "must be system, user or assistant, got \"" + m.role + "\"");
}

}  // namespace

ChatFormat parse_chat_format(const std::string& name, const std::string& where) {
  for (const auto& f : kFormats)
    if (name == f.name) return f.format;
  fail(where, "unknown chat template \"" + name + "\" (use auto, " + chat_format_names() + ")");
}

std::string chat_format_name(ChatFormat format) {
  for (const auto& f : kFormats)
    if (f.format == format) return f.name;
  return "flextron";
}

std::string chat_format_names() {
  std::string out;
  for (const auto& f : kFormats) out += (out.empty() ? "" : ", ") + std::string(f.name);
  return out;
}

std::optional<ChatFormat> recognise_chat_template(const std::string& t) {
  if (t.empty()) return std::nullopt;
  if (t == flextron_chat_template() || has(t, "flextron chat template"))
    return ChatFormat::Flextron;
  if (has(t, "<|start_header_id|>")) return ChatFormat::Llama3;
  if (has(t, "<|im_start|>")) return ChatFormat::ChatML;
  if (has(t, "<start_of_turn>")) return ChatFormat::Gemma;
  if (has(t, "<|assistant|>") && has(t, "<|end|>")) return ChatFormat::Phi3;
  if (has(t, "<|assistant|>") && has(t, "<|user|>")) return ChatFormat::Zephyr;
  if (has(t, "[INST]") && has(t, "<<SYS>>")) return ChatFormat::Llama2;
  if (has(t, "[INST]")) return ChatFormat::Mistral;
  return std::nullopt;
}

ChatFormat resolve_chat_format(const std::string& requested, const std::string& jinja,
                               const std::string& where) {
  if (requested != "auto") return parse_chat_format(requested, "--chat-template");
  if (jinja.empty()) return ChatFormat::Flextron;
  if (auto format = recognise_chat_template(jinja)) return *format;
  fail(where, "its chat template is none of the families flextron renders (" + chat_format_names() +
                  "); pass --chat-template NAME with the one this model was trained on");
}

std::string default_system_message(const std::string& jinja) {
  // Qwen2's ChatML template opens every conversation without a system message with this one.
  const char* qwen = "You are a helpful assistant.";
  return has(jinja, "<|im_start|>") && has(jinja, qwen) ? qwen : "";
}

ChatPrompt render_chat(ChatFormat format, const std::vector<ChatMessage>& input,
                       const std::string& default_system) {
  if (input.empty()) fail("messages", "must be a non-empty array");
  for (size_t i = 0; i < input.size(); ++i) check_role(input[i], i);
  std::vector<ChatMessage> messages = input;
  if (!default_system.empty() && !is_system(messages.front().role))
    messages.insert(messages.begin(), ChatMessage{"system", default_system});
  ChatPrompt p;
  std::string& out = p.text;
  switch (format) {
    case ChatFormat::Flextron:
      for (const auto& m : messages)
        out += is_system(m.role)  ? m.content + "\n\n"
               : m.role == "user" ? "User: " + m.content + "\n"
                                  : "Assistant: " + m.content + "\n";
      out += "Assistant:";
      p.stop = {"\nUser:", "\nAssistant:"};
      break;
    case ChatFormat::Llama3:
      for (const auto& m : messages)
        out += "<|start_header_id|>" + (is_system(m.role) ? std::string("system") : m.role) +
               "<|end_header_id|>\n\n" + trim(m.content) + "<|eot_id|>";
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      p.stop = {"<|eot_id|>", "<|end_of_text|>"};
      break;
    case ChatFormat::ChatML:
      for (const auto& m : messages)
        out += "<|im_start|>" + (is_system(m.role) ? std::string("system") : m.role) + "\n" +
               m.content + "<|im_end|>\n";
      out += "<|im_start|>assistant\n";
      p.stop = {"<|im_end|>", "<|endoftext|>"};
      break;
    case ChatFormat::Phi3:
      for (const auto& m : messages)
        out += "<|" + (is_system(m.role) ? std::string("system") : m.role) + "|>\n" + m.content +
               "<|end|>\n";
      out += "<|assistant|>\n";
      p.stop = {"<|end|>", "<|endoftext|>"};
      break;
    case ChatFormat::Zephyr:
      for (const auto& m : messages)
        out += "<|" + (is_system(m.role) ? std::string("system") : m.role) + "|>\n" + m.content +
               "</s>\n";
      out += "<|assistant|>\n";
      p.stop = {"</s>"};
      break;
    case ChatFormat::Gemma:
      for (const auto& m : fold_system(messages))
        out += "<start_of_turn>" + (m.role == "assistant" ? std::string("model") : m.role) + "\n" +
               trim(m.content) + "<end_of_turn>\n";
      out += "<start_of_turn>model\n";
      p.stop = {"<end_of_turn>"};
      break;
    case ChatFormat::Mistral:
      for (const auto& m : fold_system(messages))
        out += m.role == "user" ? "[INST] " + m.content + " [/INST]" : m.content + "</s>";
      p.stop = {"</s>"};
      break;
    case ChatFormat::Llama2: {
      // The system text opens the first user turn; each user turn after an answer starts a new
      // <s> (the first one is the prompt's BOS).
      std::string system;
      bool opened = false;
      for (const auto& m : messages) {
        if (is_system(m.role)) {
          system = trim(m.content);
          continue;
        }
        if (m.role == "user") {
          std::string content = trim(m.content);
          if (!system.empty()) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
          system.clear();
          out += std::string(opened ? "<s>" : "") + "[INST] " + content + " [/INST]";
        } else {
          out += " " + trim(m.content) + " </s>";
        }
        opened = true;
      }
      if (!system.empty()) out += "[INST] <<SYS>>\n" + system + "\n<</SYS>>\n\n [/INST]";
      p.stop = {"</s>"};
      break;
    }
  }
  return p;
}

const std::string& flextron_chat_template() {
  static const std::string t =
      "{#- flextron chat template -#}"
      "{%- for message in messages -%}"
      "{%- if message['role'] == 'system' or message['role'] == 'developer' -%}"
      "{{ message['content'] + '\\n\\n' }}"
      "{%- elif message['role'] == 'user' -%}"
      "{{ 'User: ' + message['content'] + '\\n' }}"
      "{%- else -%}"
      "{{ 'Assistant: ' + message['content'] + '\\n' }}"
      "{%- endif -%}"
      "{%- endfor -%}"
      "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}";
  return t;
}

std::vector<std::string> chat_special_tokens(ChatFormat format) {
  switch (format) {
    case ChatFormat::Flextron:
      return {};
    case ChatFormat::Llama3:
      return {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end_of_text|>"};
    case ChatFormat::ChatML:
      return {"<|im_start|>", "<|im_end|>", "<|endoftext|>"};
    case ChatFormat::Phi3:
      return {"<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"};
    case ChatFormat::Zephyr:
      return {"<|system|>", "<|user|>", "<|assistant|>", "</s>"};
    case ChatFormat::Gemma:
      return {"<start_of_turn>", "<end_of_turn>"};
    case ChatFormat::Mistral:
      return {"[INST]", "[/INST]", "</s>"};
    case ChatFormat::Llama2:
      return {"<s>", "</s>"};
  }
  return {};
}

SpecialTokens find_special_tokens(const Tokenizer& tokenizer,
                                  const std::vector<std::string>& markers) {
  SpecialTokens found;
  if (markers.empty()) return found;
  for (int64_t id = 0; id < tokenizer.vocab_size(); ++id) {
    const auto piece = tokenizer.piece(id);
    if (std::find(markers.begin(), markers.end(), piece) == markers.end()) continue;
    if (std::none_of(found.begin(), found.end(), [&](const auto& f) { return f.first == piece; }))
      found.emplace_back(piece, id);
  }
  return found;
}

std::vector<int64_t> encode_with_specials(const Tokenizer& tokenizer, const std::string& text,
                                          const SpecialTokens& specials) {
  std::vector<int64_t> ids = {tokenizer.bos_id()};
  size_t at = 0;
  auto encode_text = [&](const std::string& piece) {
    if (piece.empty()) return;
    const auto part = tokenizer.encode(piece, false);
    ids.insert(ids.end(), part.begin(), part.end());
  };
  while (at < text.size()) {
    // The earliest marker from here (the longest at a tie).
    size_t best = std::string::npos, length = 0;
    int64_t id = 0;
    for (const auto& [marker, marker_id] : specials) {
      const auto pos = text.find(marker, at);
      if (pos != std::string::npos && (pos < best || (pos == best && marker.size() > length))) {
        best = pos;
        length = marker.size();
        id = marker_id;
      }
    }
    if (best == std::string::npos) break;
    encode_text(text.substr(at, best - at));
    ids.push_back(id);
    at = best + length;
  }
  encode_text(text.substr(at));
  return ids;
}

}  // namespace flextron::text
