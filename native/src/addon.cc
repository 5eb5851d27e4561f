// Module entry: exports every function registered with QLORA_EXPORT.
#include "registry.h"

namespace qlora {

std::vector<Registration>& registry() {
  static std::vector<Registration> list;
  return list;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  for (const Registration& r : registry()) {
    exports.Set(r.name, Napi::Function::New(env, r.fn, r.name));
  }
  return exports;
}

}  // namespace qlora

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return qlora::Init(env, exports); }

NODE_API_MODULE(qlora_native, InitModule)
