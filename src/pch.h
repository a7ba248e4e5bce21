// Precompiled header: the heavy LibTorch and JSON headers, parsed once per build.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
