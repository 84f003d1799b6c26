#pragma once
// The training loop: data -> model -> AdamW, with logging, evaluation and checkpoints.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "model/transformer.h"
#include "train/config.h"

namespace q2::train {

struct EvalResult {
  double loss = 0;  // mean nats per token
  double bpb = 0;   // bits per UTF-8 byte of the predicted tokens
  int64_t tokens = 0;
};

// The first `batches` validation batches (always the same ones).
EvalResult evaluate(model::Transformer& model, const data::DatasetMeta& data,
                    const std::vector<uint32_t>& byte_lengths, int64_t batches, int64_t batch, int64_t seq);

struct TrainSummary {
  int64_t steps = 0;
  double last_loss = 0;
  EvalResult val;
  std::string checkpoint;
  std::vector<double> losses;  // the mean training loss of every step run by this call
};

// Trains per the config; with `resume`, continues from out_dir/checkpoint.bin bit for bit.
// Messages (the resolved config, progress lines, evaluations) go to `log`.
TrainSummary run_training(const TrainConfig& config, bool resume, const std::function<void(const std::string&)>& log);

std::string checkpoint_path(const TrainConfig& c);

// A trained model ready for evaluation or sampling (its GEMM backend lives with it).
struct LoadedModel {
  std::unique_ptr<model::Backend> backend;
  std::unique_ptr<model::Transformer> model;
  TrainConfig config;
};
LoadedModel load_for_inference(const std::string& checkpoint, const std::string& device = "cpu");

}  // namespace q2::train
