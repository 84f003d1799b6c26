#pragma once
// The NVFP4 inference checkpoint: block linear weights exactly as the trained forward pass
// quantized them, in ModelOpt's Hugging Face NVFP4 layout, which inference engines (TensorRT-LLM,
// vLLM, SGLang) read. Per linear "<prefix>":
//   <prefix>.weight          U8 [out, in / 2]: E2M1 codes, two per byte, the even column in the
//                            low nibble (as NVFP4Tensor packs them)
//   <prefix>.weight_scale    F8_E4M3 [out, in / 16]: one decode scale per 16 elements of a row
//   <prefix>.weight_scale_2  F32 scalar: the tensor's decode scale
//   <prefix>.input_scale     F32 scalar: the activation's static tensor scale (calibrated)
// so that w = e2m1(code) * e4m3(weight_scale) * weight_scale_2.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/safetensors.h"
#include "data/dataset.h"
#include "format/nvfp4.h"
#include "linear/scheme.h"
#include "train/export.h"

namespace q2::train {

// The forward pass's quantizer of W under `scheme` as the backend `device` ran it: the CPU
// quantizes the float32 master weight, CUDA its BF16 rounding (docs/NUMERICS.md, "GPU linear
// layer"). An error naming the scheme when its forward pass does not quantize W to NVFP4.
WeightQuantizer forward_weight_quantizer(const linear::Scheme& scheme, const std::string& device);

// The tensors of rows [row0, row0 + rows) of `q` named after `prefix`, with its input_scale
// where given.
std::vector<SafeTensor> modelopt_nvfp4_tensors(const std::string& prefix, const NVFP4Tensor& q, int64_t row0,
                                               int64_t rows, std::optional<float> input_scale = std::nullopt);

// ModelOpt's activation calibration: each block linear's input_scale is amax / (6 x 448), amax
// the largest |x| its input reached over the first `windows` windows of `seq` tokens of the
// validation split (each once, if the split holds fewer), so that an engine quantizing
// activations (W4A4) maps them onto the E2M1 x E4M3 range as the weights are. Throws naming the
// linear when an input holds NaN or Inf.
InputScales calibrate_input_scales(model::Transformer& model, const data::DatasetMeta& data, int64_t windows,
                                   int64_t seq);

// The "quantization" section of hf_quant_config.json; config.json's quantization_config is the
// same with quant_method "modelopt". The LM head stays unquantized, as in training.
nlohmann::json modelopt_quantization();

}  // namespace q2::train
