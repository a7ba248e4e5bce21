// libflextron_spm: the C interface of bridge_api.h over libsentencepiece (see there for why).
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstring>
#include <string>

#include "text/sentencepiece_bridge/bridge_api.h"

struct fx_spm {
  sentencepiece::SentencePieceProcessor processor;
  std::string serialized;
};

namespace {
void set_error(char* err, size_t size, const std::string& message) {
  if (err == nullptr || size == 0) return;
  std::strncpy(err, message.c_str(), size - 1);
  err[size - 1] = '\0';
}
}  // namespace

extern "C" {

fx_spm* fx_spm_load(const char* path, char* err, size_t err_size) {
  auto* model = new fx_spm;
  const auto status = model->processor.Load(path);
  if (!status.ok()) {
    set_error(err, err_size, status.ToString());
    delete model;
    return nullptr;
  }
  model->serialized = model->processor.serialized_model_proto();
  return model;
}

void fx_spm_free(fx_spm* model) {
  delete model;
}

long fx_spm_encode(fx_spm* model, const char* text, size_t length, int* ids, size_t capacity) {
  std::vector<int> out;
  if (!model->processor.Encode(std::string(text, length), &out).ok()) return -1;
  for (size_t i = 0; i < out.size() && i < capacity; ++i) ids[i] = out[i];
  return static_cast<long>(out.size());
}

int fx_spm_piece_size(const fx_spm* model) {
  return model->processor.GetPieceSize();
}

const char* fx_spm_id_to_piece(const fx_spm* model, int id, size_t* length) {
  const std::string& piece = model->processor.IdToPiece(id);
  *length = piece.size();
  return piece.data();
}

float fx_spm_score(const fx_spm* model, int id) {
  return model->processor.GetScore(id);
}
int fx_spm_is_control(const fx_spm* model, int id) {
  return model->processor.IsControl(id) ? 1 : 0;
}
int fx_spm_bos_id(const fx_spm* model) {
  return model->processor.bos_id();
}
int fx_spm_eos_id(const fx_spm* model) {
  return model->processor.eos_id();
}

const char* fx_spm_serialized(const fx_spm* model, size_t* length) {
  *length = model->serialized.size();
  return model->serialized.data();
}

int fx_spm_train(const char* args, char* err, size_t err_size) {
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (status.ok()) return 0;
  set_error(err, err_size, status.ToString());
  return 1;
}

}  // extern "C"
