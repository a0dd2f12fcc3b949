#!/bin/sh
# The CMake flags llama.cpp (llama-cpp-python) is built with here: the instruction sets this CPU has, named one by
# one, and never GGML_NATIVE: -march=native on a Xeon with AMX builds ggml's AMX matrix path, which crashes
# (SIGSEGV in ggml_backend_amx_mul_mat) on the first Q8_0 model inside these VMs; and a fixed AVX-512 set dies
# with SIGILL on the AMD EPYC machines that have no AVX-512. (The Makefile keys the built wheel by these flags.)
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
has() { case " $flags " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
on() { if has "$2"; then printf ' -D%s=ON' "$1"; else printf ' -D%s=OFF' "$1"; fi; }
printf '%s' '-DGGML_NATIVE=OFF'
on GGML_SSE42 sse4_2
on GGML_F16C f16c
on GGML_FMA fma
on GGML_BMI2 bmi2
on GGML_AVX avx
on GGML_AVX2 avx2
# ggml's GGML_AVX512 compiles with -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw: all five or none
if has avx512f && has avx512cd && has avx512vl && has avx512dq && has avx512bw; then
  printf ' -DGGML_AVX512=ON'
  on GGML_AVX512_VNNI avx512_vnni
  on GGML_AVX512_BF16 avx512_bf16
else
  printf ' -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF'
fi
printf ' -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF\n'
