#include "lowbit/compress/compeft.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lowbit/base/error.h"
#include "lowbit/kernels/archive_file.h"
#include "lowbit/kernels/topk.h"

namespace lowbit::compress {

namespace {

constexpr char kMagic[4] = {'L', 'B', 'T', 'V'};
// 2: a CRC-32 of everything before it ends the file. Version 1 files (no
// CRC) are still read.
constexpr uint32_t kVersion = 2;
constexpr int64_t kHeaderBytes = 8 + 8 + 4;  // numel, k, scale

void PutVarint(std::vector<uint8_t>& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<uint8_t>(v));
}

template <typename T>
void Put(std::vector<uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

// Reads from untrusted bytes: every read is bounds-checked and names `what`.
class Reader {
 public:
  Reader(const uint8_t* data, int64_t size, std::string what) : data_(data), size_(size), what_(std::move(what)) {}
  template <typename T>
  T Get(const char* field) {
    LOWBIT_CHECK(pos_ + static_cast<int64_t>(sizeof(T)) <= size_, what_, ": cut short reading ", field, " at byte ",
                 pos_, " of ", size_);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  uint64_t Varint(const char* field) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const auto b = Get<uint8_t>(field);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    LOWBIT_CHECK(false, what_, ": ", field, " is not a valid varint at byte ", pos_);
  }
  const uint8_t* Take(int64_t n, const char* field) {
    LOWBIT_CHECK(n >= 0 && pos_ + n <= size_, what_, ": cut short reading ", field, " (", n, " bytes at byte ", pos_,
                 " of ", size_, ")");
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  int64_t pos() const { return pos_; }
  int64_t size() const { return size_; }

 private:
  const uint8_t* data_;
  int64_t size_, pos_ = 0;
  std::string what_;
};

}  // namespace

void CheckComPeftOptions(const ComPeftOptions& o) {
  LOWBIT_CHECK(o.density > 0 && o.density <= 1, "ComPEFT: density must be in (0, 1], got ", o.density);
  LOWBIT_CHECK(o.alpha > 0 && std::isfinite(o.alpha), "ComPEFT: alpha must be > 0, got ", o.alpha);
}

at::Tensor EncodeSparseTernary(const at::Tensor& tau, const ComPeftOptions& o) {
  CheckComPeftOptions(o);
  LOWBIT_CHECK(tau.scalar_type() == at::kFloat, "ComPEFT: tensors must be float32, got ", tau.scalar_type());
  const at::Tensor x = tau.detach().reshape({-1}).contiguous().cpu();
  const int64_t n = x.numel();
  const int64_t k =
      n == 0 ? 0 : std::min<int64_t>(n, static_cast<int64_t>(std::ceil(o.density * static_cast<double>(n))));
  const float scale = n == 0 ? 0.0f : static_cast<float>(o.alpha * x.std(/*unbiased=*/false).item<double>());
  std::vector<uint8_t> out;
  out.reserve(static_cast<size_t>(kHeaderBytes + 2 * k));
  Put<int64_t>(out, n);
  Put<int64_t>(out, k);
  Put<float>(out, scale);
  auto [idx, val] = kernels::TopKByMagnitude(x, k);  // increasing indices
  const int32_t* ip = idx.data_ptr<int32_t>();
  const float* vp = val.data_ptr<float>();
  int64_t prev = -1;
  for (int64_t i = 0; i < k; ++i) {
    PutVarint(out, static_cast<uint64_t>(ip[i] - prev - 1));
    prev = ip[i];
  }
  std::vector<uint8_t> signs(static_cast<size_t>((k + 7) / 8), 0);
  for (int64_t i = 0; i < k; ++i) {
    if (vp[i] < 0) signs[static_cast<size_t>(i / 8)] |= static_cast<uint8_t>(1u << (i % 8));
  }
  out.insert(out.end(), signs.begin(), signs.end());
  at::Tensor bytes = at::empty({static_cast<int64_t>(out.size())}, at::kByte);
  std::memcpy(bytes.data_ptr<uint8_t>(), out.data(), out.size());
  return bytes.to(tau.device());
}

void DecodeSparseTernary(const at::Tensor& payload, at::Tensor& out, bool accumulate) {
  LOWBIT_CHECK(payload.scalar_type() == at::kByte && payload.dim() == 1, "ComPEFT: a payload is 1-D uint8, got ",
               payload.scalar_type(), " ", payload.sizes());
  LOWBIT_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous(), "ComPEFT: out must be contiguous float32");
  const at::Tensor bytes = payload.contiguous().cpu();
  Reader r(bytes.data_ptr<uint8_t>(), bytes.numel(), "ComPEFT payload");
  const auto n = r.Get<int64_t>("the element count");
  const auto k = r.Get<int64_t>("the kept count");
  const auto scale = r.Get<float>("the scale");
  LOWBIT_CHECK(n == out.numel(), "ComPEFT payload: it holds ", n, " elements, the tensor has ", out.numel());
  LOWBIT_CHECK(k >= 0 && k <= n, "ComPEFT payload: kept count ", k, " is outside [0, ", n, "]");
  LOWBIT_CHECK(std::isfinite(scale) && scale >= 0, "ComPEFT payload: the scale is ", scale);
  std::vector<int64_t> positions(static_cast<size_t>(k));
  int64_t prev = -1;
  for (int64_t i = 0; i < k; ++i) {
    const uint64_t gap = r.Varint("a position");
    LOWBIT_CHECK(gap < static_cast<uint64_t>(n) && prev + 1 + static_cast<int64_t>(gap) < n,
                 "ComPEFT payload: position ", i, " lies past the tensor's ", n, " elements");
    prev += 1 + static_cast<int64_t>(gap);
    positions[static_cast<size_t>(i)] = prev;
  }
  const uint8_t* signs = r.Take((k + 7) / 8, "the signs");
  LOWBIT_CHECK(r.pos() == r.size(), "ComPEFT payload: ", r.size() - r.pos(), " bytes left over after ", k, " entries");
  at::Tensor idx = at::empty({k}, at::kLong), val = at::empty({k}, at::kFloat);
  int64_t* ip = idx.data_ptr<int64_t>();
  float* vp = val.data_ptr<float>();
  for (int64_t i = 0; i < k; ++i) {
    ip[i] = positions[static_cast<size_t>(i)];
    vp[i] = (signs[i / 8] >> (i % 8)) & 1 ? -scale : scale;
  }
  at::Tensor flat = out.view({-1});
  if (!accumulate) flat.zero_();
  flat.index_add_(0, idx.to(out.device()), val.to(out.device()));
}

int64_t SaveTaskVector(torch::nn::Module& finetuned, torch::nn::Module& base, const ComPeftOptions& o,
                       const std::string& path) {
  CheckComPeftOptions(o);
  const auto base_params = base.named_parameters();
  std::vector<uint8_t> out(kMagic, kMagic + 4);
  Put<uint32_t>(out, kVersion);
  const auto params = finetuned.named_parameters();
  Put<uint32_t>(out, static_cast<uint32_t>(params.size()));
  torch::NoGradGuard no_grad;
  for (const auto& item : params) {
    const at::Tensor* b = base_params.find(item.key());
    LOWBIT_CHECK(b != nullptr, "SaveTaskVector: the base model has no parameter '", item.key(), "'");
    LOWBIT_CHECK(b->sizes() == item.value().sizes(), "SaveTaskVector: '", item.key(), "' is ", item.value().sizes(),
                 " in the fine-tuned model and ", b->sizes(), " in the base");
    Put<uint32_t>(out, static_cast<uint32_t>(item.key().size()));
    out.insert(out.end(), item.key().begin(), item.key().end());
    Put<uint32_t>(out, static_cast<uint32_t>(item.value().dim()));
    for (int64_t d : item.value().sizes()) Put<int64_t>(out, d);
    const at::Tensor payload = EncodeSparseTernary(item.value().detach() - b->detach(), o).cpu();
    Put<uint64_t>(out, static_cast<uint64_t>(payload.numel()));
    out.insert(out.end(), payload.data_ptr<uint8_t>(), payload.data_ptr<uint8_t>() + payload.numel());
  }
  Put<uint32_t>(out, kernels::Crc32(out.data(), out.size()));
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
  LOWBIT_CHECK(file.good(), "SaveTaskVector: cannot write ", path);
  return static_cast<int64_t>(out.size());
}

void ApplyTaskVector(torch::nn::Module& model, const std::string& path, double scale) {
  std::ifstream file(path, std::ios::binary);
  LOWBIT_CHECK(file.good(), "ApplyTaskVector: cannot read ", path);
  const std::vector<uint8_t> data((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const std::string what = absl::StrCat("task vector ", path);
  Reader head(data.data(), static_cast<int64_t>(data.size()), what);
  const uint8_t* magic = head.Take(4, "the magic");
  LOWBIT_CHECK(std::memcmp(magic, kMagic, 4) == 0, what, ": not a lowbit task vector (no 'LBTV' magic)");
  const auto version = head.Get<uint32_t>("the version");
  LOWBIT_CHECK(version == 1 || version == kVersion, what, ": format version ", version, ", this build reads 1 and ",
               kVersion);
  // Version 2: the CRC-32 at the end covers every byte before it, checked before anything is parsed.
  int64_t body = static_cast<int64_t>(data.size());
  if (version >= 2) {
    LOWBIT_CHECK(data.size() >= 12, what, ": cut short (", data.size(), " bytes)");
    body -= 4;
    uint32_t stored;
    std::memcpy(&stored, data.data() + body, 4);
    LOWBIT_CHECK(stored == kernels::Crc32(data.data(), static_cast<size_t>(body)), what,
                 ": its CRC-32 does not match its bytes (the file was changed, damaged or cut short)");
  }
  Reader r(data.data(), body, what);
  r.Take(8, "the header");
  const auto count = r.Get<uint32_t>("the tensor count");
  auto params = model.named_parameters();
  LOWBIT_CHECK(count == params.size(), what, ": holds ", count, " tensors, the model has ", params.size(),
               " parameters");
  // Decode everything first, then add: a bad file changes nothing.
  std::vector<std::pair<at::Tensor*, at::Tensor>> deltas;
  for (uint32_t t = 0; t < count; ++t) {
    const auto name_len = r.Get<uint32_t>("a name length");
    LOWBIT_CHECK(name_len <= 4096, what, ": name length ", name_len, " of tensor ", t);
    const uint8_t* name_bytes = r.Take(name_len, "a name");
    const std::string name(reinterpret_cast<const char*>(name_bytes), name_len);
    at::Tensor* p = params.find(name);
    LOWBIT_CHECK(p != nullptr, what, ": the model has no parameter '", name, "'");
    const auto dims = r.Get<uint32_t>("a dimension count");
    LOWBIT_CHECK(static_cast<int64_t>(dims) == p->dim(), what, ": '", name, "' has ", dims, " dimensions, the model's ",
                 p->dim());
    for (uint32_t d = 0; d < dims; ++d) {
      const auto size = r.Get<int64_t>("a dimension");
      LOWBIT_CHECK(size == p->size(d), what, ": '", name, "' has size ", size, " in dimension ", d, ", the model's ",
                   p->size(d));
    }
    const auto payload_len = r.Get<uint64_t>("a payload length");
    LOWBIT_CHECK(payload_len <= static_cast<uint64_t>(r.size()), what, ": payload of ", payload_len, " bytes for '",
                 name, "'");
    const uint8_t* payload = r.Take(static_cast<int64_t>(payload_len), "a payload");
    at::Tensor bytes = at::empty({static_cast<int64_t>(payload_len)}, at::kByte);
    if (payload_len > 0) std::memcpy(bytes.data_ptr<uint8_t>(), payload, payload_len);
    at::Tensor delta = at::empty({p->numel()}, at::kFloat);
    try {
      DecodeSparseTernary(bytes, delta, /*accumulate=*/false);
    } catch (const c10::Error& e) {
      LOWBIT_CHECK(false, what, ": '", name, "': ", e.msg());
    }
    deltas.emplace_back(p, delta.view(p->sizes()));
  }
  LOWBIT_CHECK(r.pos() == r.size(), what, ": ", r.size() - r.pos(), " bytes left over");
  torch::NoGradGuard no_grad;
  for (auto& [p, delta] : deltas) p->add_(delta.to(p->device()), scale);
}

namespace {

class ComPeftCompressor final : public Compressor {
 public:
  explicit ComPeftCompressor(const ComPeftOptions& o) : o_(o) { CheckComPeftOptions(o); }
  std::string Name() const override { return "compeft"; }
  std::string Config() const override { return absl::StrCat("compeft(density=", o_.density, ",alpha=", o_.alpha, ")"); }
  bool Supports(Exchange exchange) const override { return exchange == Exchange::kAllGather; }
  Exchange DefaultExchange() const override { return Exchange::kAllGather; }
  at::Tensor Encode(const at::Tensor& x, const EncodeContext&) const override { return EncodeSparseTernary(x, o_); }
  void Decode(const at::Tensor& message, const EncodeContext&, at::Tensor& out, bool accumulate) const override {
    DecodeSparseTernary(message, out, accumulate);
  }
  int64_t FixedMessageBytes(int64_t) const override { return -1; }

 private:
  ComPeftOptions o_;
};

}  // namespace

std::shared_ptr<Compressor> MakeComPeftCompressor(const ComPeftOptions& o) {
  return std::make_shared<ComPeftCompressor>(o);
}

}  // namespace lowbit::compress
