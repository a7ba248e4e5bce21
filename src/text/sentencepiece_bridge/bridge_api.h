/* The C interface of libflextron_spm, a thin shared library around libsentencepiece.
 *
 * Why a bridge: Debian's libsentencepiece carries its own copy of protobuf-lite and exports
 * its symbols, which clash with the libprotobuf that LibTorch links: a binary linking both
 * crashes during static initialisation. The bridge is loaded with dlmopen into a link-map
 * namespace of its own, so sentencepiece binds to its own protobuf and LibTorch to the system one.
 * Only C types cross the boundary. */
#ifndef FLEXTRON_SPM_BRIDGE_API_H
#define FLEXTRON_SPM_BRIDGE_API_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fx_spm fx_spm;

/* Loads a model file; null on failure with a message in err. */
fx_spm* fx_spm_load(const char* path, char* err, size_t err_size);
void fx_spm_free(fx_spm* model);
/* Encodes text into ids. Returns the number of ids; writes at most capacity of them
 * (call again with a larger buffer if the result exceeds capacity); -1 on error. */
long fx_spm_encode(fx_spm* model, const char* text, size_t length, int* ids, size_t capacity);
int fx_spm_piece_size(const fx_spm* model);
/* The piece's text; valid while the model lives. */
const char* fx_spm_id_to_piece(const fx_spm* model, int id, size_t* length);
float fx_spm_score(const fx_spm* model, int id);
int fx_spm_is_control(const fx_spm* model, int id);
int fx_spm_bos_id(const fx_spm* model);
int fx_spm_eos_id(const fx_spm* model);
/* The serialized ModelProto (what tokenizer.model holds); valid while the model lives. */
const char* fx_spm_serialized(const fx_spm* model, size_t* length);
/* SentencePieceTrainer::Train with sentencepiece's "--flag=value ..." argument string.
 * Returns 0 on success, else writes a message into err. */
int fx_spm_train(const char* args, char* err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif
