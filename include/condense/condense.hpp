// The umbrella header for users: everything condense offers on the CPU. The library's own
// files include the narrow headers they use instead.
#pragma once

#include "condense/autograd/engine.hpp"
#include "condense/autograd/grad_mode.hpp"
#include "condense/autograd/gradcheck.hpp"
#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/config.hpp"
#include "condense/core/device.hpp"
#include "condense/core/dtype.hpp"
#include "condense/core/error.hpp"
#include "condense/core/factories.hpp"
#include "condense/core/print.hpp"
#include "condense/core/random.hpp"
#include "condense/core/shape.hpp"
#include "condense/core/storage.hpp"
#include "condense/core/tensor.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/elementwise.hpp"
#include "condense/ops/reduce.hpp"
#include "condense/ops/views.hpp"
