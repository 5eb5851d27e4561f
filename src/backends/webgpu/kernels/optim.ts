// WebGPU kernels: optim (being written).
export {};
