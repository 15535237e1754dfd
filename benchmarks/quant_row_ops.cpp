// Microbenchmark (issue 26): the engine's row operations on each block format, one thread,
// bytes of blocks per second, on 64 matrices of the shipped model's gate shape (past the
// caches): the row dot with x rounded to 8 bits (the file's layout: dense, the gate and up
// reads of the h and gate sites), and acc += c * row one row and four rows a pass (the
// transposed layout the sites skip rows of). Build and run from the repository root:
//   g++ -O3 -march=native -I inference/csrc -o /tmp/quant_row_ops benchmarks/quant_row_ops.cpp
//   /tmp/quant_row_ops
// Results: docs/benchmarks.md.
#include <time.h>

#include <cstdio>
#include <random>
#include <vector>

#include "quant_formats.h"
using namespace quant;

// The thread's CPU time, not the wall clock: on a shared machine the process is descheduled for
// most of a run (at a load of 15 on 2 cores, 6 % of the wall time was its own).
double cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

template <class Body>
double best_seconds(Body body) {
  double best = 1e9;
  for (int rep = 0; rep < 7; ++rep) {
    const double start = cpu_seconds();
    body();
    best = std::min(best, cpu_seconds() - start);
  }
  return best;
}

template <class B>
void run(const char* name) {
  const int64_t rows = 1536, cols = 576, nb = cols / kBlock, mats = 64;
  const int64_t row_bytes = nb * static_cast<int64_t>(sizeof(B));
  std::vector<uint8_t> w(mats * rows * row_bytes);
  std::mt19937 rng(1);
  for (auto& byte : w) byte = static_cast<uint8_t>(rng());
  for (int64_t i = 0; i < mats * rows * nb; ++i) {  // scales (and Q4_1's m) small, normal halves
    const uint16_t h = static_cast<uint16_t>(0x2000 + (rng() & 0xff));
    std::memcpy(&w[i * sizeof(B)], &h, 2);
    if (std::is_same_v<B, BlockQ4_1>) std::memcpy(&w[i * sizeof(B) + 2], &h, 2);
  }
  std::vector<float> x(cols), c(rows), out(rows), acc(cols);
  for (auto& v : x) v = static_cast<float>(rng()) / static_cast<float>(rng.max()) - 0.5f;
  for (auto& v : c) v = static_cast<float>(rng()) / static_cast<float>(rng.max()) - 0.5f;
  std::vector<BlockQ8x> xq(nb);
  const RowOps ops = row_ops(std::is_same_v<B, BlockQ4_0> ? kQ4_0
                             : std::is_same_v<B, BlockQ4_1> ? kQ4_1 : kQ8_0);
  auto row = [&](int64_t m, int64_t r) { return &w[(m * rows + r) * row_bytes]; };
  const double dot = best_seconds([&] {
    for (int64_t m = 0; m < mats; ++m) {
      ops.quantize_x(x.data(), xq.data(), nb);
      for (int64_t r = 0; r < rows; ++r) out[r] = ops.dot(row(m, r), xq.data(), nb);
    }
  });
  const double axpy = best_seconds([&] {
    for (int64_t m = 0; m < mats; ++m) {
      for (int64_t r = 0; r < rows; ++r) ops.axpy(c[r], row(m, r), acc.data(), nb);
    }
  });
  const double axpy4 = best_seconds([&] {
    for (int64_t m = 0; m < mats; ++m) {
      for (int64_t r = 0; r < rows; r += 4) {
        const uint8_t* four[4] = {row(m, r), row(m, r + 1), row(m, r + 2), row(m, r + 3)};
        ops.axpy4(&c[r], four, acc.data(), nb);
      }
    }
  });
  const double gb = static_cast<double>(w.size()) / 1e9;
  std::printf("%s (%s): row dot %.1f GB/s, axpy %.1f GB/s, axpy 4 rows a pass %.1f GB/s (%g %g)\n",
              name, isa_name(current_isa()).c_str(), gb / dot, gb / axpy, gb / axpy4, out[3],
              acc[5]);
}

int main() {
  run<BlockQ4_0>("Q4_0");
  run<BlockQ4_1>("Q4_1");
  run<BlockQ8_0>("Q8_0");
}
