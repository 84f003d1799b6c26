#include "train/hf_export.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/error_test_util.h"
#include "linear/scheme.h"

namespace q2::train {
namespace {

namespace fs = std::filesystem;

model::ModelConfig micro() {
  return {.preset = "micro", .n_layers = 2, .d_model = 32, .n_heads = 4, .d_ff = 48, .vocab = 40, .seq_len = 8,
          .rope_theta = 500000.0, .norm_eps = 1e-6, .n_kv_heads = 2, .tie_embeddings = true};
}

TEST(HfExport, ConfigNamesTheLlamaShape) {
  const nlohmann::json j = hf_config(micro(), WeightFormat::kBf16, 1);
  EXPECT_EQ(j["architectures"], nlohmann::json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["hidden_size"], 32);
  EXPECT_EQ(j["intermediate_size"], 48);
  EXPECT_EQ(j["num_hidden_layers"], 2);
  EXPECT_EQ(j["num_attention_heads"], 4);
  EXPECT_EQ(j["num_key_value_heads"], 2);
  EXPECT_EQ(j["head_dim"], 8);
  EXPECT_EQ(j["rms_norm_eps"], 1e-6);
  EXPECT_EQ(j["rope_theta"], 500000.0);
  EXPECT_EQ(j["max_position_embeddings"], 8);
  EXPECT_EQ(j["vocab_size"], 40);
  EXPECT_EQ(j["tie_word_embeddings"], true);
  EXPECT_EQ(j["bos_token_id"], 1);
  EXPECT_TRUE(j["eos_token_id"].is_null());
  EXPECT_EQ(j["hidden_act"], "silu");
  EXPECT_EQ(j["attention_bias"], false);
  EXPECT_EQ(j["mlp_bias"], false);
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  EXPECT_FALSE(j.contains("quantization_config"));
  EXPECT_EQ(hf_config(micro(), WeightFormat::kF32, 1)["torch_dtype"], "float32");
  const nlohmann::json q = hf_config(micro(), WeightFormat::kNvfp4, 1);
  EXPECT_EQ(q["torch_dtype"], "bfloat16");
  EXPECT_EQ(q["quantization_config"]["quant_method"], "modelopt");
  EXPECT_EQ(q["quantization_config"]["quant_algo"], "NVFP4");
  EXPECT_EQ(q["quantization_config"]["group_size"], 16);
  EXPECT_EQ(q["quantization_config"]["exclude_modules"], nlohmann::json::array({"lm_head"}));
}

// The settings found to give SentencePiece's ids (issue 21), and nothing else: an absent
// eos_token would make LlamaTokenizer invent "</s>".
TEST(HfExport, TokenizerConfigIsTheSettingsThatReproduceSentencePiece) {
  EXPECT_EQ(hf_tokenizer_config(), nlohmann::json::parse(R"({
    "tokenizer_class": "LlamaTokenizer", "add_bos_token": true, "add_eos_token": false, "legacy": false,
    "add_prefix_space": false, "bos_token": "<s>", "unk_token": "<unk>", "eos_token": null, "pad_token": null,
    "clean_up_tokenization_spaces": false})"));
  EXPECT_EQ(hf_special_tokens_map(), nlohmann::json::parse(R"({"bos_token": "<s>", "unk_token": "<unk>"})"));
  const nlohmann::json g = hf_generation_config(1);
  EXPECT_EQ(g["bos_token_id"], 1);
  EXPECT_FALSE(g.contains("eos_token_id"));
}

TEST(HfExport, LastValidationIsTheLatestRecordAtOrBeforeTheStep) {
  const fs::path path = fs::temp_directory_path() / ("q2_hf_metrics_" + std::to_string(::getpid()) + ".jsonl");
  {
    std::ofstream f(path);
    f << R"({"step": 10, "loss": 5.0})" << "\n"
      << R"({"step": 10, "val_loss": 4.5, "val_bpb": 2.5})" << "\n"
      << R"({"step": 20, "val_loss": 4.25, "val_bpb": 2.25})" << "\n"
      << R"({"step": 30, "val_loss": 4.0, "val_bpb": 2.0})" << "\n"
      << R"({"step": 25, "val_lo)";  // cut short by a kill
  }
  EXPECT_EQ(last_validation(path.string(), 25)["val_loss"], 4.25);
  EXPECT_EQ(last_validation(path.string(), 30)["val_loss"], 4.0);
  EXPECT_TRUE(last_validation(path.string(), 9).is_null());
  EXPECT_TRUE(last_validation(path.string() + ".missing", 30).is_null());
  fs::remove(path);
}

LoadedModel loaded(const std::string& scheme) {
  LoadedModel m;
  m.backend = model::make_cpu_backend();
  m.info.model = micro();
  m.info.step = 30;
  m.config.scheme = scheme;
  m.config.steps = 40;
  m.model = std::make_unique<model::Transformer>(m.info.model, linear::scheme_by_name(scheme), *m.backend);
  m.path = "run/checkpoint.bin";
  return m;
}

TEST(HfExport, ModelCardSaysWhatTheWeightsAreAndTheFinalValidation) {
  const nlohmann::json val = {{"step", 30}, {"val_loss", 4.1234567}, {"val_bpb", 2.25}};
  const std::string q2 = model_card(loaded("quartet2"), WeightFormat::kF32, val);
  EXPECT_NE(q2.find("float32 master weights"), std::string::npos) << q2;
  EXPECT_NE(q2.find("only through its forward quantization"), std::string::npos) << q2;
  EXPECT_NE(q2.find("loss 4.123457 nats/token, 2.250000 bits per byte (step 30"), std::string::npos) << q2;
  EXPECT_NE(q2.find("| steps | 30 of 40 |"), std::string::npos) << q2;
  const std::string bf16 = model_card(loaded("bf16"), WeightFormat::kBf16, nullptr);
  EXPECT_NE(bf16.find("float32 master weights, rounded to BF16"), std::string::npos) << bf16;
  EXPECT_EQ(bf16.find("forward quantization"), std::string::npos) << bf16;
  EXPECT_NE(bf16.find("not recorded"), std::string::npos) << bf16;
  EXPECT_NE(model_card(loaded("quartet2"), WeightFormat::kNvfp4, val).find("needs an inference engine"),
            std::string::npos);
}

TEST(HfExport, RefusesAFileOrAFolderHoldingFilesAsOut) {
  const fs::path dir = fs::temp_directory_path() / ("q2_hf_out_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "full");
  std::ofstream(dir / "full/model.safetensors") << "old";
  std::ofstream(dir / "file") << "x";
  LoadedModel m = loaded("bf16");
  EXPECT_EQ(test::error_of([&] { export_hf_folder(m, {}, {.out_dir = (dir / "file").string()}); }),
            "export: --out '" + (dir / "file").string() + "' is a file; --format hf and nvfp4 write a folder");
  EXPECT_EQ(test::error_of([&] { export_hf_folder(m, {}, {.out_dir = (dir / "full").string()}); }),
            "export: --out '" + (dir / "full").string() + "' already holds files; choose a new or empty folder");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace q2::train
