// Failure injection for tests/comm: `kill` makes rank 1 die by SIGKILL after a
// few allreduces; `hang` makes it stop calling collectives (it blocks in
// pause()). The other ranks keep calling AllReduce and must fail.
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <iostream>

#include <torch/torch.h>

#include "lowbit/launch/init.h"

int main(int argc, char** argv) {
  if (argc != 2 || (std::strcmp(argv[1], "kill") != 0 && std::strcmp(argv[1], "hang") != 0)) {
    std::cerr << "usage: " << argv[0] << " kill|hang\n";
    return 2;
  }
  const bool kill = std::strcmp(argv[1], "kill") == 0;
  try {
    auto pg = lowbit::launch::InitProcessGroup();
    if (!pg.ok()) {
      std::cerr << pg.status() << "\n";
      return 1;
    }
    for (int step = 0; step < 100000; ++step) {
      if ((*pg)->Rank() == 1 && step == 3) {
        if (kill) raise(SIGKILL);
        while (true) pause();
      }
      at::Tensor t = torch::ones({1 << 16});
      (*pg)->AllReduce(t)->Wait();
    }
    std::cerr << "rank " << (*pg)->Rank() << " finished although a peer failed\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
