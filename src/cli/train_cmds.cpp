// quartet2 train | eval | generate | export
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <tuple>

#include "cli/commands.h"
#include "common/error.h"
#include "data/tokenizer.h"
#include "train/export.h"
#include "train/hf_export.h"
#include "train/sampling.h"
#include "train/trainer.h"

namespace q2::cli {

namespace {

void print_line(const std::string& s) {
  std::printf("%s\n", s.c_str());
  std::fflush(stdout);
}

// A finite number >= lo (`what`: "an integer", "a finite number"), checked on the text given:
// CLI11's NonNegativeNumber lets nan through, its range messages print the whole double
// range, and an unsigned option would take "-1" as 2^64 - 1.
CLI::Validator at_least(int lo, const std::string& what) {
  const std::string rule = ">= " + std::to_string(lo);
  return CLI::Validator(
      [lo, what, rule](std::string& text) -> std::string {
        double v = 0;
        if (CLI::detail::lexical_cast(text, v) && std::isfinite(v) && v >= lo) return "";
        return "must be " + what + " " + rule + ", got " + text;
      },
      rule);
}

}  // namespace

void add_train(CLI::App& app) {
  struct Opts {
    std::string config, device, world_size, rank, rendezvous, timeout;
    bool resume = false, overwrite = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = app.add_subcommand(
      "train", "Pre-train a model. Any config key can be overridden as --section.key=value, e.g. --train.lr=3e-4");
  sub->add_option("--config", o->config, "TOML config file (sections model, data, out, method, train, log, dist)");
  sub->add_flag("--resume", o->resume, "Continue the run in out.dir from its checkpoint.bin");
  sub->add_flag("--overwrite", o->overwrite,
                "Start a new run in an out.dir that holds one, deleting its checkpoint and metrics")
      ->excludes(sub->get_option("--resume"));
  sub->add_option("--device", o->device, "cpu or cuda (same as --method.device)");
  // Data parallelism (docs/ARCHITECTURE.md): one process per GPU. Without these, mpirun's
  // OMPI_COMM_WORLD_* variables are used, else a single process.
  sub->add_option("--world-size", o->world_size, "Processes in a data-parallel job (same as --dist.world_size)");
  sub->add_option("--rank", o->rank, "This process's rank, 0 .. world size - 1 (same as --dist.rank)");
  sub->add_option("--rendezvous", o->rendezvous,
                  "Directory all ranks share for start-up (same as --dist.rendezvous; default under mpirun: "
                  "out.dir/rendezvous)");
  sub->add_option("--dist-timeout", o->timeout,
                  "Seconds a rank waits for the others at start-up and in each all-reduce (same as --dist.timeout_s)");
  sub->allow_extras();
  sub->callback([o, sub] {
    std::vector<std::string> overrides = sub->remaining();
    for (const auto& [flag, name, key] :
         {std::tuple{&o->device, "--device", "method.device"}, {&o->world_size, "--world-size", "dist.world_size"},
          {&o->rank, "--rank", "dist.rank"}, {&o->rendezvous, "--rendezvous", "dist.rendezvous"},
          {&o->timeout, "--dist-timeout", "dist.timeout_s"}})
      if (!flag->empty()) {
        const std::string own = std::string("--") + key + "=" + *flag;
        const nlohmann::json own_value = train::parse_override(own).second;
        // Given both ways, the later one would silently win.
        for (const std::string& given : sub->remaining())
          if (const auto [k, v] = train::parse_override(given); k == key && v != own_value)
            throw Error(std::string(name) + " " + *flag + " conflicts with " + given + " (give one)");
        overrides.push_back(own);
      }
    train::TrainConfig cfg = train::load_config(o->config, overrides);
    train::resolve_dist(cfg, [](const char* name) { return std::getenv(name); });
    const train::StartMode mode = o->resume      ? train::StartMode::kResume
                                  : o->overwrite ? train::StartMode::kOverwrite
                                                 : train::StartMode::kFresh;
    const train::TrainSummary s = train::run_training(cfg, mode, print_line);
    if (cfg.rank == 0)
      std::printf("done: %lld steps, last train loss %.4f, val loss %.4f, val bpb %.4f, checkpoint %s\n",
                  static_cast<long long>(s.steps), s.last_loss, s.val.loss, s.val.bpb, s.checkpoint.c_str());
  });
}

void add_eval(CLI::App& app) {
  struct Opts {
    std::string checkpoint, data, device = "cpu";
    int64_t batches = 0;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = app.add_subcommand("eval", "Validation loss and bits per byte of a checkpoint");
  sub->add_option("--checkpoint", o->checkpoint, "Checkpoint file")->required();
  sub->add_option("--data", o->data, "Prepared data directory (default: the one the checkpoint trained on)");
  CLI::Option* batches =
      sub->add_option("--batches", o->batches, "Validation batches (default: the training config's log.eval_batches)")
          ->check(at_least(1, "an integer"));
  sub->add_option("--device", o->device, "cpu or cuda")->capture_default_str();
  sub->add_flag("--json", o->json, "Print one JSON object (full precision) instead of the line");
  sub->callback([o, batches] {
    train::LoadedModel m = train::load_for_inference(o->checkpoint, o->device);
    const data::DatasetMeta d = train::dataset_for(m, o->data);
    const data::Tokenizer tok = data::Tokenizer::load(d.tokenizer);
    const int64_t n = batches->count() > 0 ? o->batches : m.config.eval_batches;
    const train::EvalResult r =
        train::evaluate(*m.model, d, tok.byte_lengths(), n, m.config.batch_size, m.config.seq_len);
    if (o->json) {
      const nlohmann::json j = {{"val_loss", r.loss},   {"val_bpb", r.bpb},       {"tokens", r.tokens},
                                {"batches", n},         {"batch_size", m.config.batch_size},
                                {"seq_len", m.config.seq_len}, {"scheme", m.config.scheme}, {"step", m.info.step}};
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("val loss %.6f | val bpb %.6f | %lld tokens | scheme %s\n", r.loss, r.bpb,
                static_cast<long long>(r.tokens), m.config.scheme.c_str());
  });
}

void add_generate(CLI::App& app) {
  struct Opts {
    std::string checkpoint, data, prompt = "The", device = "cpu";
    bool ids = false, stop_at_bos = false;
    train::SampleOptions s;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = app.add_subcommand("generate", "Sample text from a checkpoint (a generated BOS shows as <s>)");
  sub->add_option("--checkpoint", o->checkpoint, "Checkpoint file")->required();
  sub->add_option("--data", o->data, "Prepared data directory holding the tokenizer (default: the training one)");
  sub->add_option("--prompt", o->prompt, "Text to continue")->capture_default_str();
  sub->add_option("--tokens", o->s.max_new_tokens, "New tokens")->check(at_least(1, "an integer"))->capture_default_str();
  sub->add_option("--temperature", o->s.temperature, "Sampling temperature (0: greedy)")
      ->check(at_least(0, "a finite number"))
      ->capture_default_str();
  sub->add_option("--top-k", o->s.top_k, "Sample among the k most likely tokens (0: all)")
      ->check(at_least(0, "an integer"))
      ->capture_default_str();
  sub->add_option("--seed", o->s.seed, "Sampling seed")->check(at_least(0, "an integer"))->capture_default_str();
  sub->add_flag("--stop-at-bos", o->stop_at_bos,
                "Stop at the end of the document: once a BOS (the token that starts every document) is generated");
  sub->add_flag("--ids", o->ids, "Print the token ids (the prompt's, its BOS first, then the generated) instead of text");
  sub->add_option("--device", o->device, "cpu or cuda")->capture_default_str();
  sub->callback([o] {
    train::LoadedModel m = train::load_for_inference(o->checkpoint, o->device);
    const data::DatasetMeta d = train::dataset_for(m, o->data);
    const data::Tokenizer tok = data::Tokenizer::load(d.tokenizer);
    std::vector<uint32_t> prompt = {tok.bos_id()};
    for (uint32_t t : tok.encode(o->prompt)) prompt.push_back(t);
    train::SampleOptions s = o->s;
    if (o->stop_at_bos) s.stop_token = tok.bos_id();
    const std::vector<uint32_t> out = train::sample(*m.model, prompt, s);
    if (o->ids) {
      std::string line;
      for (uint32_t t : out) line += (line.empty() ? "" : " ") + std::to_string(t);
      std::printf("%s\n", line.c_str());
      return;
    }
    // The prompt's own BOS is not shown; generated ones are. Written whole: a byte token may decode to NUL.
    const std::string text = train::text_showing_bos(tok, std::vector<uint32_t>(out.begin() + 1, out.end())) + "\n";
    std::fwrite(text.data(), 1, text.size(), stdout);
  });
}

void add_export(CLI::App& app) {
  struct Opts {
    std::string checkpoint, out, format = "safetensors", dtype = "f32", data, device = "cpu";
    double max_shard_mb = 5000;
    int64_t calib_windows = train::HfExportOptions().calib_windows;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = app.add_subcommand(
      "export",
      "Write a checkpoint's weights for other tools. safetensors: one file with Llama tensor names; hf: a Hugging "
      "Face folder (LlamaForCausalLM, LlamaTokenizer, model card) for AutoModelForCausalLM / AutoTokenizer; nvfp4: "
      "that folder with each block linear as the trained forward pass quantized it (ModelOpt's NVFP4 layout, for "
      "inference engines). The safetensors and hf weights are the float32 master weights (--dtype bf16: rounded to "
      "BF16): a model trained under a quantized scheme (quartet2, nvidia, ...) used them only through its forward "
      "quantization, so they evaluate close to, not exactly as, the trained model.");
  sub->add_option("--checkpoint", o->checkpoint, "Checkpoint file")->required();
  sub->add_option("--out", o->out, "Output .safetensors file (safetensors) or folder (hf, nvfp4)")->required();
  sub->add_option("--format", o->format, "safetensors, hf or nvfp4")
      ->check(CLI::IsMember({"safetensors", "hf", "nvfp4"}))
      ->capture_default_str();
  CLI::Option* dtype = sub->add_option("--dtype", o->dtype, "f32 or bf16 (nvfp4: the tensors it does not quantize are bf16)")
                           ->check(CLI::IsMember({"f32", "bf16"}))
                           ->capture_default_str();
  CLI::Option* data = sub->add_option(
      "--data", o->data, "Prepared data directory whose tokenizer hf and nvfp4 copy (default: the one the checkpoint trained on)");
  CLI::Option* shard = sub->add_option("--max-shard-mb", o->max_shard_mb,
                  "hf, nvfp4: split model.safetensors into shards of at most this many MB (10^6 bytes), with an index")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  CLI::Option* calib = sub->add_option("--calib-windows", o->calib_windows,
                                       "nvfp4: validation windows (of the model's sequence length) whose activation "
                                       "maxima give each linear's input_scale (ModelOpt's calibration); 0: none")
                           ->check(CLI::NonNegativeNumber)
                           ->capture_default_str();
  CLI::Option* device =
      sub->add_option("--device", o->device, "nvfp4: cpu or cuda, where the calibration forward passes run")
          ->check(CLI::IsMember({"cpu", "cuda"}))
          ->capture_default_str();
  sub->callback([o, dtype, data, shard, calib, device] {
    if (o->format == "safetensors" && data->count() + shard->count() > 0)
      throw Error("export: --data and --max-shard-mb apply to --format hf and nvfp4, not to one safetensors file");
    if (o->format != "nvfp4" && calib->count() + device->count() > 0)
      throw Error("export: --calib-windows and --device apply to --format nvfp4 only");
    std::error_code ec;
    if (std::filesystem::equivalent(o->checkpoint, o->out, ec))
      throw Error("export: --out '" + o->out + "' is the checkpoint itself; choose another file");
    if (o->format == "nvfp4" && dtype->count() > 0 && o->dtype != "bf16")
      throw Error("export: --format nvfp4 keeps the tensors it does not quantize in bf16; drop --dtype " + o->dtype);
    train::LoadedModel m = train::load_for_inference(o->checkpoint, o->device);
    if (o->format == "safetensors") {
      train::export_safetensors(*m.model, o->out, o->dtype == "bf16");
      std::printf("wrote %s (%s)\n", o->out.c_str(), o->dtype.c_str());
      return;
    }
    train::HfExportOptions h;
    h.out_dir = o->out;
    h.format = o->format == "nvfp4"   ? train::WeightFormat::kNvfp4
               : o->dtype == "bf16" ? train::WeightFormat::kBf16
                                    : train::WeightFormat::kF32;
    h.max_shard_bytes = static_cast<uint64_t>(o->max_shard_mb * 1e6);
    h.calib_windows = o->calib_windows;
    if (h.format == train::WeightFormat::kNvfp4 && h.calib_windows > 0)
      std::fprintf(stderr, "export: calibrating input scales on %lld validation windows of %lld tokens (%s)\n",
                   static_cast<long long>(h.calib_windows), static_cast<long long>(m.info.model.seq_len),
                   o->device.c_str());
    const data::DatasetMeta d = train::dataset_for(m, o->data);
    const std::vector<std::string> files = train::export_hf_folder(m, d, h);
    std::string list;
    for (const std::string& f : files) list += (list.empty() ? "" : ", ") + f;
    std::printf("wrote %s/ (%s): %s\n", o->out.c_str(), o->format == "nvfp4" ? "nvfp4, bf16" : o->dtype.c_str(),
                list.c_str());
  });
}

}  // namespace q2::cli
