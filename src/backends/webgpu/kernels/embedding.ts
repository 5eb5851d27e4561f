// WebGPU kernels: embedding (being written).
export {};
