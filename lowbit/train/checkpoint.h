// Checkpoint: everything a data-parallel training run depends on, saved by
// one call and restored exactly by another, per rank.
//
// What it holds is registered once: the model (parameters and buffers, so
// QAT's quantizer state too), optimizers (1-bit and 8-bit ones included),
// DistributedDataParallel's comm-hook state (error-feedback residuals,
// PowerSGD's Q, L-GreCo's choices), a Sparsifier (masks, dense weights,
// step), named counters (epoch, step) and the CPU random-number generator.
//
//   lowbit::train::Checkpoint ckpt("run1.ckpt", pg);
//   ckpt.Model(*model).Optimizer("adam", opt).Ddp(ddp).Counter("epoch", &epoch);
//   if (ckpt.Found()) ckpt.Restore();      // every rank, same directory
//   for (; epoch < epochs; ++epoch) {
//     ...train one epoch...
//     ckpt.Save();                         // every rank; epoch was advanced
//   }
//
// The directory holds one file per rank and a manifest. Save and Restore are
// collective: every rank calls them, and if one rank fails, every rank
// throws, the failing ones with their reason. See Note [Checkpoint files]
// in checkpoint.cpp for the format and why a crash during Save leaves the
// previous checkpoint whole.
//
// Restore names what does not fit: a different model (the first parameter or
// buffer whose name, dtype or shape differs), a missing rank file, a file cut
// short or with changed bytes (each file carries its length and a checksum,
// checked before anything is parsed). Restoring on a different world size
// drops the comm-hook state with a warning (it is per rank) and takes rank
// r's other state from the file of rank r mod the old world size. Restoring
// under another comm hook than the one that saved (a different Config():
// name or settings) warns on every rank, naming both, and leaves the new
// hook's state fresh; StrictHook() makes that an error.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}  // namespace torch::nn
namespace torch::optim {
class Optimizer;
}  // namespace torch::optim
namespace torch::serialize {
class OutputArchive;
class InputArchive;
}  // namespace torch::serialize
namespace lowbit::comm {
class ProcessGroup;
class DistributedDataParallel;
}  // namespace lowbit::comm
namespace lowbit::sparsity {
class Sparsifier;
}  // namespace lowbit::sparsity

namespace lowbit::train {

// Format version of the rank files and the manifest.
inline constexpr int kCheckpointFormat = 1;

class Checkpoint {
 public:
  // `directory` is created by Save if missing. Every rank passes the same
  // path; with several hosts it must be on a shared file system, or each
  // host holds its own ranks' files and a copy of the manifest.
  Checkpoint(std::string directory, std::shared_ptr<comm::ProcessGroup> pg);

  // Registration: the objects must outlive the Checkpoint. Names must be
  // unique within their kind.
  Checkpoint& Model(torch::nn::Module& model);
  Checkpoint& Optimizer(const std::string& name, torch::optim::Optimizer& optimizer);
  Checkpoint& Ddp(comm::DistributedDataParallel& ddp);
  Checkpoint& Sparsifier(sparsity::Sparsifier& sparsifier);
  Checkpoint& Counter(const std::string& name, int64_t* value);
  // Any other state, under `name` in this rank's file: `save` writes it into
  // an archive, `load` reads it back (and throws, naming what is wrong).
  // E.g. lowbit::optim::DiLoCo's Save / Load.
  Checkpoint& State(const std::string& name, std::function<void(torch::serialize::OutputArchive&)> save,
                    std::function<void(torch::serialize::InputArchive&)> load);
  // The default CPU generator's state (on by default).
  Checkpoint& Rng(bool save);
  // Restore throws, instead of warning, when the checkpoint was saved under
  // another comm hook (Config()) than the registered DDP's.
  Checkpoint& StrictHook(bool strict = true);

  // Whether the manifest exists (as this rank sees the directory).
  bool Exists() const;
  // Collective Exists, for restarting jobs (`--resume auto`): true when every
  // rank sees a complete checkpoint, false when none does, and an error
  // naming the ranks that do not when only some do (a directory that is not
  // shared, or a different path). A save that was interrupted never counts:
  // the manifest only ever names a generation whose files are all written.
  bool Found() const;
  // Collective. Writes this rank's file under a new generation, then rank 0
  // the manifest that points at it, then removes the previous generation.
  void Save();
  // Collective. Throws, naming the file and what is wrong, on any mismatch.
  void Restore();

  const std::string& directory() const { return directory_; }
  // Saves so far (the manifest's generation), 0 before the first.
  int64_t generation() const { return generation_; }
  // The file of `rank` for `generation`.
  std::string RankPath(int rank, int64_t generation) const;
  std::string ManifestPath() const;

 private:
  struct Manifest {
    int64_t generation = 0;
    int64_t world_size = 0;
  };
  Manifest ReadManifest() const;
  // All ranks learn whether any failed; this rank throws `error` if it
  // failed, the others name the failed ranks. `what` is "Save" or "Restore".
  void AgreeOrThrow(const std::string& error, const char* what) const;
  std::vector<std::string> ModelFingerprint() const;

  std::string directory_;
  std::shared_ptr<comm::ProcessGroup> pg_;
  torch::nn::Module* model_ = nullptr;
  std::vector<std::pair<std::string, torch::optim::Optimizer*>> optimizers_;
  comm::DistributedDataParallel* ddp_ = nullptr;
  sparsity::Sparsifier* sparsifier_ = nullptr;
  std::vector<std::pair<std::string, int64_t*>> counters_;
  struct StateEntry {
    std::string name;
    std::function<void(torch::serialize::OutputArchive&)> save;
    std::function<void(torch::serialize::InputArchive&)> load;
  };
  std::vector<StateEntry> states_;
  bool rng_ = true;
  bool strict_hook_ = false;
  int64_t generation_ = 0;
};

}  // namespace lowbit::train
