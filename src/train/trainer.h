#pragma once
// The training loop: data -> model -> optimizer (AdamW or Muon), with logging, evaluation and checkpoints.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "model/transformer.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/run_dir.h"

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
  std::vector<int64_t> skipped;  // the steps of this call whose update the spike guard skipped
};

// Trains per the config in out.dir (train/run_dir.h says what `mode` allows there); kResume
// continues from out.dir/checkpoint.bin bit for bit. Messages (the resolved config, progress
// lines, evaluations) go to `log`. Any failure is an Error naming the step and the last good
// checkpoint: a checkpoint is written only from finite weights that the following step's
// forward and backward pass have also found finite (or the last step's), and a failing
// evaluation saves the progress before it stops. `in_process`: this call's rank of an in-process
// job (threads as ranks, model/in_process.h), each rank's thread calling run_training with the
// same config; null: the job config.dist describes.
TrainSummary run_training(const TrainConfig& config, StartMode mode, const std::function<void(const std::string&)>& log,
                          model::Collectives* in_process = nullptr);

std::string checkpoint_path(const TrainConfig& c);

// What a model was trained on, as checkpoints record it: the vocabulary size and the CRC-32 of
// the tokenizer model file.
nlohmann::json dataset_identity(const data::DatasetMeta& data);
// An error when `data` is not what the checkpoint was trained on (naming both); older
// checkpoints without a record pass.
void check_dataset(const CheckpointInfo& checkpoint, const std::string& checkpoint_path, const data::DatasetMeta& data,
                   const std::string& data_dir);

// A trained model ready for evaluation or sampling (its GEMM backend lives with it).
struct LoadedModel {
  std::unique_ptr<model::Backend> backend;
  std::unique_ptr<model::Transformer> model;
  TrainConfig config;
  CheckpointInfo info;
  std::string path;
};
LoadedModel load_for_inference(const std::string& checkpoint, const std::string& device = "cpu");
// The dataset a checkpoint trained on: its data.dir, which when relative is relative to the folder
// training ran in; from another folder it is found there through the checkpoint's place in its
// out.dir (or beside the checkpoint). Not found: an error suggesting --data.
std::string training_data_dir(const TrainConfig& c, const std::string& checkpoint);
// The prepared dataset of `data_dir` (empty: the one the model was trained on), checked with
// check_dataset.
data::DatasetMeta dataset_for(const LoadedModel& m, const std::string& data_dir);

}  // namespace q2::train
