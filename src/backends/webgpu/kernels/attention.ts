// WebGPU kernels: attention (being written).
export {};
