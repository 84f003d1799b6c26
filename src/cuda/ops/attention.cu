// Causal attention, FlashAttention-2 style: BF16 tensor cores (mma.sync m16n8k16, float32
// accumulation, available on sm_80 and later), tiles staged in shared memory by cp.async with
// double buffering, ldmatrix reads from an XOR-swizzled layout (rows of head_dim BF16, 16-byte
// chunk c of row r stored at chunk c ^ (r & 7): conflict-free ldmatrix), 4 warps per block,
// each owning 16 or 32 rows, online softmax in the exp2 domain.
//
// Forward: a block per (query tile, batch*head), heaviest tiles first; saves the natural
// log-sum-exp per query row. Backward, deterministic (no atomics): D = rowsum(dO * O); a dK/dV
// kernel per key tile walks the query tiles (keys are the warp rows, so the scores are computed
// transposed), and a dQ kernel per query tile walks the key tiles; each recomputes
// P = exp(S * scale - lse). That is 7 tile products instead of the 5 of an atomic-add dQ.
//
// Grouped-query attention: the forward and dQ blocks of query head h read key/value head
// h / group (addressing only). A dK/dV block belongs to a key/value head and walks the query
// tiles of each of its group's query heads in turn, accumulating dK and dV in registers: the
// sum over the group in a fixed order, no atomics, deterministic.
// Sliding window: query i sees keys i - window .. i; blocks walk only the tiles that meet the
// band, warps skip the tiles outside it, and tiles crossing either edge of the band are masked
// element by element (a window of at least seq - 1 is the full causal attention).
// Both live in the kernels' kGeneral instantiation (runtime group and window; window = seq when
// there is none); multi-head full causal attention runs kGeneral = false, the kernels as they
// were before either existed (group 1 and no window at compile time: the same code).
#include <cmath>

#include "cuda/ops/common.cuh"

namespace q2::cuda::ops {
namespace {

constexpr int kWarps = 4, kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

// ---- PTX wrappers ----

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, zero-filled when !valid (src must still be a valid address).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a * b for a 16x16 (row) by 16x8 (col) BF16 product, float32 accumulators.
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x; subnormal results flush to zero (they are probabilities far below BF16's resolution).
__device__ __forceinline__ float exp2_fast(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Two accumulator tiles (16 x 8 each, columns 16kk..16kk+15) as the A operand of the next
// product: the accumulator layout of an m16n8 pair is the A layout of one m16k16.
__device__ __forceinline__ void to_a(const float (&lo)[4], const float (&hi)[4], uint32_t (&a)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

// The (batch, head) slice bh = batch * heads + head: offsets of its first element in the packed
// QKV [batch * seq, d + 2 kvd] (and dQKV): q at qkv, k of its key/value head (head / group) at k,
// v at k + kvd; and in [batch * seq, d] tensors (out, dO) at rows. Without kGeneral (group 1)
// the arithmetic of the kernels before grouped-query attention, which ptxas allocates best.
template <int HD, bool kGeneral>
struct Head {
  int bh, d, kvd;
  int64_t ld, qkv, k, rows;
  __device__ Head(int bh_, int seq, int heads, int group)
      : bh(bh_), d(heads * HD), kvd(heads / group * HD),
        ld(kGeneral ? static_cast<int64_t>(heads + 2 * (heads / group)) * HD : 3LL * heads * HD),
        qkv(static_cast<int64_t>(bh / heads) * seq * ld + (bh % heads) * HD),
        k(static_cast<int64_t>(bh / heads) * seq * ld + d + (bh % heads) / group * HD),
        rows(static_cast<int64_t>(bh / heads) * seq * d + (bh % heads) * HD) {}
};

// ---- swizzled tiles ----

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile of HD-column rows.
template <int HD>
__device__ __forceinline__ uint32_t swz(int row, int chunk) {
  return static_cast<uint32_t>(row * HD * 2 + ((chunk ^ (row & 7)) << 4));
}

// Rows [row0, row0 + R) of a head slice (row stride ld) into a swizzled tile; rows >= nvalid
// are zero-filled, so padded keys and queries give finite scores.
template <int R, int HD>
__device__ __forceinline__ void load_tile(uint32_t tile, const bf16* g, int64_t ld, int row0, int nvalid) {
  constexpr int kChunks = HD / 8;
  for (int idx = threadIdx.x; idx < R * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = idx % kChunks;
    const bool valid = row0 + r < nvalid;
    cp_async16(tile + swz<HD>(r, c), valid ? g + static_cast<int64_t>(row0 + r) * ld + c * 8 : g, valid);
  }
}

// The K and V tiles of keys [row0, row0 + BN) into buffer `stage` of the double-buffered sK, sV.
template <int BN, int HD>
__device__ __forceinline__ void load_kv(uint32_t sK, uint32_t sV, const bf16* k, const bf16* v, int64_t ld, int stage,
                                        int row0, int seq) {
  constexpr uint32_t kTile = BN * HD * 2;
  load_tile<BN, HD>(sK + stage * kTile, k, ld, row0, seq);
  load_tile<BN, HD>(sV + stage * kTile, v, ld, row0, seq);
}

// n values of a [bh, seq] float row into shared memory (zeros past seq).
__device__ __forceinline__ void load_row(uint32_t dst, const float* src, int i0, int n, int seq) {
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const bool valid = i0 + i < seq;
    cp_async4(dst + 4 * i, valid ? src + i0 + i : src, valid);
  }
}

// Double buffering: issues the next stage's copies (when there is one) behind the current
// stage's, then waits until the current stage has landed for every thread of the block.
template <class IssueNext>
__device__ __forceinline__ void next_stage(bool has_next, IssueNext&& issue_next) {
  if (has_next) {
    issue_next();
    cp_async_commit();
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();
}

// A fragments of the warp's 16 rows [row0, row0 + 16) x columns [16ks, 16ks + 16).
template <int HD>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], uint32_t tile, int row0, int ks) {
  const int lane = threadIdx.x & 31;
  ldsm_x4(a, tile + swz<HD>(row0 + (lane & 15), 2 * ks + (lane >> 4)));
}
// B fragments for n-tiles (2np, 2np + 1) over k-step ks when the tile's rows are the n index
// (B[k][n] = tile[n][k]: scores against K, or dP against V).
template <int HD>
__device__ __forceinline__ void load_b_rows(uint32_t (&b)[4], uint32_t tile, int np, int ks) {
  const int lane = threadIdx.x & 31;
  ldsm_x4(b, tile + swz<HD>(16 * np + (lane & 7) + ((lane >> 4) << 3), 2 * ks + ((lane >> 3) & 1)));
}
// B fragments for n-tiles (2np, 2np + 1) over k-step kk when the tile's rows are the k index
// (B[k][n] = tile[k][n]: P V and the like), via the transposing ldmatrix.
template <int HD>
__device__ __forceinline__ void load_b_cols(uint32_t (&b)[4], uint32_t tile, int kk, int np) {
  const int lane = threadIdx.x & 31;
  ldsm_x4_trans(b, tile + swz<HD>(16 * kk + (lane & 7) + (((lane >> 3) & 1) << 3), 2 * np + (lane >> 4)));
}

// d[2 np] and d[2 np + 1] += a times the two n-tiles that one ldmatrix.x4 put in b.
template <int NT>
__device__ __forceinline__ void mma_pair(float (&d)[NT][4], int np, const uint32_t (&a)[4], const uint32_t (&b)[4]) {
  mma(d[2 * np], a, b[0], b[1]);
  mma(d[2 * np + 1], a, b[2], b[3]);
}

// acc[mt][n] += A_mt B for the MT m16 row blocks A_mt = atile rows [arow0 + 16 mt, +16) (all
// HD columns, as the k index) and B[k][n] = btile[n][k] (btile rows are the n index).
template <int HD, int MT, int NT>
__device__ __forceinline__ void mma_rows(float (&acc)[MT][NT][4], uint32_t atile, int arow0, uint32_t btile) {
#pragma unroll
  for (int ks = 0; ks < HD / 16; ++ks) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) load_a<HD>(a[mt], atile, arow0 + 16 * mt, ks);
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t b[4];
      load_b_rows<HD>(b, btile, np, ks);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) mma_pair(acc[mt], np, a[mt], b);
    }
  }
}

// acc[mt] (16 x HD) += P_mt (16 x 16 KT, accumulator layout) * btile (rows are the k index).
template <int HD, int MT, int KT>
__device__ __forceinline__ void mma_cols(float (&acc)[MT][HD / 8][4], const float (&p)[MT][2 * KT][4], uint32_t btile) {
#pragma unroll
  for (int kk = 0; kk < KT; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) to_a(p[mt][2 * kk], p[mt][2 * kk + 1], a[mt]);
#pragma unroll
    for (int np = 0; np < HD / 16; ++np) {
      uint32_t b[4];
      load_b_cols<HD>(b, btile, kk, np);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) mma_pair(acc[mt], np, a[mt], b);
    }
  }
}

// The warp's accumulator rows [row0, row0 + 16 MT) of one head (row stride ld) as BF16, rows
// < nvalid, row (mt, r) times s[mt][r].
template <int HD, int MT>
__device__ __forceinline__ void store_rows(const float (&acc)[MT][HD / 8][4], bf16* g, int64_t ld, int row0, int nvalid,
                                           const float (&s)[MT][2]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + 16 * mt + (lane >> 2) + 8 * r;
      if (row >= nvalid) continue;
      bf16* dst = g + static_cast<int64_t>(row) * ld + 2 * (lane & 3);
#pragma unroll
      for (int nt = 0; nt < HD / 8; ++nt)
        *reinterpret_cast<uint32_t*>(dst + 8 * nt) =
            pack_bf16(acc[mt][nt][2 * r] * s[mt][r], acc[mt][nt][2 * r + 1] * s[mt][r]);
    }
}

template <int MT>
struct Uniform {  // s[mt][r] = v
  float s[MT][2];
  explicit __device__ Uniform(float v) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) s[mt][0] = s[mt][1] = v;
  }
};

// Each warp owns MT m16 row blocks (16 MT rows): MT = 2 halves the shared-memory reads of the
// B operands per product and the K/V tile loads per query, at the price of registers. Measured
// on an H100 at seq 1024 (2026-11-23): forward MT 2 is 5% faster at head_dim 64, equal at 128;
// dQ MT 2 is 2% faster at 128, 2% slower at 64; dK/dV MT 2 (64 only: 128 does not fit the
// registers) 10% slower. All variants stay latency-bound at 2 warps per scheduler.
template <int HD>
struct Fwd {
  static constexpr int MT = 2, BM = 16 * MT * kWarps, BN = 64;
  static constexpr size_t kSmem = static_cast<size_t>(BM + 4 * BN) * HD * 2;  // Q, K[2], V[2]
};

template <int HD, bool kGeneral>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(const bf16* __restrict__ qkv, bf16* __restrict__ out, float* __restrict__ lse, int seq,
                             int heads, int group, int window, float scale_log2) {
  constexpr int MT = Fwd<HD>::MT, BM = Fwd<HD>::BM, BN = Fwd<HD>::BN, NS = BN / 8, NO = HD / 8, WR = 16 * MT;
  constexpr uint32_t kTile = BN * HD * 2;
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sQ = smem_addr(smem), sK = sQ + BM * HD * 2, sV = sK + 2 * kTile;

  const int q0 = (gridDim.x - 1 - blockIdx.x) * BM;  // the longest rows first
  const Head<HD, kGeneral> hd(blockIdx.y, seq, heads, kGeneral ? group : 1);
  const int bh = hd.bh, d = hd.d;
  const int64_t ld = hd.ld;
  const bf16 *q = qkv + hd.qkv, *k = kGeneral ? qkv + hd.k : q + d, *v = kGeneral ? k + hd.kvd : q + 2 * d;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wrow0 = q0 + WR * warp;     // the warp's first query row
  const int row = wrow0 + (lane >> 2);  // this thread's rows: row + 16 mt + 8 r
  const int n_kv = ((q0 + BM < seq ? q0 + BM : seq) + BN - 1) / BN;
  // The first key tile: the one of the block's first row's first key.
  const int j0 = kGeneral ? (q0 > window ? q0 - window : 0) / BN : 0;

  load_tile<BM, HD>(sQ, q, ld, q0, seq);
  load_kv<BN, HD>(sK, sV, k, v, ld, j0 & 1, j0 * BN, seq);
  cp_async_commit();

  float o[MT][NO][4] = {};
  float m[MT][2], l[MT][2];  // running max (scaled, log2 domain) and sum of each row
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;
  for (int j = j0; j < n_kv; ++j) {
    const uint32_t kbuf = sK + (j & 1) * kTile, vbuf = sV + (j & 1) * kTile;
    next_stage(j + 1 < n_kv, [&] { load_kv<BN, HD>(sK, sV, k, v, ld, (j + 1) & 1, (j + 1) * BN, seq); });

    const int kv0 = j * BN;
    // Else every key of the tile is after every row of the warp (or, windowed, before the
    // window of every row).
    if (kv0 <= wrow0 + WR - 1 && (!kGeneral || wrow0 - (kv0 + BN - 1) <= window)) {
      float s[MT][NS][4] = {};
      mma_rows<HD, MT, NS>(s, sQ, WR * warp, kbuf);
      // The diagonal: mask keys after the row; windowed, the band's lower edge: keys before it.
      if (kv0 + BN - 1 > wrow0 || (kGeneral && wrow0 + WR - 1 - kv0 > window))
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < NS; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int key = kv0 + 8 * nt + 2 * (lane & 3) + (e & 1), rr = row + 16 * mt + 8 * (e >> 1);
              if (key > rr || (kGeneral && rr - key > window)) s[mt][nt][e] = -INFINITY;
            }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float mx = m[mt][r];
#pragma unroll
          for (int nt = 0; nt < NS; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]) * scale_log2);
          mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 2));
          // Full causal: key 0 is in the first tile, so every row's max is finite from then on (a
          // row whose keys in this tile are all masked keeps its max: alpha = 1, p = 0).
          // Windowed, a row may have seen no key yet (max -inf): it subtracts 0 instead, which
          // gives alpha = 0 (on zero sums) and p = 0.
          const float base = kGeneral && mx == -INFINITY ? 0.0f : mx;
          const float alpha = exp2_fast(m[mt][r] - base);
          m[mt][r] = mx;
          l[mt][r] *= alpha;
#pragma unroll
          for (int nt = 0; nt < NO; ++nt) o[mt][nt][2 * r] *= alpha, o[mt][nt][2 * r + 1] *= alpha;
#pragma unroll
          for (int nt = 0; nt < NS; ++nt)
#pragma unroll
            for (int e = 2 * r; e < 2 * r + 2; ++e) {
              const float p = exp2_fast(__fmaf_rn(s[mt][nt][e], scale_log2, -base));
              s[mt][nt][e] = p;
              l[mt][r] += p;
            }
        }
      mma_cols<HD, MT, BN / 16>(o, s, vbuf);
    }
    __syncthreads();  // the next iteration's prefetch overwrites this tile
  }

  float inv[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float sum = l[mt][r];
      sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 1);
      sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 2);
      inv[mt][r] = 1.0f / sum;
      const int rr = row + 16 * mt + 8 * r;
      if ((lane & 3) == 0 && rr < seq) lse[static_cast<int64_t>(bh) * seq + rr] = (m[mt][r] + log2f(sum)) * kLn2;
    }
  store_rows<HD, MT>(o, out + hd.rows, d, wrow0, seq, inv);
}

// delta[bh][s] = sum_c dO[t][h, c] * O[t][h, c]: a group of HD/8 lanes per (token, head), 16-byte loads.
template <int HD>
__global__ void attention_delta_kernel(const bf16* __restrict__ dout, const bf16* __restrict__ out,
                                       float* __restrict__ delta, int64_t tokens, int seq, int heads) {
  constexpr int G = HD / 8;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x, w = i / G;
  const int part = static_cast<int>(i % G);
  float acc = 0;
  if (w < tokens * heads) {  // no early return: the whole warp takes part in the shuffles
    float a[8], o[8];
    detail::load<8>(dout + w * HD + 8 * part, a);  // (token, head) w = t * heads + h: row-major [T, d]
    detail::load<8>(out + w * HD + 8 * part, o);
#pragma unroll
    for (int k = 0; k < 8; ++k) acc += a[k] * o[k];
  }
#pragma unroll
  for (int off = G / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(0xFFFFFFFFu, acc, off);
  if (part == 0 && w < tokens * heads) {
    const int64_t t = w / heads;
    const int h = static_cast<int>(w - t * heads);
    delta[((t / seq) * heads + h) * seq + t % seq] = acc;
  }
}

template <int HD>
struct BwdQ {
  static constexpr int MT = HD == 128 ? 2 : 1, BM = 16 * MT * kWarps, BN = HD == 128 ? 32 : 64;  // register budget
  static constexpr size_t kSmem = static_cast<size_t>(2 * BM + 4 * BN) * HD * 2;                 // Q, dO, K[2], V[2]
};

template <int HD, bool kGeneral>
__global__ void __launch_bounds__(kThreads)
    attention_dq_kernel(const bf16* __restrict__ qkv, const bf16* __restrict__ dout, const float* __restrict__ lse,
                        const float* __restrict__ delta, bf16* __restrict__ dqkv, int seq, int heads, int group,
                        int window, float scale, float scale_log2) {
  constexpr int MT = BwdQ<HD>::MT, BM = BwdQ<HD>::BM, BN = BwdQ<HD>::BN, NS = BN / 8, NO = HD / 8, WR = 16 * MT;
  constexpr uint32_t kTile = BN * HD * 2;
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sQ = smem_addr(smem), sdO = sQ + BM * HD * 2, sK = sdO + BM * HD * 2, sV = sK + 2 * kTile;

  const int q0 = (gridDim.x - 1 - blockIdx.x) * BM;
  const Head<HD, kGeneral> hd(blockIdx.y, seq, heads, kGeneral ? group : 1);
  const int bh = hd.bh, d = hd.d;
  const int64_t ld = hd.ld;
  const bf16 *q = qkv + hd.qkv, *k = kGeneral ? qkv + hd.k : q + d, *v = kGeneral ? k + hd.kvd : q + 2 * d;
  const bf16* dO = dout + hd.rows;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wrow0 = q0 + WR * warp, row = wrow0 + (lane >> 2);
  const int n_kv = ((q0 + BM < seq ? q0 + BM : seq) + BN - 1) / BN;
  const int j0 = kGeneral ? (q0 > window ? q0 - window : 0) / BN : 0;  // as in the forward

  float lse2[MT][2], dl[MT][2];  // padded rows: finite values, their results are not stored
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int rr = row + 16 * mt + 8 * r;
      const bool valid = rr < seq;
      lse2[mt][r] = valid ? lse[static_cast<int64_t>(bh) * seq + rr] * kLog2e : 0.0f;
      dl[mt][r] = valid ? delta[static_cast<int64_t>(bh) * seq + rr] : 0.0f;
    }

  load_tile<BM, HD>(sQ, q, ld, q0, seq);
  load_tile<BM, HD>(sdO, dO, d, q0, seq);
  load_kv<BN, HD>(sK, sV, k, v, ld, j0 & 1, j0 * BN, seq);
  cp_async_commit();

  float dq[MT][NO][4] = {};
  for (int j = j0; j < n_kv; ++j) {
    const uint32_t kbuf = sK + (j & 1) * kTile, vbuf = sV + (j & 1) * kTile;
    next_stage(j + 1 < n_kv, [&] { load_kv<BN, HD>(sK, sV, k, v, ld, (j + 1) & 1, (j + 1) * BN, seq); });

    const int kv0 = j * BN;
    if (kv0 <= wrow0 + WR - 1 && (!kGeneral || wrow0 - (kv0 + BN - 1) <= window)) {
      float s[MT][NS][4] = {}, dp[MT][NS][4] = {};
      mma_rows<HD, MT, NS>(s, sQ, WR * warp, kbuf);    // S = Q K^T
      mma_rows<HD, MT, NS>(dp, sdO, WR * warp, vbuf);  // dP = dO V^T
      const bool diagonal = kv0 + BN - 1 > wrow0;
      const bool band_edge = kGeneral && wrow0 + WR - 1 - kv0 > window;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NS; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = e >> 1;
            bool masked;
            if constexpr (kGeneral) {
              const int key = kv0 + 8 * nt + 2 * (lane & 3) + (e & 1), rr = row + 16 * mt + 8 * r;
              masked = (diagonal || band_edge) && (key > rr || rr - key > window);
            } else {
              masked = diagonal && kv0 + 8 * nt + 2 * (lane & 3) + (e & 1) > row + 16 * mt + 8 * r;
            }
            const float p = masked ? 0.0f : exp2_fast(__fmaf_rn(s[mt][nt][e], scale_log2, -lse2[mt][r]));
            s[mt][nt][e] = p * (dp[mt][nt][e] - dl[mt][r]);  // dS / scale
          }
      mma_cols<HD, MT, BN / 16>(dq, s, kbuf);  // dQ += dS K
    }
    __syncthreads();
  }
  store_rows<HD, MT>(dq, dqkv + hd.qkv, ld, wrow0, seq, Uniform<MT>(scale).s);
}

template <int HD>
struct BwdKV {
  static constexpr int MT = 1, BN = 16 * MT * kWarps, BQ = HD == 128 ? 32 : 64;  // register budget
  // K, V, Q[2], dO[2] tiles, then lse[2] and delta[2] rows.
  static constexpr size_t kSmem = static_cast<size_t>(2 * BN + 4 * BQ) * HD * 2 + 4 * BQ * sizeof(float);
};

// A block per (key tile, batch * kv_heads + key/value head): for each query head hh of the
// group in turn, the query tiles that see the block's keys, double-buffered (the pipeline
// restarts at each head: one exposed tile load per head); dK and dV accumulate over all of them
// in registers.
template <int HD, bool kGeneral>
__global__ void __launch_bounds__(kThreads)
    attention_dkv_kernel(const bf16* __restrict__ qkv, const bf16* __restrict__ dout, const float* __restrict__ lse,
                         const float* __restrict__ delta, bf16* __restrict__ dqkv, int seq, int heads, int group,
                         int window, float scale, float scale_log2) {
  constexpr int MT = BwdKV<HD>::MT, BN = BwdKV<HD>::BN, BQ = BwdKV<HD>::BQ, NQ = BQ / 8, NO = HD / 8, WR = 16 * MT;
  constexpr uint32_t kTile = BQ * HD * 2;
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sK = smem_addr(smem), sV = sK + BN * HD * 2, sQ = sV + BN * HD * 2, sdO = sQ + 2 * kTile,
                 sL = sdO + 2 * kTile, sD = sL + 2 * BQ * 4;
  const float* fL = reinterpret_cast<const float*>(smem + (sL - sK));
  const float* fD = reinterpret_cast<const float*>(smem + (sD - sK));

  const int kv0 = blockIdx.x * BN;  // key tile 0 has the most query tiles: launched first
  const int grp = kGeneral ? group : 1, kv_heads = heads / grp;
  // The group's first query head: its slice; head hh of the group is HD columns (q, dO) and seq
  // values (lse, delta) further on.
  const Head<HD, kGeneral> hd(kGeneral ? static_cast<int>(blockIdx.y / kv_heads) * heads +
                                   static_cast<int>(blockIdx.y % kv_heads) * grp
                             : static_cast<int>(blockIdx.y),
                    seq, heads, grp);
  const int bh = hd.bh, d = hd.d;
  const int64_t ld = hd.ld;
  const bf16 *q = qkv + hd.qkv, *k = kGeneral ? qkv + hd.k : q + d, *v = kGeneral ? k + hd.kvd : q + 2 * d;
  const bf16* dO = dout + hd.rows;
  const float *lrow = lse + static_cast<int64_t>(bh) * seq, *drow = delta + static_cast<int64_t>(bh) * seq;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wkey0 = kv0 + WR * warp, key = wkey0 + (lane >> 2);  // this thread's keys: key + 16 mt + 8 r
  const int i0 = kv0 / BQ, n_q = (seq + BQ - 1) / BQ;
  // Past the last query tile that sees the block's last key (windowed).
  const int i1 = kGeneral ? static_cast<int>(min(static_cast<int64_t>(n_q),
                                                  (static_cast<int64_t>(kv0) + BN - 1 + window) / BQ + 1))
                         : n_q;

  // The query-side tiles of (head hh, query tile i) into buffer buf.
  auto load_q = [&](int hh, int i, int buf) {
    const int64_t hq = kGeneral ? hh * HD : 0, hl = kGeneral ? static_cast<int64_t>(hh) * seq : 0;
    load_tile<BQ, HD>(sQ + buf * kTile, q + hq, ld, i * BQ, seq);
    load_tile<BQ, HD>(sdO + buf * kTile, dO + hq, d, i * BQ, seq);
    load_row(sL + buf * BQ * 4, lrow + hl, i * BQ, BQ, seq);
    load_row(sD + buf * BQ * 4, drow + hl, i * BQ, BQ, seq);
  };
  load_tile<BN, HD>(sK, k, ld, kv0, seq);
  load_tile<BN, HD>(sV, v, ld, kv0, seq);
  load_q(0, i0, 0);
  cp_async_commit();

  float dk[MT][NO][4] = {}, dv[MT][NO][4] = {};
  for (int hh = 0; hh < grp; ++hh) {  // the group's query heads in order (one, without kGeneral)
    if (hh > 0) {  // its first tile (the previous head's last stage waited for every copy)
      load_q(hh, i0, 0);
      cp_async_commit();
    }
    for (int i = i0; i < i1; ++i) {
      const int buf = (i - i0) & 1, nbuf = buf ^ 1;
      next_stage(i + 1 < i1, [&] { load_q(hh, i + 1, nbuf); });

      const int qs0 = i * BQ;
      // Else every query of the tile is before every key of the warp (or, windowed, after the
      // window of every key).
      if (qs0 + BQ - 1 >= wkey0 && (!kGeneral || qs0 - (wkey0 + WR - 1) <= window)) {
        const uint32_t qbuf = sQ + buf * kTile, dobuf = sdO + buf * kTile;
        float st[MT][NQ][4] = {}, dpt[MT][NQ][4] = {};
        mma_rows<HD, MT, NQ>(st, sK, WR * warp, qbuf);    // S^T = K Q^T
        mma_rows<HD, MT, NQ>(dpt, sV, WR * warp, dobuf);  // dP^T = V dO^T
        const float *lt = fL + buf * BQ, *dt = fD + buf * BQ;
        const bool edge = kGeneral ? qs0 < wkey0 + WR - 1 || qs0 + BQ > seq || qs0 + BQ - 1 - wkey0 > window
                                   : qs0 < wkey0 + WR - 1 || qs0 + BQ > seq;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < NQ; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int c = 8 * nt + 2 * (lane & 3) + (e & 1), qi = qs0 + c;
              bool masked;
              if constexpr (kGeneral) {
                const int kk = key + 16 * mt + 8 * (e >> 1);
                masked = edge && (qi < kk || qi >= seq || qi - kk > window);
              } else {
                masked = edge && (qi < key + 16 * mt + 8 * (e >> 1) || qi >= seq);
              }
              const float p = masked ? 0.0f : exp2_fast(__fmaf_rn(st[mt][nt][e], scale_log2, -lt[c] * kLog2e));
              st[mt][nt][e] = p;
              dpt[mt][nt][e] = p * (dpt[mt][nt][e] - dt[c]);  // dS^T / scale
            }
        mma_cols<HD, MT, BQ / 16>(dv, st, dobuf);  // dV += P^T dO
        mma_cols<HD, MT, BQ / 16>(dk, dpt, qbuf);  // dK += dS^T Q
      }
      __syncthreads();
    }
  }
  bf16* base = dqkv + hd.qkv;
  store_rows<HD, MT>(dk, kGeneral ? dqkv + hd.k : base + d, ld, wkey0, seq, Uniform<MT>(scale).s);
  store_rows<HD, MT>(dv, kGeneral ? dqkv + hd.k + hd.kvd : base + 2 * d, ld, wkey0, seq, Uniform<MT>(1.0f).s);
}

void check_shape(const AttentionShape& s, const char* op) {
  detail::require(s.head_dim == 64 || s.head_dim == 128, op,
                  "head_dim " + std::to_string(s.head_dim) + " is not supported (64 or 128)");
  detail::require(s.batch > 0 && s.seq > 0 && s.heads > 0, op, "empty shape");
  detail::require(s.kv_heads >= 0 && s.heads % s.kv() == 0, op,
                  "kv_heads " + std::to_string(s.kv_heads) + " must divide heads " + std::to_string(s.heads));
  detail::require(s.batch * s.heads <= 65535, op, "batch * heads must be at most 65535");
  detail::require(s.seq <= (1 << 30), op, "sequence too long");
}

// A window of at least seq - 1 (or none) is the full causal attention.
bool windowed(const AttentionShape& s) { return s.window >= 0 && s.window < s.seq - 1; }
// The kGeneral kernels' window argument: the window, or seq (the same as none).
int kernel_window(const AttentionShape& s) { return static_cast<int>(windowed(s) ? s.window : s.seq); }
// Grouped-query or windowed: the kGeneral kernels.
bool general(const AttentionShape& s) { return s.kv() != s.heads || windowed(s); }

template <class Kernel>
void set_smem(Kernel kernel, size_t bytes) {
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
        "cudaFuncSetAttribute (attention shared memory)");
}

template <int HD, bool kGeneral>
void forward(const bf16* qkv, const AttentionShape& s, bf16* out, float* lse) {
  constexpr size_t smem = Fwd<HD>::kSmem;
  static const bool configured = (set_smem(attention_forward_kernel<HD, kGeneral>, smem), true);
  (void)configured;
  const dim3 grid(static_cast<unsigned>((s.seq + Fwd<HD>::BM - 1) / Fwd<HD>::BM),
                  static_cast<unsigned>(s.batch * s.heads));
  const float scale = 1.0f / std::sqrt(static_cast<float>(HD));
  attention_forward_kernel<HD, kGeneral><<<grid, kThreads, smem>>>(
      qkv, out, lse, static_cast<int>(s.seq), static_cast<int>(s.heads), static_cast<int>(s.heads / s.kv()),
      kernel_window(s), scale * kLog2e);
  check_launch("attention_forward_kernel");
}

// A non-blocking helper stream and fork/join events: the dQ and dK/dV kernels are independent
// (disjoint outputs), and running them side by side fills the SMs their tails leave idle.
struct Fork {
  cudaStream_t stream;
  cudaEvent_t fork, join;
  Fork() {
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    check(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    check(cudaEventCreateWithFlags(&join, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  }
};

template <int HD, bool kGeneral>
void backward(const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, const AttentionShape& s,
              bf16* dqkv) {
  static const bool configured = (set_smem(attention_dq_kernel<HD, kGeneral>, BwdQ<HD>::kSmem),
                                  set_smem(attention_dkv_kernel<HD, kGeneral>, BwdKV<HD>::kSmem), true);
  (void)configured;
  static Fork fork;
  const int64_t tokens = s.batch * s.seq, bh = s.batch * s.heads;
  const int seq = static_cast<int>(s.seq), heads = static_cast<int>(s.heads), group = static_cast<int>(s.heads / s.kv());
  const int window = kernel_window(s);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HD)), scale_log2 = scale * kLog2e;

  detail::Scratch<float> delta(bh * s.seq);  // freed on stream 0 after the join
  const int64_t threads = tokens * s.heads * (HD / 8);
  attention_delta_kernel<HD>
      <<<static_cast<unsigned>((threads + 255) / 256), 256>>>(dout, out, delta.get(), tokens, seq, heads);
  check_launch("attention_delta_kernel");

  check(cudaEventRecord(fork.fork, 0), "cudaEventRecord");
  check(cudaStreamWaitEvent(fork.stream, fork.fork, 0), "cudaStreamWaitEvent");
  const dim3 grid_q(static_cast<unsigned>((s.seq + BwdQ<HD>::BM - 1) / BwdQ<HD>::BM), static_cast<unsigned>(bh));
  attention_dq_kernel<HD, kGeneral><<<grid_q, kThreads, BwdQ<HD>::kSmem, fork.stream>>>(
      qkv, dout, lse, delta.get(), dqkv, seq, heads, group, window, scale, scale_log2);
  check_launch("attention_dq_kernel");
  check(cudaEventRecord(fork.join, fork.stream), "cudaEventRecord");

  // One block per key tile and key/value head.
  const dim3 grid_kv(static_cast<unsigned>((s.seq + BwdKV<HD>::BN - 1) / BwdKV<HD>::BN),
                     static_cast<unsigned>(s.batch * s.kv()));
  attention_dkv_kernel<HD, kGeneral><<<grid_kv, kThreads, BwdKV<HD>::kSmem>>>(qkv, dout, lse, delta.get(), dqkv, seq,
                                                                             heads, group, window, scale, scale_log2);
  check_launch("attention_dkv_kernel");
  check(cudaStreamWaitEvent(0, fork.join, 0), "cudaStreamWaitEvent");
}

}  // namespace

void attention_forward(const bf16* qkv, const AttentionShape& s, bf16* out, float* lse) {
  check_shape(s, "attention_forward");
  detail::require_aligned(qkv, "attention_forward", "qkv");
  detail::require_aligned(out, "attention_forward", "out");
  const bool w = general(s);
  if (s.head_dim == 64)
    w ? forward<64, true>(qkv, s, out, lse) : forward<64, false>(qkv, s, out, lse);
  else
    w ? forward<128, true>(qkv, s, out, lse) : forward<128, false>(qkv, s, out, lse);
}

void attention_backward(const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, const AttentionShape& s,
                        bf16* dqkv) {
  check_shape(s, "attention_backward");
  detail::require_aligned(dout, "attention_backward", "dout");
  detail::require_aligned(qkv, "attention_backward", "qkv");
  detail::require_aligned(out, "attention_backward", "out");
  detail::require_aligned(dqkv, "attention_backward", "dqkv");
  const bool w = general(s);
  if (s.head_dim == 64)
    w ? backward<64, true>(dout, qkv, out, lse, s, dqkv) : backward<64, false>(dout, qkv, out, lse, s, dqkv);
  else
    w ? backward<128, true>(dout, qkv, out, lse, s, dqkv) : backward<128, false>(dout, qkv, out, lse, s, dqkv);
}

}  // namespace q2::cuda::ops
