// WebGPU kernels: loss (being written).
export {};
