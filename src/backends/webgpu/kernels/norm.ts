// WebGPU kernels: norm (being written).
export {};
