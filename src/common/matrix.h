#pragma once
#include <cstdint>
#include <string>
#include <algorithm>
#include <vector>

namespace q2 {

// Row-major float32 matrix; rows are the dimension quantization groups run along.
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> data;

  Matrix() = default;
  // Zeros; a negative, overflowing or unallocatable shape throws an Error naming it.
  Matrix(int64_t r, int64_t c);
  float* row(int64_t r) { return data.data() + r * cols; }
  const float* row(int64_t r) const { return data.data() + r * cols; }
  float& at(int64_t r, int64_t c) { return data[static_cast<size_t>(r * cols + c)]; }
  float at(int64_t r, int64_t c) const { return data[static_cast<size_t>(r * cols + c)]; }
  int64_t size() const { return rows * cols; }
};

// Read-only view with the tensor's name, so errors can say which tensor was bad.
struct MatrixRef {
  const float* data;
  int64_t rows, cols;
  std::string name;

  MatrixRef(const Matrix& m, std::string n) : data(m.data.data()), rows(m.rows), cols(m.cols), name(std::move(n)) {}
  MatrixRef(const float* d, int64_t r, int64_t c, std::string n) : data(d), rows(r), cols(c), name(std::move(n)) {}
  const float* row(int64_t r) const { return data + r * cols; }
};

Matrix transpose(const Matrix& m);
// The first `rows` rows of m (rows <= m.rows).
Matrix first_rows(Matrix m, int64_t rows);

}  // namespace q2
