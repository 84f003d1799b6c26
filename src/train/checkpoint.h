#pragma once
// Checkpoint file: magic "Q2CK", version, a JSON header (the full training config, the model
// config, step, data-loader position, the dataset's identity, parameter names and shapes, the
// optimizer's name and the names and shapes of its state tensors, the spike guard's window while
// the guard is on), the float32 parameters, then
// the optimizer's state tensors in that order (AdamW: every m, then every v; Muon:
// Optimizer::state), and a CRC-32 of everything before it. Written atomically, and only from
// finite values. Checkpoints from before Muon have no state list: theirs is AdamW's.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "model/transformer.h"
#include "train/config.h"
#include "train/optimizer.h"

namespace q2::train {

struct CheckpointInfo {
  nlohmann::json header;
  int64_t step = 0;
  TrainConfig config;
  model::ModelConfig model;
  bool has_optimizer = false;
  std::string optimizer;   // whose state it holds ("adamw", "muon"); empty without state
  nlohmann::json dataset;  // what it was trained on (vocabulary, tokenizer CRC); null in older checkpoints
};

// Every rank calls it and rank 0 writes: under ZeRO-1 the other ranks hand over the state of
// their shards, so the file is the same under any world size and shard. A parameter or optimizer
// value that is NaN or infinite is an error (on rank 0) naming the tensor, and nothing is written.
// `spike_guard`: SpikeGuard::state(), left out of the header when null.
void save_checkpoint(const std::string& path, const TrainConfig& config, model::Transformer& model,
                     Optimizer* optimizer, int64_t step, const nlohmann::json& loader_state,
                     const nlohmann::json& dataset, const nlohmann::json& spike_guard = nullptr);

// Reads the header only (validating magic, version and checksum).
CheckpointInfo read_checkpoint_info(const std::string& path);

// Loads parameters (and optimizer state, if given) into a model built from the same model
// config; a checkpoint of another shape, or whose parameter list or length disagrees with its
// header, is an error naming what differs. With `resume`, the settings a run cannot change midway
// (scheme, rotation size, the precision overrides, optimizer) must equal the checkpoint's;
// `optimizer`'s state must be the one the checkpoint holds, of which it takes its shard's.
CheckpointInfo load_checkpoint(const std::string& path, model::Transformer& model, Optimizer* optimizer,
                               const TrainConfig* resume);

}  // namespace q2::train
