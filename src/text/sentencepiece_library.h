// Access to libflextron_spm (the sentencepiece bridge, see sentencepiece_bridge/bridge_api.h),
// loaded on first use with dlopen so that its protobuf copy stays private.
#pragma once

#include "text/sentencepiece_bridge/bridge_api.h"

namespace flextron::text {

struct SentencePieceLibrary {
  decltype(&fx_spm_load) load;
  decltype(&fx_spm_free) free;
  decltype(&fx_spm_encode) encode;
  decltype(&fx_spm_piece_size) piece_size;
  decltype(&fx_spm_id_to_piece) id_to_piece;
  decltype(&fx_spm_score) score;
  decltype(&fx_spm_is_control) is_control;
  decltype(&fx_spm_bos_id) bos_id;
  decltype(&fx_spm_eos_id) eos_id;
  decltype(&fx_spm_serialized) serialized;
  decltype(&fx_spm_train) train;
};

// The loaded bridge. Looked up in $FLEXTRON_SPM_BRIDGE, beside the running executable, in
// ../lib relative to it, then at the build-tree path. Throws flextron::Error if none loads.
const SentencePieceLibrary& sentencepiece_library();

}  // namespace flextron::text
