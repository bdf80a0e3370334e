// One data-parallel SGD step through an installed lowbit.
#include <iostream>

#include <torch/torch.h>

#include <lowbit/comm/distributed_data_parallel.h>
#include <lowbit/config.h>
#include <lowbit/launch/init.h>

int main() {
  auto pg = lowbit::launch::InitProcessGroup();
  if (!pg.ok()) {
    std::cerr << pg.status() << "\n";
    return 1;
  }
  auto model = std::make_shared<torch::nn::LinearImpl>(4, 2);
  lowbit::comm::DistributedDataParallel ddp(model, *pg);
  torch::optim::SGD opt(model->parameters(), 0.1);
  model->forward(torch::ones({3, 4})).sum().backward();
  opt.step();
  // d(sum of outputs)/d(bias) is the batch size for every output.
  const bool ok = torch::allclose(model->bias.grad(), torch::full({2}, 3.0f));
  std::cout << "consumer " << (ok ? "ok" : "WRONG") << " lowbit " << LOWBIT_VERSION << " backend "
            << (*pg)->Backend() << "\n";
  return ok ? 0 : 1;
}
