// What differs between the LibTorch lines lowbit builds with: Debian's 1.13
// and PyPI's 2.x wheels (docs/versions.md). Every difference the code meets
// is named here once, so no other file tests a version.
//
//   kTorchMajor / kTorchMinor   the LibTorch the library was compiled with
//   TorchLine()                 the same as "1.13", "2.11" (checkpoints
//                               record it: torch::optim's archives differ)
//   HoldsAlternative<T>(v)      torch::nn options' variants (padding_mode,
//   GetIf<T>(&v)                padding): c10::variant in 1.x, std::variant
//                               in 2.x, where c10's functions are gone
//   C10dWorkPtr<PG>             c10d's work handle: ProcessGroup::Work in
//                               1.x, c10d::Work in 2.x (whatever PG's
//                               barrier() returns)
//   LOWBIT_COMPAT_INIT_VIRTUAL_MODULE(source)
//                               the mem-initializer a class derived from a
//                               LibTorch module (torch::nn::LinearImpl) needs
//                               to copy `source`'s Module part: in 1.x
//                               Cloneable derives virtually from Module, so
//                               the most derived class initializes it; in 2.x
//                               plainly, and the module's copy does it
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/version.h>

#include <string>
#include <type_traits>
#include <utility>
#include <variant>

// By version, not __has_include: a machine with Debian's libtorch-dev has its
// 1.13 headers in /usr/include, in view of a build against a 2.x wheel too.
// c10::variant became std::variant in 2.1.
#if TORCH_VERSION_MAJOR < 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 0)
#include <c10/util/variant.h>
#define LOWBIT_TORCH_C10_VARIANT 1
#else
#define LOWBIT_TORCH_C10_VARIANT 0
#endif

#if TORCH_VERSION_MAJOR < 2
#define LOWBIT_TORCH_VIRTUAL_MODULE_BASE 1
#define LOWBIT_COMPAT_INIT_VIRTUAL_MODULE(source) torch::nn::Module(source),
#else
#define LOWBIT_TORCH_VIRTUAL_MODULE_BASE 0
#define LOWBIT_COMPAT_INIT_VIRTUAL_MODULE(source)
#endif

namespace lowbit::base::compat {

inline constexpr int kTorchMajor = TORCH_VERSION_MAJOR;
inline constexpr int kTorchMinor = TORCH_VERSION_MINOR;
inline std::string TorchLine() { return std::to_string(kTorchMajor) + "." + std::to_string(kTorchMinor); }

template <typename T, typename Variant>
bool HoldsAlternative(const Variant& v) {
#if LOWBIT_TORCH_C10_VARIANT
  return c10::holds_alternative<T>(v);
#else
  return std::holds_alternative<T>(v);
#endif
}

template <typename T, typename Variant>
const T* GetIf(const Variant* v) {
#if LOWBIT_TORCH_C10_VARIANT
  return c10::get_if<T>(v);
#else
  return std::get_if<T>(v);
#endif
}

namespace internal {
// Whether Base is a virtual base of Derived: a static_cast down from a
// virtual base is ill-formed.
template <typename Base, typename Derived, typename = void>
struct IsVirtualBase : std::is_base_of<Base, Derived> {};
template <typename Base, typename Derived>
struct IsVirtualBase<Base, Derived, std::void_t<decltype(static_cast<Derived*>(std::declval<Base*>()))>>
    : std::false_type {};
struct ProbeModule : torch::nn::Cloneable<ProbeModule> {
  void reset() override {}
};
}  // namespace internal
// The version test above, checked against the headers themselves.
static_assert(internal::IsVirtualBase<torch::nn::Module, internal::ProbeModule>::value ==
                  static_cast<bool>(LOWBIT_TORCH_VIRTUAL_MODULE_BASE),
              "LOWBIT_TORCH_VIRTUAL_MODULE_BASE does not match this LibTorch's torch::nn::Cloneable");

template <typename ProcessGroup>
using C10dWorkPtr = decltype(std::declval<ProcessGroup&>().barrier());

}  // namespace lowbit::base::compat
