// trimMemory(): hands free heap memory back to the OS (glibc malloc_trim). Building a model frees
// many mid-sized JS arrays between long-lived native tensors; the holes they leave stay resident
// (hundreds of MB on a 7B model) unless trimmed once before training starts.
#include <cstdlib>  // defines __GLIBC__ on glibc systems
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "args.h"
#include "registry.h"

namespace qlora {
namespace {

Napi::Value TrimMemory(const Napi::CallbackInfo& info) {
#if defined(__GLIBC__)
  return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

}  // namespace

QLORA_EXPORT("trimMemory", TrimMemory);

}  // namespace qlora
