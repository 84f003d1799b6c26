#pragma once
// The NVFP4 inference checkpoint: block linear weights exactly as the trained forward pass
// quantized them, in ModelOpt's Hugging Face NVFP4 layout, which inference engines (TensorRT-LLM,
// vLLM, SGLang) read. Per linear "<prefix>":
//   <prefix>.weight          U8 [out, in / 2]: E2M1 codes, two per byte, the even column in the
//                            low nibble (as NVFP4Tensor packs them)
//   <prefix>.weight_scale    F8_E4M3 [out, in / 16]: one decode scale per 16 elements of a row
//   <prefix>.weight_scale_2  F32 scalar: the tensor's decode scale
// so that w = e2m1(code) * e4m3(weight_scale) * weight_scale_2. Activation input_scale
// calibration is not done: engines that need it for W4A4 must be given it some other way.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/safetensors.h"
#include "format/nvfp4.h"
#include "linear/scheme.h"
#include "train/export.h"

namespace q2::train {

// The forward pass's quantizer of W under `scheme` as the backend `device` ran it: the CPU
// quantizes the float32 master weight, CUDA its BF16 rounding (docs/NUMERICS.md, "GPU linear
// layer"). An error naming the scheme when its forward pass does not quantize W to NVFP4.
WeightQuantizer forward_weight_quantizer(const linear::Scheme& scheme, const std::string& device);

// The three tensors of rows [row0, row0 + rows) of `q` named after `prefix`.
std::vector<SafeTensor> modelopt_nvfp4_tensors(const std::string& prefix, const NVFP4Tensor& q, int64_t row0,
                                               int64_t rows);

// The "quantization" section of hf_quant_config.json; config.json's quantization_config is the
// same with quant_method "modelopt". The LM head stays unquantized, as in training.
nlohmann::json modelopt_quantization();

}  // namespace q2::train
