#include "linear/plan.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "common/error_test_util.h"

namespace q2::linear {
namespace {

using B = BwdQuant;
using F = FwdQuant;
using seeds::LinearStream;

// The recipes of ../shared/spec/quartet2.md section 7 (the paper's comparison schemes as the
// official code implements them), transcribed by hand, plus this project's fp32 (no rounding,
// for gradient checks) and sr (SR everywhere in the backward pass, no rotation).
struct Recipe {
  const char* scheme;
  F x, w;
  Kept saved_x, saved_w;
  bool x_from_input;  // X kept in high precision (nvidia), not the forward X_q
  B dgrad_a, dgrad_b;
  int dgrad_hadamard;
  B wgrad_a, wgrad_b;
  int wgrad_hadamard;
};

const std::vector<Recipe>& paper_recipes() {
  static const std::vector<Recipe> table = {
      {"bf16", F::kBf16, F::kBf16, Kept::kBf16, Kept::kBf16, false, B::kBf16, B::kBf16, 0, B::kBf16, B::kBf16, 0},
      {"fp32", F::kFp32, F::kFp32, Kept::kFp32, Kept::kFp32, false, B::kFp32, B::kFp32, 0, B::kFp32, B::kFp32, 0},
      // Quartet II: 4/6 forward; [RHT-128] MS-EDEN of E and of the saved W_q^T, X_q^T.
      {"quartet2", F::kFourOverSix, F::kFourOverSix, Kept::kNvfp4, Kept::kNvfp4, false, B::kMsEden, B::kMsEden, 128,
       B::kMsEden, B::kMsEden, 128},
      {"quartet2_no46", F::kRtn, F::kRtn, Kept::kNvfp4, Kept::kNvfp4, false, B::kMsEden, B::kMsEden, 128, B::kMsEden,
       B::kMsEden, 128},
      // NVIDIA: RTN X, 16x16 W; X in high precision; SR(E) with W_q transposed as is; [RHT-16 on
      // T] SR(E^T) and RTN(X^T) from the original X.
      {"nvidia", F::kRtn, F::kRtn16x16, Kept::kBf16, Kept::kNvfp4, true, B::kSr, B::kForward, 0, B::kSr, B::kRtn, 16},
      {"sr", F::kBf16, F::kBf16, Kept::kBf16, Kept::kBf16, false, B::kSr, B::kSr, 0, B::kSr, B::kSr, 0},
      // TetraJet-v2: RTN forward; [RHT-32] SR of E and of the saved W_q^T, X_q^T.
      {"tetrajet2", F::kRtn, F::kRtn, Kept::kNvfp4, Kept::kNvfp4, false, B::kSr, B::kSr, 32, B::kSr, B::kSr, 32},
  };
  return table;
}

Kept kept_by(F q) { return q == F::kFp32 ? Kept::kFp32 : q == F::kBf16 ? Kept::kBf16 : Kept::kNvfp4; }

// <scheme>_fwd quantizes only the forward pass (the backward multiplies in BF16 what the
// forward kept); <scheme>_bwd only the backward pass.
Recipe variant(Recipe r, const std::string& suffix) {
  if (suffix == "_fwd") {
    r.saved_x = kept_by(r.x);
    r.x_from_input = false;
    r.dgrad_a = r.dgrad_b = r.wgrad_a = r.wgrad_b = B::kBf16;
    r.dgrad_hadamard = r.wgrad_hadamard = 0;
  } else {
    r.x = r.w = F::kBf16;
    r.saved_w = Kept::kBf16;
    r.saved_x = Kept::kBf16;
  }
  return r;
}

bool quantized(B q) { return q != B::kBf16 && q != B::kFp32; }

void expect_operand(const BackwardOperand& o, OperandId id, B quant, int hadamard, Source source, bool transposed,
                    LinearStream rounding, const std::string& what) {
  EXPECT_EQ(o.id, id) << what;
  EXPECT_EQ(o.quant, quant) << what << ": " << to_string(o.quant) << " instead of " << to_string(quant);
  EXPECT_EQ(o.hadamard, hadamard) << what;
  EXPECT_EQ(o.source, source) << what;
  EXPECT_EQ(o.transposed, transposed) << what;
  EXPECT_EQ(o.rounding, rounding) << what;
}

void expect_plan(const Plan& p, const Recipe& r, const std::string& name) {
  SCOPED_TRACE(name);
  EXPECT_EQ(p.scheme, name);
  EXPECT_EQ(p.x, r.x);
  EXPECT_EQ(p.w, r.w);
  EXPECT_EQ(p.saved_x, r.saved_x);
  EXPECT_EQ(p.saved_w, r.saved_w);
  EXPECT_EQ(p.saved_x_from_input, r.x_from_input);
  EXPECT_EQ(p.exact_dy, r.dgrad_a == B::kFp32);
  // The layer's algebra fixes each operand's source, orientation and seed stream; the scheme
  // picks its quantizer and rotation.
  expect_operand(p.dgrad.a, OperandId::kDgradA, r.dgrad_a, r.dgrad_hadamard, Source::kDy, false,
                 LinearStream::kDgradA, "dgrad A");
  expect_operand(p.dgrad.b, OperandId::kDgradB, r.dgrad_b, r.dgrad_hadamard, Source::kSavedW, true,
                 LinearStream::kDgradB, "dgrad B");
  expect_operand(p.wgrad.a, OperandId::kWgradA, r.wgrad_a, r.wgrad_hadamard, Source::kDy, true,
                 LinearStream::kWgradA, "wgrad A");
  expect_operand(p.wgrad.b, OperandId::kWgradB, r.wgrad_b, r.wgrad_hadamard, Source::kSavedX, true,
                 LinearStream::kWgradB, "wgrad B");
  // A product quantized along its inner dimension needs whole rotation chunks, or whole 1x16
  // blocks; token rows are padded for wgrad whenever anything is quantized.
  auto inner = [](B a, B b, int h) -> int64_t { return h ? h : (quantized(a) || quantized(b) ? 16 : 1); };
  EXPECT_EQ(p.dgrad.inner_multiple, inner(r.dgrad_a, r.dgrad_b, r.dgrad_hadamard));
  EXPECT_EQ(p.wgrad.inner_multiple, inner(r.wgrad_a, r.wgrad_b, r.wgrad_hadamard));
  const bool any = kept_by(r.x) == Kept::kNvfp4 || kept_by(r.w) == Kept::kNvfp4 || quantized(r.dgrad_a) ||
                   quantized(r.dgrad_b) || quantized(r.wgrad_a) || quantized(r.wgrad_b);
  EXPECT_EQ(p.row_multiple, any ? (r.wgrad_hadamard ? r.wgrad_hadamard : 16) : 1);
}

TEST(Plan, EverySchemeMatchesThePapersRecipe) {
  std::set<std::string> covered;
  for (const Recipe& r : paper_recipes()) {
    expect_plan(make_plan(scheme_by_name(r.scheme)), r, r.scheme);
    covered.insert(r.scheme);
    for (const char* suffix : {"_fwd", "_bwd"}) {
      const std::string name = std::string(r.scheme) + suffix;
      if (r.x == F::kBf16 && r.dgrad_a == B::kBf16) continue;  // bf16 has no variants
      if (r.x == F::kFp32) continue;                            // nor has fp32
      expect_plan(make_plan(scheme_by_name(name)), variant(r, suffix), name);
      covered.insert(name);
    }
  }
  for (const std::string& name : scheme_names()) EXPECT_TRUE(covered.count(name)) << name << " has no recipe here";
  EXPECT_EQ(covered.size(), scheme_names().size());
}

TEST(Plan, AHadamardOverrideResizesEveryRotationAndOnlyThose) {
  const Plan q = make_plan(scheme_by_name("quartet2", 32));
  for (const BackwardOperand* o : {&q.dgrad.a, &q.dgrad.b, &q.wgrad.a, &q.wgrad.b}) EXPECT_EQ(o->hadamard, 32);
  EXPECT_EQ(q.row_multiple, 32);
  const Plan n = make_plan(scheme_by_name("nvidia", 128));
  EXPECT_EQ(n.dgrad.a.hadamard, 0);  // dgrad stays unrotated: its W_q is reused
  EXPECT_EQ(n.wgrad.a.hadamard, 128);
  EXPECT_EQ(n.row_multiple, 128);
}

TEST(Plan, AnEdenFallbackReachesEveryMsEdenOperandAndOnlyThose) {
  for (const char* name : {"quartet2", "quartet2_no46", "quartet2_bwd"}) {
    const Plan q = make_plan(scheme_by_name(name, 0, 0.9));
    for (const BackwardOperand* o : {&q.dgrad.a, &q.dgrad.b, &q.wgrad.a, &q.wgrad.b}) EXPECT_EQ(o->eden_fallback, 0.9);
  }
  const Plan off = make_plan(scheme_by_name("quartet2"));
  for (const BackwardOperand* o : {&off.dgrad.a, &off.dgrad.b, &off.wgrad.a, &off.wgrad.b}) EXPECT_EQ(o->eden_fallback, 0);
  for (const char* name : {"bf16", "sr", "nvidia", "tetrajet2", "quartet2_fwd"})
    EXPECT_EQ(test::error_of([&] { make_plan(scheme_by_name(name, 0, 0.9)); }),
              std::string("scheme '") + name + "': eden_fallback applies to MS-EDEN operands, and there are none");
  for (double tau : {1.0, -0.5})
    EXPECT_NE(test::error_of([&] { make_plan(scheme_by_name("quartet2", 0, tau)); })
                  .find("scheme 'quartet2': eden_fallback must be 0 (off) or an outlier share in (0, 1)"),
              std::string::npos);
}

// A second rotation reaches the rotated operands of every product that rotates, and only those:
// nvidia's dgrad (SR of dY, the forward W reused) is not rotated, its wgrad is.
TEST(Plan, HadamardRoundsReachRotatedOperandsOnly) {
  const Plan q = make_plan(scheme_by_name("quartet2", 0, 0, 2));
  for (const BackwardOperand* o : {&q.dgrad.a, &q.dgrad.b, &q.wgrad.a, &q.wgrad.b}) EXPECT_EQ(o->hadamard_rounds, 2);
  const Plan n = make_plan(scheme_by_name("nvidia", 0, 0, 2));
  EXPECT_EQ(n.dgrad.a.hadamard_rounds, 1);
  EXPECT_EQ(n.dgrad.b.hadamard_rounds, 1);
  EXPECT_EQ(n.wgrad.a.hadamard_rounds, 2);
  EXPECT_EQ(n.wgrad.b.hadamard_rounds, 2);
  const Plan one = make_plan(scheme_by_name("quartet2"));
  EXPECT_EQ(one.wgrad.b.hadamard_rounds, 1);
  EXPECT_EQ(test::error_of([&] { make_plan(scheme_by_name("bf16", 0, 0, 2)); }),
            "scheme 'bf16': hadamard_rounds = 2 applies to rotated operands, and there are none");
  for (int rounds : {0, 3})
    EXPECT_EQ(test::error_of([&] { make_plan(scheme_by_name("quartet2", 0, 0, rounds)); }),
              "scheme 'quartet2': hadamard_rounds must be 1 or 2, got " + std::to_string(rounds));
}

TEST(Plan, RowPaddingAndShapeErrorsNameTheDimension) {
  const Plan p = make_plan(scheme_by_name("quartet2"));
  EXPECT_EQ(p.padded_rows(100), 128);
  EXPECT_EQ(p.padded_rows(256), 256);
  EXPECT_EQ(make_plan(scheme_by_name("bf16")).padded_rows(100), 100);
  EXPECT_EQ(test::error_of([&] { p.check_backward_shapes("mlp.up", 100, 256); }),
            "layer 'mlp.up' (scheme quartet2): wgrad quantizes along the token dimension, so token = 100 must be a "
            "multiple of 128 (pad the batch with zero rows)");
  EXPECT_EQ(test::error_of([&] { p.check_backward_shapes("mlp.up", 128, 200); }),
            "layer 'mlp.up' (scheme quartet2): dgrad quantizes along the output-feature dimension, so "
            "output-feature = 200 must be a multiple of 128");
  EXPECT_EQ(test::error_of([&] { make_plan(scheme_by_name("bf16")).check_backward_shapes("l", 3, 5); }), "no error");
}

TEST(Plan, InconsistentRecipesAreRefusedNamingTheScheme) {
  Scheme s = scheme_by_name("quartet2");
  s.name = "custom";
  s.wgrad.hadamard = 0;
  EXPECT_EQ(test::error_of([&] { make_plan(s); }), "scheme 'custom': MS-EDEN needs a Hadamard rotation");
  s = scheme_by_name("nvidia");
  s.dgrad.hadamard = 16;
  EXPECT_EQ(test::error_of([&] { make_plan(s); }), "scheme 'nvidia': a reused forward W cannot be rotated");
  s = scheme_by_name("nvidia");
  s.wgrad.b = B::kForward;
  EXPECT_EQ(test::error_of([&] { make_plan(s); }),
            "scheme 'nvidia': only dgrad's W operand can reuse the forward quantization");
}

TEST(Plan, OperandsHaveDistinctRoundingStreamsAndShareTheRotation) {
  const Plan p = make_plan(scheme_by_name("quartet2"));
  std::set<uint64_t> seen;
  for (const BackwardOperand* o : {&p.dgrad.a, &p.dgrad.b, &p.wgrad.a, &p.wgrad.b})
    seen.insert(o->rounding_seed(42));
  seen.insert(seeds::linear_stream(42, LinearStream::kRotation));
  EXPECT_EQ(seen.size(), 5u);
}

}  // namespace
}  // namespace q2::linear
