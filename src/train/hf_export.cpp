#include "train/hf_export.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/file.h"
#include "data/tokenizer.h"
#include "linear/scheme.h"
#include "train/nvfp4_export.h"
#include "train/run_dir.h"
#include "train/sampling.h"

namespace q2::train {

namespace fs = std::filesystem;

namespace {

// The piece names SentencePiece gives the ids train_tokenizer reserves (data/tokenizer.h).
constexpr const char* kBos = "<s>";
constexpr const char* kUnk = "<unk>";

std::string format_str(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

}  // namespace

nlohmann::json hf_config(const model::ModelConfig& c, WeightFormat format, uint32_t bos_id) {
  nlohmann::json j = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", c.d_model},
      {"intermediate_size", c.d_ff},
      {"num_hidden_layers", c.n_layers},
      {"num_attention_heads", c.n_heads},
      {"num_key_value_heads", c.kv_heads()},
      {"head_dim", c.head_dim()},
      {"hidden_act", "silu"},
      {"rms_norm_eps", c.norm_eps},
      {"rope_theta", c.rope_theta},
      {"rope_scaling", nullptr},
      {"max_position_embeddings", c.seq_len},
      {"vocab_size", c.vocab},
      {"tie_word_embeddings", c.tie_embeddings},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"mlp_bias", false},
      {"pretraining_tp", 1},
      {"initializer_range", 0.02},
      {"use_cache", true},
      {"bos_token_id", bos_id},
      {"eos_token_id", nullptr},
      {"pad_token_id", nullptr},
      {"torch_dtype", format == WeightFormat::kF32 ? "float32" : "bfloat16"},
  };
  if (format == WeightFormat::kNvfp4) {
    nlohmann::json q = modelopt_quantization();
    q["quant_method"] = "modelopt";
    j["quantization_config"] = q;
  }
  return j;
}

nlohmann::json hf_tokenizer_config() {
  return {{"tokenizer_class", "LlamaTokenizer"},
          {"add_bos_token", true},
          {"add_eos_token", false},
          {"legacy", false},
          {"add_prefix_space", false},
          {"bos_token", kBos},
          {"unk_token", kUnk},
          {"eos_token", nullptr},  // null, not absent: LlamaTokenizer would default to "</s>"
          {"pad_token", nullptr},
          {"clean_up_tokenization_spaces", false}};
}

nlohmann::json hf_special_tokens_map() { return {{"bos_token", kBos}, {"unk_token", kUnk}}; }

nlohmann::json hf_generation_config(uint32_t bos_id) {
  const SampleOptions s;
  return {{"bos_token_id", bos_id}, {"do_sample", true},     {"temperature", s.temperature},
          {"top_k", s.top_k},       {"top_p", 1.0},         {"max_new_tokens", s.max_new_tokens}};
}

nlohmann::json last_validation(const std::string& metrics_path, int64_t step) {
  std::ifstream f(metrics_path);
  nlohmann::json last;
  for (std::string line; std::getline(f, line);) {
    // A line cut short by a kill is not a record.
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("val_loss") && j.contains("step") && j["step"].is_number_integer() &&
        j["step"].get<int64_t>() <= step)
      last = j;
  }
  return last;
}

std::string model_card(const LoadedModel& m, WeightFormat format, const nlohmann::json& validation,
                       int64_t calib_windows) {
  const model::ModelConfig& c = m.info.model;
  const TrainConfig& t = m.config;
  const linear::Scheme scheme = method_scheme(t);
  const bool quantized_forward = scheme.w != linear::FwdQuant::kBf16 && scheme.w != linear::FwdQuant::kFp32;
  const int64_t tokens_per_step = t.batch_size * t.grad_accum * t.seq_len * std::max<int64_t>(t.world_size, 1);
  std::string s = "---\nlibrary_name: transformers\npipeline_tag: text-generation\ntags:\n- llama\n- quartet2\n";
  if (format == WeightFormat::kNvfp4) s += "- nvfp4\n- modelopt\n";
  s += "---\n\n# " + c.preset + " trained with quartet2 (scheme `" + t.scheme + "`)\n\n";
  s += "A Llama-architecture causal language model pre-trained by quartet2, a C++/CUDA trainer whose block linear "
       "layers run under a quantization scheme (here `" + t.scheme + "`).\n\n";
  s += "| | |\n|---|---|\n";
  s += "| parameters | " + std::to_string(c.total_params()) + " (" + std::to_string(c.non_embedding_params()) +
       " outside the embedding and head) |\n";
  s += "| layers, d_model, heads (kv), d_ff | " + std::to_string(c.n_layers) + ", " + std::to_string(c.d_model) + ", " +
       std::to_string(c.n_heads) + " (" + std::to_string(c.kv_heads()) + "), " + std::to_string(c.d_ff) + " |\n";
  s += "| vocabulary | " + std::to_string(c.vocab) + " (SentencePiece BPE, `tokenizer.model`; BOS `<s>` between "
       "documents, no EOS) |\n";
  s += "| sequence length | " + std::to_string(c.seq_len) + " |\n";
  s += "| linear-layer scheme | `" + t.scheme + "` |\n";
  if (t.precision != model::PrecisionOverrides{}) {
    std::string layers = model::describe_linear_schemes(c, model::linear_schemes(c, scheme, t.precision));
    for (size_t at; (at = layers.find('\n')) != std::string::npos;) layers.replace(at, 1, "; ");  // one table cell
    s += "| schemes of the block linears | " + layers + " |\n";
  }
  s += "| optimizer | `" + t.optimizer + "`, schedule `" + t.schedule + "` |\n";
  s += "| steps | " + std::to_string(m.info.step) + " of " + std::to_string(t.steps) + " |\n";
  s += "| tokens seen | " + std::to_string(m.info.step * tokens_per_step) + " |\n";
  if (validation.is_null()) {
    s += "| final validation | not recorded beside the checkpoint |\n";
  } else {
    s += "| final validation | loss " + format_str("%.6f", validation.value("val_loss", 0.0)) + " nats/token, " +
         format_str("%.6f", validation.value("val_bpb", 0.0)) + " bits per byte (step " +
         std::to_string(validation.value("step", int64_t{0})) + ", " + std::to_string(t.eval_batches) +
         " batches of the validation split, under the training forward pass) |\n";
  }
  s += "\n## The weights\n\n";
  if (format == WeightFormat::kNvfp4) {
    s += "The block linear layers (q, k, v, o, gate, up, down) hold exactly the NVFP4 weights the training forward "
         "pass computed (the same E2M1 codes, E4M3 block scales and tensor scale) in ModelOpt's NVFP4 layout "
         "(`hf_quant_config.json`); the embedding, norms and LM head are BF16. ";
    s += calib_windows > 0
             ? "Each linear's activation `input_scale` (its static tensor scale for W4A4) is ModelOpt's amax / (6 x "
               "448), amax calibrated over the first " + std::to_string(calib_windows) + " windows of " +
                   std::to_string(c.seq_len) + " tokens of the validation split. "
             : "No activation `input_scale`s are included. ";
    s += "Running it needs an inference engine that reads ModelOpt NVFP4 checkpoints (TensorRT-LLM, vLLM, "
         "SGLang) and a GPU; plain `transformers` does not load it.\n";
  } else {
    s += std::string("These are the float32 master weights") +
         (format == WeightFormat::kBf16 ? ", rounded to BF16" : "") + ". ";
    if (quantized_forward)
      s += "The trained model used them only through its forward quantization (`" + t.scheme +
           "` quantizes each block linear's weights and inputs to NVFP4), so this unquantized model's loss is close "
           "to, not equal to, the figure above. `quartet2 export --format nvfp4` writes the quantized weights.\n";
    else
      s += "The training forward pass used them rounded to BF16.\n";
  }
  s += "\n## Training config\n\n```json\n" + to_json(t).dump(2) + "\n```\n";
  return s;
}

std::vector<std::string> export_hf_folder(LoadedModel& m, const data::DatasetMeta& data, const HfExportOptions& o) {
  std::error_code ec;
  if (fs::exists(o.out_dir, ec) && !fs::is_directory(o.out_dir, ec))
    throw Error("export: --out '" + o.out_dir + "' is a file; --format hf and nvfp4 write a folder");
  if (fs::is_directory(o.out_dir, ec) && !fs::is_empty(o.out_dir, ec))
    throw Error("export: --out '" + o.out_dir + "' already holds files; choose a new or empty folder");
  fs::create_directories(o.out_dir, ec);
  if (ec) throw Error("export: cannot create --out '" + o.out_dir + "': " + ec.message());
  const linear::Scheme scheme = method_scheme(m.config);
  // ModelOpt's layout could list BF16 linears in exclude_modules; this exporter does not yet.
  if (o.format == WeightFormat::kNvfp4 && m.config.precision != model::PrecisionOverrides{})
    throw Error("export --format nvfp4: the model keeps some block linears in BF16 (method.bf16_first_layers, "
                "method.bf16_last_layers, method.bf16_linears), which this export cannot write yet (use --format hf)");
  const WeightQuantizer quantize =
      o.format == WeightFormat::kNvfp4 ? forward_weight_quantizer(scheme, m.config.device) : WeightQuantizer();
  const InputScales input_scales = o.format == WeightFormat::kNvfp4 && o.calib_windows > 0
                                        ? calibrate_input_scales(*m.model, data, o.calib_windows, m.info.model.seq_len)
                                        : InputScales();
  const std::vector<SafeTensor> tensors = llama_tensors(*m.model, o.format, quantize, input_scales);
  std::vector<std::string> files =
      write_safetensors_model(o.out_dir, tensors, export_metadata(m.info.model), o.max_shard_bytes);
  const uint32_t bos = data::Tokenizer::load(data.tokenizer).bos_id();
  auto write_json = [&](const std::string& name, const nlohmann::json& j) {
    write_file_atomic(o.out_dir + "/" + name, j.dump(2) + "\n");
    files.push_back(name);
  };
  write_json("config.json", hf_config(m.info.model, o.format, bos));
  write_json("generation_config.json", hf_generation_config(bos));
  write_json("tokenizer_config.json", hf_tokenizer_config());
  write_json("special_tokens_map.json", hf_special_tokens_map());
  if (o.format == WeightFormat::kNvfp4)
    write_json("hf_quant_config.json",
               {{"producer", {{"name", "quartet2"}, {"version", "1"}}}, {"quantization", modelopt_quantization()}});
  fs::copy_file(data.tokenizer, o.out_dir + "/tokenizer.model", fs::copy_options::overwrite_existing, ec);
  if (ec) throw Error("export: cannot copy the tokenizer '" + data.tokenizer + "': " + ec.message());
  files.push_back("tokenizer.model");
  const fs::path run = fs::path(m.path).parent_path();
  const std::string metrics = RunDir::metrics_file(run.empty() ? "." : run.string());
  write_file_atomic(o.out_dir + "/README.md", model_card(m, o.format, last_validation(metrics, m.info.step),
                                                              input_scales.empty() ? 0 : o.calib_windows));
  files.push_back("README.md");
  return files;
}

}  // namespace q2::train
