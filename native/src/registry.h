// Each kernel file registers its JS-visible functions here with QLORA_EXPORT, so adding a kernel
// never means editing a central list (and parallel work on different kernel files never conflicts).
#pragma once
#include <napi.h>
#include <vector>

namespace qlora {

using ExportFn = Napi::Value (*)(const Napi::CallbackInfo&);

struct Registration {
  const char* name;
  ExportFn fn;
};

std::vector<Registration>& registry();

struct Registrar {
  Registrar(const char* name, ExportFn fn) { registry().push_back({name, fn}); }
};

}  // namespace qlora

#define QLORA_CONCAT_INNER(a, b) a##b
#define QLORA_CONCAT(a, b) QLORA_CONCAT_INNER(a, b)
#define QLORA_EXPORT(name, fn) static ::qlora::Registrar QLORA_CONCAT(qlora_registrar_, __LINE__)(name, fn)
