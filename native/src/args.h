// Argument unpacking for the N-API entry points: every typed array is checked for kind and length
// before a kernel touches it, so a wrong call from TypeScript is a JS exception, never a bad read.
#pragma once
#include <napi.h>
#include <cstddef>
#include <cstdint>
#include <string>

namespace qlora {

template <typename T>
struct Span {
  T* data;
  size_t length;
};

[[noreturn]] inline void fail(Napi::Env env, const std::string& msg) {
  throw Napi::Error::New(env, "qlora_native: " + msg);
}

inline void require(bool ok, Napi::Env env, const std::string& msg) {
  if (!ok) fail(env, msg);
}

template <typename T, napi_typedarray_type K>
inline Span<T> typedArg(const Napi::Value& v, const char* what, size_t minLength) {
  Napi::Env env = v.Env();
  if (!v.IsTypedArray()) fail(env, std::string(what) + ": expected a typed array");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  if (ta.TypedArrayType() != K) fail(env, std::string(what) + ": wrong typed array kind");
  size_t n = ta.ElementLength();
  if (n < minLength) {
    fail(env, std::string(what) + ": has " + std::to_string(n) + " elements, needs " + std::to_string(minLength));
  }
  uint8_t* base = static_cast<uint8_t*>(ta.ArrayBuffer().Data());
  if (base == nullptr && n > 0) fail(env, std::string(what) + ": detached buffer");
  return Span<T>{reinterpret_cast<T*>(base + ta.ByteOffset()), n};
}

inline Span<float> f32Arg(const Napi::CallbackInfo& info, size_t i, const char* what, size_t minLength = 0) {
  return typedArg<float, napi_float32_array>(info[i], what, minLength);
}
inline Span<int32_t> i32Arg(const Napi::CallbackInfo& info, size_t i, const char* what, size_t minLength = 0) {
  return typedArg<int32_t, napi_int32_array>(info[i], what, minLength);
}
inline Span<uint8_t> u8Arg(const Napi::CallbackInfo& info, size_t i, const char* what, size_t minLength = 0) {
  return typedArg<uint8_t, napi_uint8_array>(info[i], what, minLength);
}
inline bool isNullish(const Napi::CallbackInfo& info, size_t i) {
  return i >= info.Length() || info[i].IsNull() || info[i].IsUndefined();
}
inline double numArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (i >= info.Length() || !info[i].IsNumber()) fail(info.Env(), std::string(what) + ": expected a number");
  return info[i].As<Napi::Number>().DoubleValue();
}
inline int64_t intArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  double d = numArg(info, i, what);
  if (d < 0 || d != static_cast<double>(static_cast<int64_t>(d))) {
    fail(info.Env(), std::string(what) + ": expected a non-negative integer");
  }
  return static_cast<int64_t>(d);
}
inline bool boolArg(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() && info[i].ToBoolean().Value();
}

}  // namespace qlora
