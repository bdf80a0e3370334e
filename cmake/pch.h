// The heavy LibTorch includes, precompiled once (see lowbit_make_pch).
#pragma once
#include <torch/torch.h>
