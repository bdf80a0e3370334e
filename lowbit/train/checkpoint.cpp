#include "lowbit/train/checkpoint.h"

#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "lowbit/base/error.h"
#include "lowbit/base/torch_compat.h"
#include "lowbit/comm/comm_hook.h"
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/comm/process_group.h"
#include "lowbit/sparsity/sparsifier.h"

namespace lowbit::train {

// Note [Checkpoint files]
// DIR/rank-R-gG.ckpt is rank R's state at generation G (the G-th save);
// DIR/manifest names the generation that is complete and the world size:
//
//   lowbit-checkpoint 1
//   generation 7
//   world_size 4
//
// Save writes every rank's file for G under a temporary name and renames it,
// waits for all ranks, and only then rank 0 replaces the manifest (again a
// temporary name and a rename); the files of G - 1 are removed after that.
// A crash at any point leaves a manifest whose files are all there.
//
// A rank file is a 48-byte header and a torch::serialize archive:
//   bytes 0-7    "LBCKPT\0\1"
//   8-11, 12-15  format version, rank (little-endian uint32)
//   16-19        world size (uint32), 20-23 zero
//   24-31        generation (int64)
//   32-39        payload length in bytes (uint64)
//   40-47        checksum of bytes 0-39 and the payload (FNV-1a over 64-bit
//                words; any change of one word changes it)
// The header and checksum are checked before the archive is parsed, so a
// file cut short or with changed bytes is refused with a message, never
// handed to the archive reader (files on disk are untrusted).

namespace {

constexpr char kMagic[8] = {'L', 'B', 'C', 'K', 'P', 'T', '\0', '\1'};
constexpr size_t kHeaderBytes = 48;

uint64_t Checksum(const std::string& header40, const std::string& payload) {
  uint64_t h = 1469598103934665603ULL;
  auto mix = [&h](const std::string& bytes) {
    size_t i = 0;
    for (; i + 8 <= bytes.size(); i += 8) {
      uint64_t w;
      std::memcpy(&w, bytes.data() + i, 8);
      h = (h ^ w) * 1099511628211ULL;
    }
    // The last 0-7 bytes, with their count in the top byte so that trailing
    // zeros (a file cut to a multiple of 8 bytes and padded) still count.
    uint64_t tail = 0;
    std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
    h = (h ^ tail ^ (static_cast<uint64_t>(bytes.size() - i) << 56)) * 1099511628211ULL;
  };
  mix(header40);
  mix(payload);
  return h;
}

template <typename T>
void Put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <typename T>
T Get(const std::string& in, size_t offset) {
  T v;
  std::memcpy(&v, in.data() + offset, sizeof v);
  return v;
}

// Writes `bytes` to path + ".tmp", syncs it to the disk and renames it to
// `path`, then syncs the directory, so that neither a crashed process nor a
// crashed machine leaves a renamed file without its contents.
void WriteFileAtomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LOWBIT_CHECK(fd >= 0, "Checkpoint: cannot write ", tmp, ": ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      LOWBIT_CHECK(false, "Checkpoint: writing ", tmp, " failed: ", std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  const int sync_errno = errno;
  LOWBIT_CHECK(::close(fd) == 0 && synced, "Checkpoint: writing ", tmp, " failed: ", std::strerror(sync_errno));
  LOWBIT_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "Checkpoint: cannot rename ", tmp, " to ", path, ": ",
               std::strerror(errno));
  const std::string dir = std::filesystem::path(path).parent_path().string();
  const int dir_fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {  // best effort: some file systems cannot sync a directory
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

bool ReadFile(const std::string& path, std::string* bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *bytes = ss.str();
  return true;
}

std::string Describe(const at::Tensor& t) {
  return absl::StrCat(std::string(c10::toString(t.scalar_type())), " ", c10::str(t.sizes()));
}

}  // namespace

Checkpoint::Checkpoint(std::string directory, std::shared_ptr<comm::ProcessGroup> pg)
    : directory_(std::move(directory)), pg_(std::move(pg)) {
  LOWBIT_CHECK(!directory_.empty(), "Checkpoint: the directory is empty");
  LOWBIT_CHECK(pg_ != nullptr, "Checkpoint: the process group is null");
}

Checkpoint& Checkpoint::Model(torch::nn::Module& model) {
  model_ = &model;
  return *this;
}

Checkpoint& Checkpoint::Optimizer(const std::string& name, torch::optim::Optimizer& optimizer) {
  for (const auto& [n, o] : optimizers_) LOWBIT_CHECK(n != name, "Checkpoint: optimizer '", name, "' registered twice");
  optimizers_.emplace_back(name, &optimizer);
  return *this;
}

Checkpoint& Checkpoint::Ddp(comm::DistributedDataParallel& ddp) {
  ddp_ = &ddp;
  return *this;
}

Checkpoint& Checkpoint::Sparsifier(sparsity::Sparsifier& sparsifier) {
  sparsifier_ = &sparsifier;
  return *this;
}

Checkpoint& Checkpoint::Counter(const std::string& name, int64_t* value) {
  LOWBIT_CHECK(value != nullptr, "Checkpoint: counter '", name, "' is a null pointer");
  for (const auto& [n, v] : counters_) LOWBIT_CHECK(n != name, "Checkpoint: counter '", name, "' registered twice");
  counters_.emplace_back(name, value);
  return *this;
}

Checkpoint& Checkpoint::State(const std::string& name, std::function<void(torch::serialize::OutputArchive&)> save,
                              std::function<void(torch::serialize::InputArchive&)> load) {
  LOWBIT_CHECK(save && load, "Checkpoint: state '", name, "' needs both a save and a load function");
  for (const StateEntry& e : states_) LOWBIT_CHECK(e.name != name, "Checkpoint: state '", name, "' registered twice");
  states_.push_back({name, std::move(save), std::move(load)});
  return *this;
}

Checkpoint& Checkpoint::Rng(bool save) {
  rng_ = save;
  return *this;
}

Checkpoint& Checkpoint::StrictHook(bool strict) {
  strict_hook_ = strict;
  return *this;
}

std::string Checkpoint::RankPath(int rank, int64_t generation) const {
  return absl::StrCat(directory_, "/rank-", rank, "-g", generation, ".ckpt");
}

std::string Checkpoint::ManifestPath() const { return directory_ + "/manifest"; }

bool Checkpoint::Exists() const { return std::filesystem::exists(ManifestPath()); }

bool Checkpoint::Found() const {
  at::Tensor seen = torch::zeros({pg_->Size()}, torch::kInt);
  seen[pg_->Rank()] = Exists() ? 1 : 0;
  pg_->AllReduce(seen)->Wait();
  std::vector<std::string> with, without;
  for (int r = 0; r < pg_->Size(); ++r) (seen[r].item<int>() != 0 ? with : without).push_back(std::to_string(r));
  LOWBIT_CHECK(with.empty() || without.empty(), "Checkpoint::Found: rank(s) ", absl::StrJoin(with, ", "), " see ",
               ManifestPath(), " but rank(s) ", absl::StrJoin(without, ", "),
               " do not; every rank must see the same checkpoint directory (a shared file system, or a copy per host)");
  return without.empty();
}

Checkpoint::Manifest Checkpoint::ReadManifest() const {
  const std::string path = ManifestPath();
  std::string text;
  LOWBIT_CHECK(ReadFile(path, &text), "Checkpoint: no checkpoint in ", directory_, " (", path, " does not exist)");
  Manifest m;
  bool has_format = false, has_generation = false, has_world = false;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> kv = absl::StrSplit(line, ' ');
    int64_t v = 0;
    LOWBIT_CHECK(kv.size() == 2 && absl::SimpleAtoi(kv[1], &v), "Checkpoint: ", path, " is malformed: line '",
                 std::string(line), "'");
    if (kv[0] == "lowbit-checkpoint") {
      LOWBIT_CHECK(v == kCheckpointFormat, "Checkpoint: ", path, " has format ", v, "; this lowbit reads format ",
                   kCheckpointFormat);
      has_format = true;
    } else if (kv[0] == "generation") {
      LOWBIT_CHECK(v >= 1, "Checkpoint: ", path, " has generation ", v);
      m.generation = v;
      has_generation = true;
    } else if (kv[0] == "world_size") {
      LOWBIT_CHECK(v >= 1 && v <= (1 << 20), "Checkpoint: ", path, " has world_size ", v);
      m.world_size = v;
      has_world = true;
    } else {
      LOWBIT_CHECK(false, "Checkpoint: ", path, " is malformed: unknown key '", std::string(kv[0]), "'");
    }
  }
  LOWBIT_CHECK(has_format && has_generation && has_world, "Checkpoint: ", path,
               " is incomplete (needs lowbit-checkpoint, generation and world_size lines)");
  return m;
}

namespace {

// "Checkpoint::<what> on rank <rank>: " and the message, whose own
// "Checkpoint::<what>: " or "Checkpoint: " (most checks start with one) is
// not repeated.
std::string OnRank(const char* what, int rank, const std::string& message) {
  std::string rest = message;
  for (const std::string& inner : {absl::StrCat("Checkpoint::", what, ": "), std::string("Checkpoint: ")}) {
    if (rest.compare(0, inner.size(), inner) == 0) {
      rest = rest.substr(inner.size());
      break;
    }
  }
  return absl::StrCat("Checkpoint::", what, " on rank ", rank, ": ", rest);
}

}  // namespace

void Checkpoint::AgreeOrThrow(const std::string& error, const char* what) const {
  at::Tensor failed = torch::zeros({pg_->Size()}, torch::kInt);
  failed[pg_->Rank()] = error.empty() ? 0 : 1;
  pg_->AllReduce(failed)->Wait();
  std::vector<std::string> ranks;
  for (int r = 0; r < pg_->Size(); ++r) {
    if (failed[r].item<int>() != 0) ranks.push_back(std::to_string(r));
  }
  if (!error.empty()) LOWBIT_CHECK(false, error);
  LOWBIT_CHECK(ranks.empty(), "Checkpoint::", what, " failed on rank(s) ", absl::StrJoin(ranks, ", "),
               " (their errors say why)");
}

std::vector<std::string> Checkpoint::ModelFingerprint() const {
  std::vector<std::string> lines;
  if (model_ == nullptr) return lines;
  for (const auto& p : model_->named_parameters()) lines.push_back(absl::StrCat(p.key(), " ", Describe(p.value())));
  for (const auto& b : model_->named_buffers()) lines.push_back(absl::StrCat(b.key(), " (buffer) ", Describe(b.value())));
  return lines;
}

void Checkpoint::Save() {
  const int rank = pg_->Rank(), world = pg_->Size();
  // The next generation: one past the newest any rank knows of.
  int64_t known = generation_;
  if (Exists()) {
    try {
      known = std::max(known, ReadManifest().generation);
    } catch (const c10::Error&) {
      // A damaged manifest is replaced by this save.
    }
  }
  at::Tensor newest = torch::tensor({known}, torch::kLong);
  pg_->AllReduce(newest, comm::ReduceOp::kMax)->Wait();
  const int64_t previous = newest.item<int64_t>();
  const int64_t generation = previous + 1;

  std::string error;
  try {
    std::error_code ec;
    std::filesystem::create_directories(directory_, ec);
    LOWBIT_CHECK(!ec, "Checkpoint::Save: cannot create ", directory_, ": ", ec.message());
    torch::serialize::OutputArchive archive;
    archive.write("fingerprint", c10::IValue(c10::List<std::string>(ModelFingerprint())));
    archive.write("libtorch", c10::IValue(base::compat::TorchLine()));
    if (model_ != nullptr) {
      for (const auto& p : model_->named_parameters()) archive.write("param/" + p.key(), p.value().detach());
      for (const auto& b : model_->named_buffers()) archive.write("buffer/" + b.key(), b.value(), /*is_buffer=*/true);
    }
    for (const auto& [name, opt] : optimizers_) {
      torch::serialize::OutputArchive sub;
      opt->save(sub);
      archive.write("optimizer/" + name, sub);
    }
    if (ddp_ != nullptr) {
      // Which hook wrote the state: Restore compares it with its own.
      archive.write("hook_config", c10::IValue(ddp_->comm_hook().Config()));
      const comm::HookState state = ddp_->comm_hook().StateDict();
      if (!state.empty()) {
        torch::serialize::OutputArchive sub;
        comm::WriteHookState(sub, state);
        archive.write("hook", sub);
      }
    }
    if (sparsifier_ != nullptr) {
      torch::serialize::OutputArchive sub;
      sparsifier_->Save(sub);
      archive.write("sparsifier", sub);
    }
    for (const auto& [name, value] : counters_) archive.write("counter/" + name, torch::tensor({*value}, torch::kLong));
    for (const StateEntry& entry : states_) {
      torch::serialize::OutputArchive sub;
      entry.save(sub);
      archive.write("state/" + entry.name, sub);
    }
    if (rng_) {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      archive.write("rng/cpu", gen.get_state());
    }
    std::ostringstream payload_stream;
    archive.save_to(payload_stream);
    const std::string payload = payload_stream.str();
    std::string header(kMagic, 8);
    Put<uint32_t>(header, kCheckpointFormat);
    Put<uint32_t>(header, static_cast<uint32_t>(rank));
    Put<uint32_t>(header, static_cast<uint32_t>(world));
    Put<uint32_t>(header, 0);
    Put<int64_t>(header, generation);
    Put<uint64_t>(header, payload.size());
    const uint64_t sum = Checksum(header, payload);
    Put<uint64_t>(header, sum);
    WriteFileAtomically(RankPath(rank, generation), header + payload);
  } catch (const c10::Error& e) {
    error = OnRank("Save", rank, e.msg());
  }
  AgreeOrThrow(error, "Save");

  if (rank == 0) {
    try {
      WriteFileAtomically(ManifestPath(), absl::StrCat("lowbit-checkpoint ", kCheckpointFormat, "\ngeneration ",
                                                       generation, "\nworld_size ", world, "\n"));
    } catch (const c10::Error& e) {
      error = e.msg();
    }
  }
  AgreeOrThrow(error, "Save");
  generation_ = generation;
  // The manifest now names `generation`: older files are garbage. Rank 0
  // also removes the files of ranks a smaller world no longer has.
  if (previous > 0) std::remove(RankPath(rank, previous).c_str());
  if (rank == 0) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(directory_, ec)) {
      const std::string name = entry.path().filename().string();
      const std::string mine = absl::StrCat("-g", generation, ".ckpt");
      if (name.rfind("rank-", 0) == 0 && name.size() > mine.size() &&
          name.compare(name.size() - mine.size(), mine.size(), mine) != 0) {
        std::filesystem::remove(entry.path(), ec);
      }
    }
  }
}

void Checkpoint::Restore() {
  const int rank = pg_->Rank(), world = pg_->Size();
  std::string error;
  try {
    const Manifest m = ReadManifest();
    const bool same_world = m.world_size == world;
    const int source = same_world ? rank : static_cast<int>(rank % m.world_size);
    const std::string path = RankPath(source, m.generation);
    std::string bytes;
    LOWBIT_CHECK(ReadFile(path, &bytes), "Checkpoint::Restore: rank file ", path, " is missing (the manifest names ",
                 "generation ", m.generation, " of ", m.world_size, " ranks)");
    LOWBIT_CHECK(bytes.size() >= kHeaderBytes, "Checkpoint::Restore: ", path, " is truncated (", bytes.size(),
                 " bytes, shorter than the ", kHeaderBytes, "-byte header)");
    LOWBIT_CHECK(std::memcmp(bytes.data(), kMagic, 8) == 0, "Checkpoint::Restore: ", path,
                 " is not a lowbit checkpoint file (bad magic)");
    const auto format = Get<uint32_t>(bytes, 8), file_rank = Get<uint32_t>(bytes, 12), file_world = Get<uint32_t>(bytes, 16);
    const auto file_generation = Get<int64_t>(bytes, 24);
    const auto payload_size = Get<uint64_t>(bytes, 32), sum = Get<uint64_t>(bytes, 40);
    LOWBIT_CHECK(format == kCheckpointFormat, "Checkpoint::Restore: ", path, " has format ", format,
                 "; this lowbit reads format ", kCheckpointFormat);
    LOWBIT_CHECK(payload_size == bytes.size() - kHeaderBytes, "Checkpoint::Restore: ", path,
                 " is truncated or padded: ", "its header says ", payload_size, " payload bytes, the file has ",
                 bytes.size() - kHeaderBytes);
    const std::string payload = bytes.substr(kHeaderBytes);
    LOWBIT_CHECK(Checksum(bytes.substr(0, 40), payload) == sum, "Checkpoint::Restore: ", path,
                 " is corrupted (checksum mismatch)");
    LOWBIT_CHECK(file_rank == static_cast<uint32_t>(source) && file_world == static_cast<uint32_t>(m.world_size) &&
                     file_generation == m.generation,
                 "Checkpoint::Restore: ", path, " holds rank ", file_rank, " of ", file_world, ", generation ",
                 file_generation, "; the manifest expects rank ", source, " of ", m.world_size, ", generation ",
                 m.generation);

    torch::serialize::InputArchive archive;
    archive.load_from(payload.data(), payload.size());
    c10::IValue fingerprint;
    LOWBIT_CHECK(archive.try_read("fingerprint", fingerprint) && fingerprint.isList(), "Checkpoint::Restore: ", path,
                 " has no model fingerprint");
    // torch::optim's archives differ between LibTorch lines: a 1.13 Adam
    // state read by 2.11 lands on other parameters (a shape error at the
    // first step, or silently wrong state where the shapes agree).
    c10::IValue libtorch;
    const bool recorded = archive.try_read("libtorch", libtorch) && libtorch.isString();
    const std::string written = recorded ? libtorch.toStringRef() : "1.13";
    LOWBIT_CHECK(written == base::compat::TorchLine(), "Checkpoint::Restore: ", path,
                 " was written by lowbit built against LibTorch ", written,
                 recorded ? "" : " (it recorded no version: every lowbit before 2.x support was built against 1.13)",
                 ", and this program is built against LibTorch ", base::compat::TorchLine(),
                 "; LibTorch's optimizer state archives differ between the two, so the optimizer's per-parameter "
                 "state would land on other parameters. Resume with LibTorch ",
                 written, ", or start afresh");
    std::vector<std::string> saved;
    for (const c10::IValue& v : fingerprint.toListRef()) saved.push_back(v.toStringRef());
    const std::vector<std::string> now = ModelFingerprint();
    for (size_t i = 0; i < std::max(saved.size(), now.size()); ++i) {
      LOWBIT_CHECK(i < saved.size() && i < now.size() && saved[i] == now[i], "Checkpoint::Restore: ", path,
                   " was saved from a different model: entry ", i, " is '", i < saved.size() ? saved[i] : "(none)",
                   "' there and '", i < now.size() ? now[i] : "(none)", "' in this model");
    }
    if (model_ != nullptr) {
      // Copied into the tensors the model has, never swapped for new ones:
      // DDP's gradient buckets, the Sparsifier and the optimizers hold them.
      torch::NoGradGuard no_grad;
      auto restore = [&](const std::string& key, at::Tensor& live) {
        at::Tensor saved;
        LOWBIT_CHECK(archive.try_read(key, saved), "Checkpoint::Restore: ", path, " has no ", key);
        LOWBIT_CHECK(saved.sizes() == live.sizes() && saved.scalar_type() == live.scalar_type(),
                     "Checkpoint::Restore: ", path, " has ", key, " as ", Describe(saved), ", the model has ",
                     Describe(live));
        live.copy_(saved);
      };
      for (auto& p : model_->named_parameters()) restore("param/" + p.key(), p.value());
      for (auto& b : model_->named_buffers()) restore("buffer/" + b.key(), b.value());
    }
    for (const auto& [name, opt] : optimizers_) {
      torch::serialize::InputArchive sub;
      LOWBIT_CHECK(archive.try_read("optimizer/" + name, sub), "Checkpoint::Restore: ", path, " has no optimizer '",
                   name, "'");
      opt->load(sub);
    }
    // Checkpoints from before hook_config was written name no hook.
    c10::IValue saved_hook;
    const bool hook_named = archive.try_read("hook_config", saved_hook) && saved_hook.isString();
    const std::string now_hook = ddp_ != nullptr ? ddp_->comm_hook().Config() : "";
    const bool other_hook = ddp_ != nullptr && hook_named && saved_hook.toStringRef() != now_hook;
    if (other_hook) {
      const std::string what = absl::StrCat(path, " was saved with comm hook '", saved_hook.toStringRef(),
                                            "', this run's hook is '", now_hook, "'");
      LOWBIT_CHECK(!strict_hook_, "Checkpoint::Restore: ", what,
                   " (StrictHook is set: restore under the hook that saved it)");
      base::Warn(absl::StrCat("Checkpoint::Restore on rank ", rank, ": ", what,
                              ": the saved hook state (error feedback, warm starts) is not loaded and this hook "
                              "starts afresh (Checkpoint::StrictHook() makes this an error)"));
    }
    if (ddp_ != nullptr && !other_hook && !ddp_->comm_hook().StateDict().empty()) {
      torch::serialize::InputArchive sub;
      if (!same_world) {
        base::Warn(absl::StrCat("checkpoint ", directory_, " was written by ", m.world_size, " ranks, restoring on ",
                                world, ": rank ", rank, "'s comm-hook state starts afresh"));
      } else if (archive.try_read("hook", sub)) {
        ddp_->comm_hook().LoadStateDict(comm::ReadHookState(sub));
      } else {
        LOWBIT_CHECK(false, "Checkpoint::Restore: ", path, " has no comm-hook state, and this run's hook ",
                     ddp_->comm_hook().Name(), " keeps some (was it saved with another hook?)");
      }
    }
    if (sparsifier_ != nullptr) {
      torch::serialize::InputArchive sub;
      LOWBIT_CHECK(archive.try_read("sparsifier", sub), "Checkpoint::Restore: ", path, " has no sparsifier state");
      sparsifier_->Load(sub);
    }
    for (const StateEntry& entry : states_) {
      torch::serialize::InputArchive sub;
      LOWBIT_CHECK(archive.try_read("state/" + entry.name, sub), "Checkpoint::Restore: ", path, " has no state '",
                   entry.name, "'");
      entry.load(sub);
    }
    for (const auto& [name, value] : counters_) {
      at::Tensor t;
      LOWBIT_CHECK(archive.try_read("counter/" + name, t) && t.numel() == 1 && t.scalar_type() == at::kLong,
                   "Checkpoint::Restore: ", path, " has no counter '", name, "'");
      *value = t.item<int64_t>();
    }
    if (rng_) {
      at::Tensor state;
      LOWBIT_CHECK(archive.try_read("rng/cpu", state), "Checkpoint::Restore: ", path, " has no RNG state");
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(state);
    }
    // Each rank's parameters are its own saved ones: DDP must not replace
    // them with rank 0's after the first backward.
    if (ddp_ != nullptr) ddp_->ParametersRestored();
    generation_ = m.generation;
  } catch (const c10::Error& e) {
    error = OnRank("Restore", rank, e.msg());
  }
  AgreeOrThrow(error, "Restore");
}

}  // namespace lowbit::train
