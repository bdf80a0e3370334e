// The small CNN the QAT and sparsity tests train: conv1 (1 -> 8), conv2
// (8 -> 16), fc1 (784 -> 64), fc2 (64 -> 10) on 28x28 inputs, calling its
// layers through qat::ForwardLayer so Prepare can swap them.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "lowbit/qat/quant_modules.h"

namespace lowbit::testing {

struct SmallCnnImpl : torch::nn::Module {
  SmallCnnImpl() {
    namespace nn = torch::nn;
    register_module("conv1", nn::Conv2d(nn::Conv2dOptions(1, 8, 3).padding(1)));
    register_module("conv2", nn::Conv2d(nn::Conv2dOptions(8, 16, 3).padding(1)));
    register_module("fc1", nn::Linear(16 * 7 * 7, 64));
    register_module("fc2", nn::Linear(64, 10));
  }
  at::Tensor forward(at::Tensor x) {
    auto layers = named_children();
    x = at::max_pool2d(at::relu(qat::ForwardLayer(*layers["conv1"], x)), 2);
    x = at::max_pool2d(at::relu(qat::ForwardLayer(*layers["conv2"], x)), 2);
    return qat::ForwardLayer(*layers["fc2"], at::relu(qat::ForwardLayer(*layers["fc1"], x.flatten(1))));
  }
};
TORCH_MODULE(SmallCnn);

}  // namespace lowbit::testing
