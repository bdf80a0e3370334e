// Writes what bench/peers/gpt_ddp.py --check compares against: lowbit's GPT
// (a preset, seeded, matrices scaled up), its parameters as one float32 file in named_parameters
// order with their names and shapes, a batch of training windows (seed 3,
// rank 0, step 5) and the loss the model gives on it.
//
//   gpt_peer_dump CORPUS PRESET DIR
#include <fstream>
#include <iostream>

#include <torch/torch.h>

#include "examples/common/methods.h"
#include "examples/gpt/model.h"
#include "examples/gpt/text_data.h"

namespace gpt = lowbit::examples::gpt;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: gpt_peer_dump CORPUS PRESET DIR\n";
    return 2;
  }
  auto corpus = gpt::LoadCharCorpus(argv[1], 0.1);
  if (!corpus.ok()) {
    std::cerr << corpus.status() << "\n";
    return 1;
  }
  const std::string dir = argv[3];
  gpt::GptConfig config = gpt::GptPreset(argv[2]);
  config.vocab_size = corpus->size();
  torch::manual_seed(7);
  gpt::Gpt model(config);
  {
    // Weights 20x their initial scale, so the loss is far from the uniform
    // guess and every layer moves it.
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) {
      if (p.dim() >= 2) p.mul_(20.0);
    }
  }
  const int64_t total = lowbit::examples::WriteParametersForPeer(*model, dir);
  const int64_t batch = 8, seed = 3, step = 5;
  const at::Tensor w = gpt::TrainWindows(*corpus, batch, config.block_size, seed, /*rank=*/0, step).contiguous();
  std::ofstream(dir + "/batch.bin", std::ios::binary)
      .write(static_cast<const char*>(w.data_ptr()), static_cast<std::streamsize>(w.numel() * 8));
  torch::NoGradGuard no_grad;
  const double loss =
      model->Loss(w.narrow(1, 0, config.block_size), w.narrow(1, 1, config.block_size)).item<double>();
  std::ofstream meta(dir + "/meta.json");
  meta.precision(17);
  meta << "{\"preset\":\"" << argv[2] << "\",\"parameters\":" << total << ",\"batch\":" << batch
       << ",\"seed\":" << seed << ",\"step\":" << step << ",\"loss\":" << loss << "}\n";
  std::cout << "gpt_peer_dump: " << total << " parameters, loss " << loss << "\n";
  return meta.good() ? 0 : 1;
}
