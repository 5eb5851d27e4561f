// WebGPU kernels: matmul (being written).
export {};
