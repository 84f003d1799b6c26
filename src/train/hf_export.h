#pragma once
// A Hugging Face model folder that AutoTokenizer.from_pretrained and
// AutoModelForCausalLM.from_pretrained load as it is (LlamaForCausalLM, LlamaTokenizer):
//   config.json, model.safetensors (or shards and model.safetensors.index.json),
//   tokenizer.model (the checkpoint's own SentencePiece model), tokenizer_config.json,
//   special_tokens_map.json, generation_config.json, README.md (the model card);
// for NVFP4 also hf_quant_config.json and config.json's quantization_config (ModelOpt's layout,
// nvfp4_export.h), which inference engines read and plain transformers does not.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "train/export.h"
#include "train/trainer.h"

namespace q2::train {

struct HfExportOptions {
  std::string out_dir;
  WeightFormat format = WeightFormat::kF32;
  uint64_t max_shard_bytes = 5'000'000'000;  // Hugging Face's default shard size
  // kNvfp4: validation windows (of the model's sequence length) that calibrate the input_scales
  // (calibrate_input_scales); 0: none are written.
  int64_t calib_windows = 16;
};

// config.json of LlamaForCausalLM; `bos_id`: the tokenizer's BOS (there is no EOS).
nlohmann::json hf_config(const model::ModelConfig& c, WeightFormat format, uint32_t bos_id);
// The LlamaTokenizer settings that give SentencePiece's own ids: BOS added, no EOS, no prefix
// space (the tokenizer has no dummy prefix), no legacy handling, no clean-up on decode.
nlohmann::json hf_tokenizer_config();
nlohmann::json hf_special_tokens_map();
// `quartet2 generate`'s defaults (no EOS: generation stops at the length limit).
nlohmann::json hf_generation_config(uint32_t bos_id);
// The last validation record of a run's metrics.jsonl at or before `step`; null when there is
// none (or no file).
nlohmann::json last_validation(const std::string& metrics_path, int64_t step);
// README.md: what the weights are, the training config and the final validation figures;
// `calib_windows`: the windows that calibrated the NVFP4 input_scales (0: none).
std::string model_card(const LoadedModel& m, WeightFormat format, const nlohmann::json& validation,
                       int64_t calib_windows = 0);

// Writes the folder, created if missing; a folder that already holds files is refused (stale
// shards would mix with the new ones). `data` is the checkpoint's dataset (dataset_for), whose
// tokenizer is copied. Returns the names of the files written.
std::vector<std::string> export_hf_folder(LoadedModel& m, const data::DatasetMeta& data, const HfExportOptions& o);

}  // namespace q2::train
