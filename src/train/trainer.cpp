#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include "common/crc32.h"
#include "common/error.h"
#include "common/file.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "model/collectives.h"
#include "quant/seeds.h"
#include "train/checkpoint.h"
#include "common/npy.h"
#include "train/grad_reducer.h"
#include "train/memory_plan.h"
#include "train/optimizer.h"
#include "train/spike_guard.h"

namespace q2::train {

std::string checkpoint_path(const TrainConfig& c) { return RunDir::checkpoint_file(c.out_dir); }

nlohmann::json dataset_identity(const data::DatasetMeta& data) {
  char crc[16];
  std::snprintf(crc, sizeof crc, "%08x", file_crc32(data.tokenizer));
  return {{"vocab_size", data.vocab_size}, {"tokenizer_crc32", crc}};
}

void check_dataset(const CheckpointInfo& checkpoint, const std::string& checkpoint_path, const data::DatasetMeta& data,
                   const std::string& data_dir) {
  if (checkpoint.dataset.is_null()) return;
  const nlohmann::json have = dataset_identity(data);
  if (have != checkpoint.dataset)
    throw Error("checkpoint '" + checkpoint_path + "' was trained on another tokenizer (" + checkpoint.dataset.dump() +
                ") than the dataset '" + data_dir + "' holds (" + have.dump() +
                "); its losses and bits per byte there would be meaningless: pass --data with the dataset it was "
                "trained on");
}

LoadedModel load_for_inference(const std::string& checkpoint, const std::string& device) {
  LoadedModel m;
  m.path = checkpoint;
  m.info = read_checkpoint_info(checkpoint);
  m.config = m.info.config;
  m.backend = model::make_backend(device, model::BackendOptions());  // "auto": wherever the checkpoint came from
  m.model = std::make_unique<model::Transformer>(m.info.model, method_scheme(m.config), *m.backend, m.config.precision);
  load_checkpoint(checkpoint, *m.model, nullptr, nullptr);
  return m;
}

std::string training_data_dir(const TrainConfig& c, const std::string& checkpoint) {
  namespace fs = std::filesystem;
  const fs::path data = c.data_dir;
  auto prepared = [](const fs::path& dir) { return fs::exists(dir / "meta.json"); };
  if (data.is_absolute() || prepared(data)) return c.data_dir;
  // Training ran in the folder that holds out.dir: the checkpoint's folder less out.dir's parts.
  const fs::path run = fs::absolute(checkpoint).parent_path().lexically_normal();
  std::vector<fs::path> candidates;
  fs::path base = run;
  bool matched = fs::path(c.out_dir).is_relative();
  const fs::path out = fs::path(c.out_dir).lexically_normal();
  std::vector<fs::path> parts(out.begin(), out.end());
  for (auto it = parts.rbegin(); matched && it != parts.rend(); ++it) {
    if (it->empty() || *it == ".") continue;
    matched = base.filename() == *it;
    base = base.parent_path();
  }
  if (matched) candidates.push_back(base / data);
  candidates.push_back(run / data);
  std::string tried;
  for (const fs::path& p : candidates) {
    const fs::path dir = p.lexically_normal();
    if (prepared(dir)) return dir.string();
    tried += tried.empty() ? "'" : ", '";
    tried += dir.string() + "'";
  }
  throw Error("the checkpoint's dataset '" + c.data_dir + "' (its data.dir, relative to the folder training ran in) "
              "is neither in the current folder nor at " + tried + "; pass --data DIR with the prepared dataset it "
              "was trained on");
}

data::DatasetMeta dataset_for(const LoadedModel& m, const std::string& data_dir) {
  const std::string dir = data_dir.empty() ? training_data_dir(m.config, m.path) : data_dir;
  const data::DatasetMeta d = data::load_dataset(dir);
  check_dataset(m.info, m.path, d, dir);
  return d;
}

EvalResult evaluate(model::Transformer& model, const data::DatasetMeta& data, const std::vector<uint32_t>& byte_lengths,
                    int64_t batches, int64_t batch, int64_t seq) {
  data::Loader loader(data, data::Split::kVal, batch, seq);
  double nats = 0, bytes = 0;
  EvalResult r;
  for (int64_t i = 0; i < batches; ++i) {
    const data::Batch b = loader.next();
    if (i > 0 && loader.epoch() > 0) break;  // the split is smaller than asked: each batch once
    const model::Tensor logits = model.logits(b.inputs, b.batch, b.seq);
    nats += model.backend().cross_entropy(logits, b.targets, nullptr, 1.0f);
    for (uint32_t t : b.targets) bytes += byte_lengths.at(t);
    r.tokens += static_cast<int64_t>(b.targets.size());
  }
  r.loss = nats / static_cast<double>(r.tokens);
  r.bpb = bytes > 0 ? nats / (std::log(2.0) * bytes) : 0.0;
  return r;
}

namespace {

std::string format_eta(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  return buf;
}

void append_line(const std::string& path, const std::string& line) {
  std::ofstream f(path, std::ios::app);
  if (!f) throw Error("cannot append to '" + path + "'");
  f << line << '\n';
}

// A tap writing the linear operands as .npy files under dir: every layer's, or (`all` false)
// the first and last layer's; X and dY cut to their first `rows` tokens when rows > 0.
model::Transformer::Tap tensor_dump(model::Backend& backend, const std::string& dir, int64_t n_layers, bool all,
                                    int64_t rows) {
  return [&backend, dir, n_layers, all, rows](const std::string& name, const model::Tensor& t) {
    const std::string last = "layers." + std::to_string(n_layers - 1) + ".";
    if (!all && name.rfind("layers.0.", 0) != 0 && name.rfind(last, 0) != 0) return;
    const size_t dot = name.rfind('.');
    const std::string sub = dir + "/" + name.substr(0, dot), what = name.substr(dot + 1);
    std::filesystem::create_directories(sub);
    Matrix m = backend.download(t);
    if (rows > 0 && what != "w" && m.rows > rows) {
      m.data.resize(static_cast<size_t>(rows * m.cols));
      m.rows = rows;
    }
    save_npy(sub + "/" + what + ".npy", m);
  };
}

// world_size 0 (a config not passed through resolve_dist, as in library use): one process.
model::DistConfig dist_config(const TrainConfig& c) {
  if (c.world_size <= 1) return {};
  const int64_t local = c.local_rank < 0 ? c.rank : c.local_rank;
  return {static_cast<int>(c.rank), static_cast<int>(c.world_size), static_cast<int>(local), c.rendezvous,
          c.dist_timeout_s};
}

}  // namespace

TrainSummary run_training(const TrainConfig& cfg, StartMode mode, const std::function<void(const std::string&)>& log_all,
                          model::Collectives* in_process) {
  validate(cfg);
  const data::DatasetMeta data = data::load_dataset(cfg.data_dir);
  const data::Tokenizer tok = data::Tokenizer::load(data.tokenizer);
  const nlohmann::json dataset = dataset_identity(data);
  const model::ModelConfig mc = model_config(cfg, data.vocab_size);
  const auto backend = model::make_backend(cfg.device, {dist_config(cfg), cfg.gemm, in_process});
  model::Collectives& ranks = backend->collectives();
  // Rank 0 alone logs and writes files; the others take part only in the collectives.
  const bool lead = ranks.rank() == 0;
  const int world = ranks.world();
  const MemoryPlan memory = plan_memory(mc, cfg, cfg.device, world);
  auto log = [&](const std::string& m) {
    if (lead) log_all(m);
  };
  // Refused here rather than as a failed allocation minutes in.
  const uint64_t free_memory = backend->free_memory_bytes();
  check_fits(memory, free_memory, mc, cfg);
  std::unique_ptr<RunDir> dir;
  if (lead) {
    dir = std::make_unique<RunDir>(cfg.out_dir, log);
    dir->start(mode);
  }
  const linear::Scheme scheme = method_scheme(cfg);
  model::Transformer model(mc, scheme, *backend, cfg.precision);
  model.set_recompute(cfg.recompute);
  const Shard shard = make_shard(cfg, model.params(), mc, ranks.rank(), world);
  const std::unique_ptr<Optimizer> opt = make_optimizer(cfg, *backend, model.params(), mc, shard);
  GradReducer reducer(model, cfg.bucket_mb, shard);
  data::Loader loader(data, data::Split::kTrain, cfg.batch_size, cfg.seq_len, ranks.rank(), world);
  SpikeGuard guard(cfg.spike_guard, cfg.spike_window);
  const std::string ckpt = checkpoint_path(cfg), metrics = RunDir::metrics_file(cfg.out_dir);

  int64_t start = 0;
  if (mode == StartMode::kResume) {
    // The loader state is global, so any world size resumes it.
    const CheckpointInfo info = load_checkpoint(ckpt, model, opt.get(), &cfg);
    check_dataset(info, ckpt, data, cfg.data_dir);
    start = info.step;
    const int64_t end = cfg.stop_at > 0 ? cfg.stop_at : cfg.steps;
    if (end <= start)
      throw Error("cannot resume: the checkpoint '" + ckpt + "' is at step " + std::to_string(start) + ", and " +
                  (cfg.stop_at > 0 ? "train.stop_at is " + std::to_string(cfg.stop_at)
                                   : "train.steps is " + std::to_string(cfg.steps)) +
                  ": nothing is left to train (raise train.steps to continue)");
    loader.restore(info.header.at("loader"));
    try {
      guard.restore(info.header.value("spike_guard", nlohmann::json()));
    } catch (const Error& e) {
      throw Error("checkpoint '" + ckpt + "': " + e.what());
    }
    if (lead) dir->truncate_metrics(start);
    log("resumed from " + ckpt + " at step " + std::to_string(start));
  } else {
    model.init(cfg.seed);
  }
  const nlohmann::json resolved = {{"config", to_json(cfg)}, {"model", model::to_json(mc)},
                                   {"params_total", mc.total_params()}, {"params_non_embedding", mc.non_embedding_params()}};
  log("config:\n" + resolved.dump(2));
  log("block linears:\n" + model::describe_linear_schemes(mc, model::linear_schemes(mc, scheme, cfg.precision)));
  log("device: " + backend->describe());
  log(describe(memory, free_memory));
  if (lead) write_file_atomic(cfg.out_dir + "/config.json", resolved.dump(2) + "\n");

  // Global tokens: each rank scales its gradients by 1 / (all ranks' tokens), so the
  // all-reduced sum is the global mean.
  const int64_t tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * world;
  const float loss_scale = 1.0f / static_cast<float>(tokens_per_step);
  TrainSummary sum;
  int64_t last_good = mode == StartMode::kResume ? start : -1;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  auto stopped = [&](int64_t step, const std::string& why) {
    return Error("training stopped at step " + std::to_string(step) + ": " + why + "; " +
                 (last_good >= 0 ? "the last good checkpoint is '" + ckpt + "' (step " + std::to_string(last_good) + ")"
                                 : "no checkpoint was written yet"));
  };
  // What a checkpoint holds besides the model and the optimizer, as it was after its step.
  struct Progress {
    nlohmann::json loader, guard;
  };
  auto progress = [&] { return Progress{loader.state(), guard.state()}; };
  // A checkpoint due after step N is written once step N + 1's loss and gradients are found finite
  // (the weights of step N produced them), so a checkpoint never holds weights that lead straight
  // to a NaN. The last step's is written at once.
  struct Pending {
    int64_t step;
    Progress progress;
  };
  std::optional<Pending> pending;
  // Writes the checkpoint of `step` (every rank takes part, rank 0 writes); returns why it could
  // not, or "".
  auto save = [&](int64_t step, const Progress& p) -> std::string {
    try {
      save_checkpoint(ckpt, cfg, model, opt.get(), step, p.loader, dataset, p.guard);
    } catch (const Error& e) {
      return e.what();
    }
    last_good = step;
    return "";
  };

  const int64_t end = cfg.stop_at > 0 ? cfg.stop_at : cfg.steps;
  for (int64_t step = start; step < end; ++step) {
    model.zero_grads();
    double loss = 0, gnorm = 0;
    std::vector<double> squares;  // per parameter, for log.param_grad_norms
    const std::string of_step = " of step " + std::to_string(step + 1);
    try {
      for (int64_t micro = 0; micro < cfg.grad_accum; ++micro) {
        const bool dump = lead && micro == 0 && cfg.dump_every > 0 && (step + 1) % cfg.dump_every == 0;
        if (dump) model.set_tap(tensor_dump(*backend, cfg.out_dir + "/tensors/step" + std::to_string(step + 1), mc.n_layers,
                                            cfg.dump_layers == "all", cfg.dump_rows));
        const data::Batch b = loader.next();
        loss += model.forward(b.inputs, b.targets, b.batch, b.seq);
        // Each rank draws its own rotations and rounding (independent noise averages out in the
        // sum); world 1 keeps the single-process seeds.
        const int64_t draw = (step * cfg.grad_accum + micro) * world + ranks.rank();
        model.backward(seeds::backward_call(cfg.seed, draw), loss_scale,
                       reducer.hook(micro, cfg.grad_accum, "gradients" + of_step));
        if (dump) model.set_tap(nullptr);
      }
      reducer.finish();  // before the gradient norm and the optimizer read them
      loss = ranks.allreduce_sum(loss, "loss" + of_step);
      squares = grad_squares(*backend, model.grads(), shard, "gradient norm" + of_step);
      gnorm = norm_of_squares(squares);
    } catch (const Error& e) {
      throw stopped(step + 1, e.what());
    }
    loss /= static_cast<double>(tokens_per_step);
    if (!std::isfinite(loss) || !std::isfinite(gnorm))
      throw stopped(step + 1, std::isfinite(loss) ? "the gradient norm is not finite" : "the loss is not finite (NaN)");
    if (pending) {
      if (const std::string err = save(pending->step, pending->progress); !err.empty()) throw stopped(pending->step, err);
      pending.reset();
    }
    // Every rank has the same (global) gradient norm, so every rank skips the same steps.
    const double threshold = guard.threshold();
    const size_t judged_by = guard.filled();
    const bool skip = guard.skip(gnorm);
    const double schedule_lr = learning_rate(cfg, step), lr = opt->shown_lr(schedule_lr, cfg);
    if (skip) {
      sum.skipped.push_back(step + 1);
    } else {
      opt->step(model.params(), model.grads(), schedule_lr, cfg, step + 1, clip_scale(cfg.clip, gnorm));
      try {
        gather_weights(model, shard, "weights" + of_step);
      } catch (const Error& e) {
        throw stopped(step + 1, e.what());
      }
    }
    sum.losses.push_back(loss);
    sum.last_loss = loss;
    sum.steps = step + 1;

    const double secs = elapsed(), tok_s = (step + 1 - start) * tokens_per_step / std::max(secs, 1e-9);
    if (lead) {
      nlohmann::json record = {{"step", step + 1}, {"loss", loss}, {"lr", lr}, {"grad_norm", gnorm},
                               {"tokens", (step + 1) * tokens_per_step}, {"tokens_per_s", tok_s}, {"elapsed_s", secs}};
      if (guard.on()) record["skipped"] = skip;
      if (cfg.param_grad_norms) {
        nlohmann::json& norms = record["param_grad_norms"] = nlohmann::json::object();
        for (size_t i = 0; i < squares.size(); ++i) norms[model.params()[i].name] = std::sqrt(squares[i]);
      }
      append_line(metrics, record.dump());
    }
    if (skip) {
      char line[200];
      std::snprintf(line, sizeof line,
                    "step %lld: update skipped (train.spike_guard): gradient norm %.4g > %.4g = %g x the median of "
                    "the last %zu",
                    static_cast<long long>(step + 1), gnorm, threshold, cfg.spike_guard, judged_by);
      log(line);
    }
    if ((step + 1) % cfg.log_every == 0 || step + 1 == cfg.steps || step == start) {
      char line[256];
      std::snprintf(line, sizeof line, "step %6lld/%lld | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | ETA %s",
                    static_cast<long long>(step + 1), static_cast<long long>(cfg.steps), loss, lr, gnorm, tok_s,
                    format_eta(secs / (step + 1 - start) * (end - step - 1)).c_str());
      log(line);
    }
    const bool last = step + 1 == end;
    if ((step + 1) % cfg.eval_every == 0 || last) {
      std::string failed;  // why rank 0's evaluation failed
      if (lead) {
        try {
          sum.val = evaluate(model, data, tok.byte_lengths(), cfg.eval_batches, cfg.batch_size, cfg.seq_len);
          if (!std::isfinite(sum.val.loss)) throw Error("the validation loss is not finite (NaN)");
        } catch (const Error& e) {
          failed = e.what();
        }
      }
      // Every rank learns of it, to take part in the checkpoint (ZeRO-1 gathers the state from all).
      try {
        if (ranks.allreduce_sum(failed.empty() ? 0.0 : 1.0, "evaluation" + of_step) > 0 && failed.empty())
          failed = "on rank 0";
      } catch (const Error& e) {
        throw stopped(step + 1, e.what());
      }
      if (!failed.empty()) {
        // The training step itself succeeded: keep it before stopping.
        const std::string err = save(step + 1, progress());
        throw stopped(step + 1, "the evaluation failed: " + failed + (err.empty() ? "" : "; " + err));
      }
      if (lead)
        append_line(metrics, nlohmann::json({{"step", step + 1}, {"val_loss", sum.val.loss}, {"val_bpb", sum.val.bpb},
                                             {"tokens", (step + 1) * tokens_per_step}, {"elapsed_s", elapsed()}}).dump());
      char line[160];
      std::snprintf(line, sizeof line, "eval step %lld | val loss %.4f | val bpb %.4f", static_cast<long long>(step + 1),
                    sum.val.loss, sum.val.bpb);
      log(line);
    }
    if (last) {
      if (const std::string err = save(step + 1, progress()); !err.empty()) throw stopped(step + 1, err);
    } else if ((step + 1) % cfg.ckpt_every == 0) {
      pending = Pending{step + 1, progress()};
    }
  }
  sum.checkpoint = ckpt;
  return sum;
}

}  // namespace q2::train
