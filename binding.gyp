{
  # The native CPU backend. Built by `npm install` (node-gyp) with the machine's compiler.
  # QLORA_MARCH picks the instruction set at build time (default: native = whatever this CPU has);
  # the kernels fall back AVX-512 -> AVX2+FMA -> scalar by compile-time feature macros. There are no
  # NEON kernels: an ARM build runs the scalar paths (vectorized as far as the compiler does it).
  # QLORA_SANITIZE (e.g. address,undefined) builds an instrumented addon for CI (scripts/native-variants.sh);
  # such a build needs the sanitizer runtime preloaded into node (LD_PRELOAD), so it is never the default.
  "variables": {
    "qlora_march%": "<!(node -p \"process.env.QLORA_MARCH || 'native'\")",
    "qlora_sanitize%": "<!(node -p \"process.env.QLORA_SANITIZE || ''\")"
  },
  "targets": [
    {
      "target_name": "qlora_native",
      "sources": [
        "<!@(node -p \"require('fs').readdirSync('native/src').filter(f => f.endsWith('.cc')).sort().map(f => 'native/src/' + f).join(' ')\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/src"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions", "-O2", "-O3"],
      "cflags_cc!": ["-fno-exceptions", "-O2"],
      "cflags_cc": ["-std=c++17", "-O3", "-march=<(qlora_march)", "-fno-math-errno", "-fexceptions", "-pthread", "-Wall", "-Wno-unused-parameter"],
      "ldflags": ["-pthread"],
      "conditions": [
        ["qlora_sanitize != ''", {
          "cflags_cc": ["-fsanitize=<(qlora_sanitize)", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g", "-O1"],
          "ldflags": ["-fsanitize=<(qlora_sanitize)"]
        }]
      ],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "OTHER_CPLUSPLUSFLAGS": ["-std=c++17", "-O3", "-fno-math-errno"]
      }
    }
  ]
}
