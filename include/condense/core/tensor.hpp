// Tensor<T> together with its core op set: the class, the autograd engine, device/type
// conversion, views, reductions and elementwise arithmetic (with the operators). Every
// op header ends by including this file, so that the members and operators used inside
// backward rules are all defined in any translation unit that uses one op.
#pragma once

#include "condense/core/tensor_type.hpp"
#include "condense/autograd/node.hpp"
#include "condense/autograd/engine.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/views.hpp"
#include "condense/ops/reduce.hpp"
#include "condense/ops/elementwise.hpp"
