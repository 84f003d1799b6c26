#include "linear/scheme.h"

#include <optional>

#include "common/error.h"
#include "quant/hadamard.h"

namespace q2::linear {

namespace {

using B = BwdQuant;
using F = FwdQuant;

std::optional<Scheme> base_scheme(const std::string& name) {
  Scheme s;
  s.name = name;
  if (name == "bf16") return s;
  if (name == "fp32") {
    s.x = s.w = F::kFp32;
    s.dgrad = s.wgrad = {B::kFp32, B::kFp32, 0};
    return s;
  }
  if (name == "quartet2" || name == "quartet2_no46") {
    s.x = s.w = name == "quartet2" ? F::kFourOverSix : F::kRtn;
    s.dgrad = {B::kMsEden, B::kMsEden, 128};
    s.wgrad = {B::kMsEden, B::kMsEden, 128};
    return s;
  }
  if (name == "nvidia") {
    s.x = F::kRtn;
    s.w = F::kRtn16x16;
    s.save_x_high_precision = true;
    s.dgrad = {B::kSr, B::kForward, 0};
    s.wgrad = {B::kSr, B::kRtn, 16};
    return s;
  }
  if (name == "sr") {
    s.dgrad = {B::kSr, B::kSr, 0};
    s.wgrad = {B::kSr, B::kSr, 0};
    return s;
  }
  if (name == "tetrajet2") {
    s.x = s.w = F::kRtn;
    s.dgrad = {B::kSr, B::kSr, 32};
    s.wgrad = {B::kSr, B::kSr, 32};
    return s;
  }
  return std::nullopt;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::vector<std::string> scheme_names() {
  std::vector<std::string> names;
  for (const char* b : {"fp32", "bf16", "quartet2", "quartet2_no46", "nvidia", "sr", "tetrajet2"}) names.push_back(b);
  for (const char* b : {"quartet2", "quartet2_no46", "nvidia", "sr", "tetrajet2"}) {
    names.push_back(std::string(b) + "_fwd");
    names.push_back(std::string(b) + "_bwd");
  }
  return names;
}

Scheme scheme_by_name(const std::string& name, int hadamard, double eden_fallback, int hadamard_rounds) {
  const bool fwd_only = ends_with(name, "_fwd"), bwd_only = ends_with(name, "_bwd");
  const std::string base = fwd_only || bwd_only ? name.substr(0, name.size() - 4) : name;
  std::optional<Scheme> found = base_scheme(base);
  if (!found) {
    std::string known;
    for (const auto& n : scheme_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("unknown scheme '" + name + "' (known: " + known + ")");
  }
  Scheme s = *found;
  s.name = name;
  if (fwd_only) {
    s.dgrad = s.wgrad = ProductRecipe{};
    s.save_x_high_precision = false;
  }
  if (bwd_only) {
    s.x = s.w = F::kBf16;
  }
  if (!valid_hadamard(hadamard))
    throw Error("--hadamard " + std::to_string(hadamard) + " is not supported (use 0 for the scheme's own, or " +
                quant::kRhtSizes + ")");
  if (hadamard > 0)
    for (ProductRecipe* p : {&s.dgrad, &s.wgrad})
      if (p->hadamard > 0) p->hadamard = hadamard;
  s.eden_fallback = eden_fallback;  // make_plan validates it and the rounds
  s.hadamard_rounds = hadamard_rounds;
  return s;
}

bool valid_hadamard(int hadamard) { return hadamard == 0 || quant::valid_rht_size(hadamard); }

const char* to_string(FwdQuant q) {
  switch (q) {
    case F::kFp32: return "fp32";
    case F::kBf16: return "bf16";
    case F::kRtn: return "rtn";
    case F::kFourOverSix: return "four_over_six";
    case F::kRtn16x16: return "rtn_16x16";
  }
  return "?";
}

const char* to_string(BwdQuant q) {
  switch (q) {
    case B::kFp32: return "fp32";
    case B::kBf16: return "bf16";
    case B::kSr: return "sr";
    case B::kMsEden: return "ms_eden";
    case B::kRtn: return "rtn";
    case B::kForward: return "forward_reuse";
  }
  return "?";
}

}  // namespace q2::linear
