#pragma once
// NumPy .npy files holding 2-D float32 or float64 arrays in C order (version 1.0-3.0 headers).
#include <string>

#include "common/matrix.h"

namespace q2 {

Matrix load_npy(const std::string& path);        // float64 data is rounded to float32
void save_npy(const std::string& path, const Matrix& m);  // float32, written atomically

}  // namespace q2
